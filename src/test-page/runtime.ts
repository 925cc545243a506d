/**
 * Browser test page only: a thin @grafana/runtime for the page that tests/plugins.browser.test.ts bundles.
 * getBackendSrv().fetch performs real fetches (against tests/support/grafana-proxy.ts, the stand-in for
 * Grafana's datasource proxy) and parses bodies as Grafana does; getTemplateSrv knows the page's
 * variables; getDataSourceSrv knows the page's tcplat datasource.
 */
import type { DataSourceInstanceSettings, TypedVariableModel } from '@grafana/data';
import type { BackendSrvRequest, FetchResponse } from '@grafana/runtime';
import { Observable } from 'rxjs';

interface PageState {
  variables: Record<string, string | string[]>;
  datasource: DataSourceInstanceSettings;
}
export const pageState: PageState = { variables: {}, datasource: {} as DataSourceInstanceSettings };

function body(req: BackendSrvRequest): BodyInit | undefined {
  if (req.data === undefined) return undefined;
  if (typeof req.data === 'string') return req.data;
  return JSON.stringify(req.data);
}

export function getBackendSrv() {
  return {
    fetch<T>(req: BackendSrvRequest): Observable<FetchResponse<T>> {
      return new Observable((sub) => {
        const ctl = new AbortController();
        (async () => {
          let res: Response;
          try {
            res = await fetch(req.url, { method: req.method ?? 'GET', headers: req.headers, body: body(req), signal: ctl.signal });
          } catch (e) {
            sub.error({ status: 0, statusText: String(e), data: undefined });
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
    },
  };
}

export function getTemplateSrv() {
  return {
    getVariables: () => Object.keys(pageState.variables).map((name) => ({ name }) as TypedVariableModel),
    replace(target: string, _scoped?: unknown, format?: ((v: string | string[]) => string) | string): string {
      return (target ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => {
        const name = a ?? b;
        if (!(name in pageState.variables)) return m;
        const v = pageState.variables[name];
        return typeof format === 'function' ? format(v) : Array.isArray(v) ? v.join(',') : v;
      });
    },
  };
}

export function getDataSourceSrv() {
  return {
    getInstanceSettings: () => pageState.datasource,
    getList: () => [pageState.datasource],
  };
}
