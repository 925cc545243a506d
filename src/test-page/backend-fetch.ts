/**
 * Browser test pages only: getBackendSrv().fetch as Grafana's does it, shared by the thin @grafana/runtime of
 * page.tsx (runtime.ts) and by host.tsx, which hands it to the real @grafana/runtime of each module set.
 * Real HTTP (to tests/support/grafana-proxy.ts, the stand-in for Grafana's datasource proxy); unsubscribing
 * aborts the request, as Grafana's rxjs fromFetch does; bodies parsed as Grafana's parseResponseBody does.
 */
import type { BackendSrvRequest, FetchResponse } from '@grafana/runtime';
import { Observable } from 'rxjs';

function body(req: BackendSrvRequest): BodyInit | undefined {
  if (req.data === undefined) return undefined;
  if (typeof req.data === 'string') return req.data;
  return JSON.stringify(req.data);
}

export function backendFetch<T>(req: BackendSrvRequest): Observable<FetchResponse<T>> {
  return new Observable((sub) => {
    const ctl = new AbortController();
    (async () => {
      let res: Response;
      try {
        res = await fetch(req.url, { method: req.method ?? 'GET', headers: req.headers, body: body(req), signal: ctl.signal });
      } catch (e) {
        if (!ctl.signal.aborted) sub.error({ status: 0, statusText: String(e), data: undefined });
        return;
      }
      // As Grafana's parseResponseBody (grafana/grafana public/app/core/utils/fetch.ts): the asked type,
      // else the text parsed as JSON when it is JSON (Grafana's 400 for a 401 is plain text).
      let data: unknown;
      if (req.responseType === 'blob') data = await res.blob();
      else if (req.responseType === 'arraybuffer') data = await res.arrayBuffer();
      else if (req.responseType === 'text') data = await res.text();
      else if (req.responseType === 'json') data = res.headers.get('Content-Length') === '0' ? {} : await res.json();
      else {
        const text = await res.text();
        try {
          data = JSON.parse(text);
        } catch {
          data = text;
        }
      }
      if (!res.ok) {
        sub.error({ status: res.status, statusText: res.statusText, data });
        return;
      }
      sub.next({ data: data as T, status: res.status, statusText: res.statusText, ok: true, headers: res.headers, redirected: false, type: res.type, url: res.url, config: req });
      sub.complete();
    })();
    return () => ctl.abort();
  });
}
