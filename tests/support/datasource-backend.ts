/**
 * The tcplat datasource against the real test InfluxDB 1.x / 2.x from the plugins' jsdom tests: a stand-in
 * for Grafana's backend_srv that does what the datasource's routes in plugin.json tell Grafana's proxy to
 * do (`influx/query` -> `<influxUrl>/query`, `influx/api/v2/query` -> `<influxUrl>/api/v2/query` with
 * `Authorization: Token`), as grafana/grafana's pkg/api/pluginproxy/ds_proxy.go (validateRequest, director)
 * and ds_auth_provider.go (ApplyRoute: the route's url plus the rest of the path, its headers set) do;
 * tests/support/grafana-proxy.ts follows that code in full and tests/grafana-proxy.test.ts tests the
 * routes through it. Use from a test file:
 *   jest.mock('@grafana/runtime', () => require('../../tests/support/datasource-backend').grafanaRuntime());
 * jsdom has no fetch: HTTP goes through node's own client.
 */
import http from 'node:http';
import crypto from 'node:crypto';
import { encodePoints, type Point } from '@tcplat/core';
import { Observable } from 'rxjs';

export const INFLUX1 = process.env.TCPLAT_TEST_INFLUX_URL ?? '';
export const INFLUX2 = process.env.TCPLAT_TEST_INFLUX2_URL ?? '';
export const TOKEN2 = process.env.TCPLAT_TEST_INFLUX2_TOKEN ?? '';

export function call(method: string, url: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { ...headers, ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export const PROXY = '/api/datasources/proxy/uid/tcplat/';

/** Where the stand-in proxy sends requests, the query texts it saw, and the template variables' values. */
export const backend = {
  upstream: { influxUrl: '', token: '' },
  sent: [] as string[],
  vars: {} as Record<string, string | string[]>,
};

/** The `@grafana/runtime` module the datasource sees: backend_srv through the proxy routes, templateSrv over backend.vars. */
export function grafanaRuntime() {
  return {
    getTemplateSrv: () => ({
      getVariables: () => Object.keys(backend.vars).map((name) => ({ name })),
      replace: (target: string, _scoped: unknown, format?: (v: string | string[]) => string) =>
        target.replace(/\$(\w+)/g, (m, name: string) => (name in backend.vars ? (format ? format(backend.vars[name]) : String(backend.vars[name])) : m)),
    }),
    getBackendSrv: () => ({
      fetch: (req: { url: string; method: string; data?: unknown; headers?: Record<string, string>; responseType?: string }) =>
        new Observable((sub) => {
          const { influxUrl, token } = backend.upstream;
          const path = req.url.slice(PROXY.length);
          const flux = path.startsWith('influx/api/v2/query');
          const url = `${influxUrl}/${path.slice('influx/'.length)}`;
          const body = req.data === undefined ? undefined : JSON.stringify(req.data);
          backend.sent.push(flux ? String((req.data as { query: string }).query) : (new URL(url).searchParams.get('q') ?? ''));
          call(req.method, url, body, { ...(req.headers ?? {}), ...(flux ? { Authorization: `Token ${token}` } : {}) }).then(
            ({ status, text }) => {
              let data: unknown = text;
              if (req.responseType !== 'text' || status >= 300) {
                try {
                  data = JSON.parse(text);
                } catch {
                  /* keep the text */
                }
              }
              if (status >= 300) sub.error({ status, data, statusText: '' });
              else {
                sub.next({ data, status, ok: true, headers: new Headers() });
                sub.complete();
              }
            },
            (e) => sub.error({ status: 502, data: String(e), statusText: 'Bad Gateway' }),
          );
        }),
    }),
  };
}

export async function write1(db: string, rp: string | null, pts: Point[]): Promise<void> {
  for (let i = 0; i < pts.length; i += 5000) {
    const r = await call('POST', `${INFLUX1}/write?db=${db}&precision=ns${rp ? `&rp=${rp}` : ''}`, encodePoints(pts.slice(i, i + 5000)));
    if (r.status !== 204) throw new Error(`write: ${r.status} ${r.text}`);
  }
}

export async function write2(bucket: string, pts: Point[]): Promise<void> {
  for (let i = 0; i < pts.length; i += 5000) {
    const r = await call('POST', `${INFLUX2}/api/v2/write?org=tcplat&bucket=${bucket}&precision=ns`, encodePoints(pts.slice(i, i + 5000)), { Authorization: `Token ${TOKEN2}` });
    if (r.status !== 204) throw new Error(`write: ${r.status} ${r.text}`);
  }
}

export async function database1(prefix: string): Promise<string> {
  const db = `${prefix}_${crypto.randomBytes(4).toString('hex')}`;
  const r = await call('POST', `${INFLUX1}/query`, `q=${encodeURIComponent(`CREATE DATABASE "${db}"`)}`, { 'Content-Type': 'application/x-www-form-urlencoded' });
  if (r.status !== 200) throw new Error(`database ${db}: ${r.status} ${r.text}`);
  return db;
}

export async function bucket2(name: string): Promise<void> {
  const h = { Authorization: `Token ${TOKEN2}`, 'Content-Type': 'application/json' };
  const orgs = JSON.parse((await call('GET', `${INFLUX2}/api/v2/orgs?org=tcplat`, undefined, h)).text) as { orgs: { id: string }[] };
  const r = await call('POST', `${INFLUX2}/api/v2/buckets`, JSON.stringify({ orgID: orgs.orgs[0].id, name, retentionRules: [] }), h);
  if (r.status !== 201) throw new Error(`bucket ${name}: ${r.status} ${r.text}`);
}
