/**
 * Requests through Grafana's datasource proxy (getBackendSrv().fetch): the proxy injects the secrets of
 * plugin.json's routes, so they never reach the browser. Failures become HttpFailure with a message that
 * says what to do.
 */
import { getBackendSrv, type BackendSrvRequest, type FetchResponse } from '@grafana/runtime';
import { lastValueFrom } from 'rxjs';

export class HttpFailure extends Error {
  constructor(
    message: string,
    readonly status: number,
    /**
     * unreachable: no answer (or the proxy's 502/504); unauthorized: the service refused the datasource's
     * credentials (Grafana's 400 "Authentication to data source failed", or a 401/403 passed through);
     * forbidden: Grafana refused the user (403 "plugin proxy route access denied": a route's reqRole);
     * http: any other status.
     */
    readonly kind: 'unreachable' | 'unauthorized' | 'forbidden' | 'http',
    /** The server's own message, when it sent one. */
    readonly serverMessage?: string,
    readonly parameter?: string,
  ) {
    super(message);
    this.name = 'HttpFailure';
  }
}

/** The body of Grafana's 400 for an upstream 401 (ds_proxy.go). */
export const GRAFANA_AUTH_FAILED = 'Authentication to data source failed';
/** The message of Grafana's 403 when a route's reqRole is not met (ds_proxy.go validateRequest). */
export const GRAFANA_ROUTE_DENIED = 'plugin proxy route access denied';

interface FetchErrorLike {
  status?: number;
  statusText?: string;
  data?: unknown;
}

function blobText(b: Blob): Promise<string> {
  if (typeof b.text === 'function') return b.text();
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result ?? ''));
    r.onerror = () => reject(r.error);
    r.readAsText(b);
  });
}

async function bodyOf(data: unknown): Promise<unknown> {
  if (typeof Blob !== 'undefined' && data instanceof Blob) {
    const text = await blobText(data);
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  if (data instanceof ArrayBuffer) {
    const text = new TextDecoder().decode(data);
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  if (typeof data === 'string') {
    try {
      return JSON.parse(data);
    } catch {
      return data;
    }
  }
  return data;
}

/** The message a server put in its error body: renderer `{error}`, InfluxDB 1.x `{error}`, 2.x `{message}`. */
function messageOf(body: unknown): { message?: string; parameter?: string } {
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    const m = [b.error, b.message].find((x) => typeof x === 'string' && x !== '') as string | undefined;
    return { message: m, parameter: typeof b.parameter === 'string' ? b.parameter : undefined };
  }
  if (typeof body === 'string' && body.trim() !== '' && !/^\s*</.test(body)) return { message: body.trim().slice(0, 500) };
  return {};
}

/** Turn a fetch error into an HttpFailure; `what` names the service ("InfluxDB", "the renderer"). */
export async function toFailure(e: unknown, what: string, where: string): Promise<HttpFailure> {
  if (e instanceof HttpFailure) return e;
  const err = (e ?? {}) as FetchErrorLike;
  const status = typeof err.status === 'number' ? err.status : 0;
  const { message, parameter } = messageOf(await bodyOf(err.data));
  if (status === 0 || status === 502 || status === 504) {
    return new HttpFailure(
      `Grafana cannot reach ${what} at ${where || '(no URL set)'}${status ? ` (HTTP ${status})` : ''}${message ? `: ${message}` : ''}. ` +
        `Check the URL in the datasource settings and that ${what} is running and reachable from the Grafana server (not only from your browser).`,
      status,
      'unreachable',
      message,
    );
  }
  // Grafana's datasource proxy turns an upstream 401 into 400 with this plain-text body, and never lets
  // the 401 through (grafana/grafana pkg/api/pluginproxy/ds_proxy.go, HandleRequest's modifyResponse).
  if (status === 400 && message === GRAFANA_AUTH_FAILED) {
    return new HttpFailure(
      `${what} refused the datasource's credentials (Grafana: ${GRAFANA_AUTH_FAILED}). ` +
        (what === 'InfluxDB'
          ? 'Check the token (InfluxDB 2.x) or the user and password (1.x) in the datasource settings, and that they are still valid.'
          : "Check the renderer token in the datasource settings: it must be one of the renderer's --auth-token values."),
      status,
      'unauthorized',
      message,
    );
  }
  // A route's reqRole the user lacks (ds_proxy.go validateRequest/hasAccessToRoute, answered by JsonApiErr(403)).
  if (status === 403 && message === GRAFANA_ROUTE_DENIED) {
    return new HttpFailure(
      `Grafana refused this request to ${what} (${GRAFANA_ROUTE_DENIED}): it needs the Editor role in this organization. Ask an Editor or Admin.`,
      status,
      'forbidden',
      message,
    );
  }
  if (status === 401 || status === 403) {
    return new HttpFailure(
      `${what} refused the credentials (HTTP ${status}${message ? `: ${message}` : ''}). Check the token or user and password in the datasource settings.`,
      status,
      'unauthorized',
      message,
    );
  }
  return new HttpFailure(message ? `${what}: ${message}` : `${what} answered HTTP ${status} ${err.statusText ?? ''}`.trim(), status, 'http', message, parameter);
}

/** The request was cancelled (the query's subscriber went away): nothing to show. */
export class Cancelled extends Error {
  constructor() {
    super('cancelled');
    this.name = 'Cancelled';
  }
}

/**
 * One request through the proxy, without Grafana's own error pop-ups (we show errors in place). `signal`
 * cancels it: unsubscribing from getBackendSrv().fetch aborts the HTTP request (Grafana's backend_srv
 * builds it on rxjs fromFetch, which aborts on unsubscribe).
 */
export async function proxyFetch<T>(req: BackendSrvRequest, what: string, where: string, signal?: AbortSignal): Promise<FetchResponse<T>> {
  const request = getBackendSrv().fetch<T>({ showErrorAlert: false, showSuccessAlert: false, ...req });
  try {
    if (!signal) return await lastValueFrom(request);
    if (signal.aborted) throw new Cancelled();
    return await new Promise<FetchResponse<T>>((resolve, reject) => {
      let last: FetchResponse<T> | undefined;
      const onAbort = () => {
        sub.unsubscribe();
        reject(new Cancelled());
      };
      const sub = request.subscribe({
        next: (r) => (last = r),
        error: (e) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
        complete: () => {
          signal.removeEventListener('abort', onAbort);
          if (last) resolve(last);
          else reject(new Error(`${what}: no response`));
        },
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });
  } catch (e) {
    if (e instanceof Cancelled) throw e;
    throw await toFailure(e, what, where);
  }
}
