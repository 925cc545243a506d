/**
 * Who can do what through the tcplat datasource's routes (src/datasource/plugin.json), behind the stand-in
 * for Grafana's datasource proxy (tests/support/grafana-proxy.ts, which follows Grafana's own code and
 * renders the route templates with real Go text/template). Upstream are real services: an InfluxDB 1.x
 * with authentication on (an admin, and the read-only user Grafana gets), InfluxDB 2.x with a read-only
 * token when the test 2.x is running, and the real renderer with a bearer token.
 *
 * The table walks write, delete, authorizations, buckets, links, metrics, query and render as a Viewer and
 * as an Editor, and asserts what a user would see: the status and body, and that the data is still there.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { queryInfluxQL, type InfluxV1Target } from '@tcplat/core';
import { seedPoints, testServer, writePoints, type TestServer } from './renderer-support';
import { freshBucket, missingInflux2, TEST_INFLUX2_TOKEN, TEST_INFLUX2_URL } from './support/influx';
import { missingGo, pluginRoutes, renderTemplates, startGrafanaProxy, type GrafanaProxy, type OrgRole, type StandInDatasource } from './support/grafana-proxy';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const ROUTES = pluginRoutes();
const RENDERER_TOKEN = 'grafana-proxy-test-renderer-token-0123';
const ADMIN = { user: 'admin', password: 'admin-pw-' + crypto.randomBytes(6).toString('hex') };
const READER = { user: 'grafana', password: 'reader-pw-' + crypto.randomBytes(6).toString('hex') };
const AUTH_FAILED = 'Authentication to data source failed';

function missingInfluxd(): string | null {
  try {
    execFileSync('sh', ['-c', 'command -v influxd'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'no influxd (InfluxDB 1.x, Debian package influxdb; scripts/setup installs it)';
  }
}

describe('plugin.json routes', () => {
  test('one route per endpoint, each with its method and full upstream URL; Editor for links and metrics', () => {
    expect(ROUTES.map((r) => `${r.method} ${r.path} ${r.reqRole ?? '-'}`)).toEqual([
      'POST influx/api/v2/query -',
      'GET influx/query -',
      'GET renderer/render/heatmap.png -',
      'GET renderer/render/percentiles.png -',
      'GET renderer/render/lifespan.png -',
      'POST renderer/links Editor',
      'GET renderer/metrics Editor',
    ]);
    for (const r of ROUTES) {
      const [service, ...rest] = r.path.split('/');
      const base = service === 'influx' ? '{{ .JsonData.influxUrl }}' : '{{ .JsonData.rendererUrl }}';
      // The full upstream URL: the route adds nothing to the path but what the browser asked for.
      expect(r.url).toBe(`${base}/${rest.join('/')}`);
    }
  });

  test('each route carries only the credential its dialect needs, and every optional key has orEmpty', () => {
    const creds = (r: (typeof ROUTES)[number]) => [...(r.headers ?? []).map((h) => `header ${h.name}: ${h.content}`), ...(r.urlParams ?? []).map((p) => `param ${p.name}=${p.content}`)];
    const byPath = Object.fromEntries(ROUTES.map((r) => [r.path, creds(r)]));
    expect(byPath['influx/api/v2/query']).toEqual(['header Authorization: Token {{ .SecureJsonData.influxToken | orEmpty }}']);
    expect(byPath['influx/query']).toEqual(['param u={{ .JsonData.influxUser | orEmpty }}', 'param p={{ .SecureJsonData.influxPassword | orEmpty }}']);
    for (const p of ['renderer/render/heatmap.png', 'renderer/render/percentiles.png', 'renderer/render/lifespan.png', 'renderer/links', 'renderer/metrics']) {
      expect(byPath[p]).toEqual(['header Authorization: Bearer {{ .SecureJsonData.rendererToken | orEmpty }}']);
    }
  });
});

describeWith(missingGo(), 'route templates rendered by Go text/template (as Grafana does)', () => {
  jest.setTimeout(300_000);
  test('an unset key prints "<no value>" without orEmpty (the old routes), and nothing with it (ours)', async () => {
    const old = ['Token {{ .SecureJsonData.influxToken }}', '{{ .JsonData.influxUser }}', '{{ .SecureJsonData.influxPassword }}'];
    expect(await renderTemplates(old, { influxUrl: 'http://influxdb:8086' }, {})).toEqual(['Token <no value>', '<no value>', '<no value>']);
    const ours = ROUTES.flatMap((r) => [...(r.headers ?? []).map((h) => h.content), ...(r.urlParams ?? []).map((p) => p.content)]);
    const rendered = await renderTemplates(ours, { influxUrl: 'http://influxdb:8086' }, {});
    for (const s of rendered) expect(s).not.toContain('<no value>');
    expect(rendered).toContain('Token ');
    expect(await renderTemplates(ours.slice(0, 1), {}, { influxToken: 'abc' })).toEqual(['Token abc']);
  });
});

describeWith(missingGo() ?? missingInfluxd(), 'the datasource routes behind the Grafana proxy stand-in, as Viewer and as Editor', () => {
  jest.setTimeout(300_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-gproxy-'));
  let influxUrl = '';
  let db = '';
  let renderer: TestServer | undefined;
  let proxy: GrafanaProxy | undefined;
  let v2: { bucket: string; readToken: string } | undefined;
  const now = Date.now();

  const admin = (): InfluxV1Target => ({ version: 1, url: influxUrl, db, ...ADMIN });
  const showDatabases = async () => (await queryInfluxQL({ ...admin(), db: '' }, 'SHOW DATABASES'))[0].flatMap((s) => s.values.map((v) => String(v[0])));
  const pointCount = async () => {
    const [s] = await queryInfluxQL(admin(), 'SELECT count("count") FROM "tcp_connect_hist"');
    return Number(s[0]?.values[0]?.[1] ?? 0);
  };

  beforeAll(async () => {
    influxUrl = execFileSync(path.join(ROOT, 'scripts/influxdb1'), ['start', path.join(dir, 'influx')], { env: { ...process.env, TCPLAT_INFLUXDB1_AUTH: '1' }, encoding: 'utf8' }).trim();
    db = `gproxy_${crypto.randomBytes(4).toString('hex')}`;
    const q = (statement: string, t: Partial<InfluxV1Target> = admin()) => queryInfluxQL({ ...admin(), db: '', ...t }, statement, { method: 'POST' });
    // With auth on and no user yet, 1.x accepts exactly this without credentials.
    await q(`CREATE USER "${ADMIN.user}" WITH PASSWORD '${ADMIN.password}' WITH ALL PRIVILEGES`, { user: undefined, password: undefined });
    await q(`CREATE DATABASE "${db}"`);
    await q(`CREATE USER "${READER.user}" WITH PASSWORD '${READER.password}'`);
    await q(`GRANT READ ON "${db}" TO "${READER.user}"`);
    await writePoints(admin(), seedPoints([{ service: 'api', dst: 'db:5432', perWindow: 5, latency: (i) => 0.5 + i }], now - 600_000, now));
    // The renderer reads with the read-only user too.
    renderer = await testServer({ url: influxUrl, db }, ['--auth-token', RENDERER_TOKEN, '--influx-user', READER.user, '--influx-password', READER.password]);
    if (!missingInflux2()) {
      const b = await freshBucket('gproxy');
      v2 = { bucket: b.bucket, readToken: await readOnlyToken(b.bucket) };
    }
    const datasources: StandInDatasource[] = [
      {
        uid: 'tcplat',
        jsonData: { influxUrl, dialect: 'influxql', database: db, influxUser: READER.user, rendererUrl: renderer.base },
        secureJsonData: { influxPassword: READER.password, rendererToken: RENDERER_TOKEN },
      },
      { uid: 'wrong-password', jsonData: { influxUrl, dialect: 'influxql', database: db, influxUser: READER.user }, secureJsonData: { influxPassword: 'nope' } },
      { uid: 'no-credentials', jsonData: { influxUrl, dialect: 'influxql', database: db, rendererUrl: renderer.base }, secureJsonData: {} },
      { uid: 'wrong-renderer-token', jsonData: { influxUrl, rendererUrl: renderer.base }, secureJsonData: { rendererToken: 'not-the-renderer-token-000' } },
    ];
    if (v2) {
      datasources.push({
        uid: 'tcplat-2x',
        jsonData: { influxUrl: TEST_INFLUX2_URL, dialect: 'flux', org: 'tcplat', bucket: v2.bucket, rendererUrl: renderer.base },
        secureJsonData: { influxToken: v2.readToken, rendererToken: RENDERER_TOKEN },
      });
    }
    proxy = await startGrafanaProxy({ routes: ROUTES, datasources });
  }, 300_000);

  afterAll(async () => {
    await proxy?.close();
    await renderer?.close();
    try {
      execFileSync(path.join(ROOT, 'scripts/influxdb1'), ['stop', path.join(dir, 'influx')]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  async function call(role: OrgRole, method: string, uid: string, p: string, body?: string, type = 'text/plain') {
    const res = await fetch(`${proxy!.base}/api/datasources/proxy/uid/${uid}/${p}`, {
      method,
      headers: { 'x-stand-in-role': role, ...(body !== undefined ? { 'content-type': type } : {}) },
      body,
    });
    const buf = Buffer.from(await res.arrayBuffer());
    return { status: res.status, type: res.headers.get('content-type') ?? '', text: buf.toString('utf8'), buf };
  }
  const sel = (q: string) => `influx/query?${new URLSearchParams({ db, q, epoch: 'ms' })}`;
  const render = `renderer/render/heatmap.png?${new URLSearchParams({ service: 'api', from: String(now - 600_000), to: String(now), width: '400', height: '200', theme: 'dark' })}`;
  const link = JSON.stringify({ path: '/render/heatmap.png', params: { service: ['api'], from: 'now-1h', to: 'now', width: '400', height: '200', theme: 'dark' } });
  const NO_ROUTE = { status: 502, text: '' };
  const DENIED = { status: 403, text: JSON.stringify({ message: 'plugin proxy route access denied' }) };

  // What each role sees; `check` asserts the effect on the real service beyond the status.
  const rows: { what: string; method: string; path: () => string; body?: () => string; type?: string; viewer: { status: number; text?: string | RegExp }; editor: { status: number; text?: string | RegExp } }[] = [
    { what: 'query (InfluxQL GET, read-only user)', method: 'GET', path: () => sel('SHOW TAG VALUES FROM "tcp_connect_hist" WITH KEY = "service"'), viewer: { status: 200, text: /"values":\[\["service","api"\]\]/ }, editor: { status: 200, text: /"api"/ } },
    { what: 'query by POST (1.x: the verb for CREATE/DROP)', method: 'POST', path: () => `influx/query?db=${db}`, body: () => `q=${encodeURIComponent(`DROP DATABASE "${db}"`)}`, type: 'application/x-www-form-urlencoded', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'write (1.x /write)', method: 'POST', path: () => `influx/write?db=${db}`, body: () => `tcp_connect_hist,service=evil count=1i ${now}000000`, viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'drop through the GET route: refused by InfluxDB (the user only reads)', method: 'GET', path: () => sel(`DROP DATABASE "${db}"`), viewer: { status: 403, text: /not authorized to execute statement 'DROP DATABASE/ }, editor: { status: 403, text: /requires admin privilege/ } },
    { what: 'escape the query route with ../ (cleaned before matching)', method: 'GET', path: () => `influx/query/../write?db=${db}`, viewer: NO_ROUTE, editor: NO_ROUTE },
    // (fetch, like browsers, already resolves a bare %2e%2e segment; an escaped slash stays in the path.)
    { what: 'escape the query route with %2e%2e%2f (Grafana re-escapes it: a path InfluxDB does not have)', method: 'GET', path: () => `influx/query/%2e%2e%2fwrite?db=${db}`, viewer: { status: 404 }, editor: { status: 404 } },
    { what: 'write (2.x /api/v2/write)', method: 'POST', path: () => 'influx/api/v2/write?org=tcplat&bucket=tcplat', body: () => 'm v=1', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'delete (2.x /api/v2/delete)', method: 'POST', path: () => 'influx/api/v2/delete?org=tcplat&bucket=tcplat', body: () => '{"start":"1970-01-01T00:00:00Z","stop":"2100-01-01T00:00:00Z"}', type: 'application/json', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'create a token (2.x /api/v2/authorizations)', method: 'POST', path: () => 'influx/api/v2/authorizations', body: () => '{}', type: 'application/json', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'list tokens (2.x /api/v2/authorizations)', method: 'GET', path: () => 'influx/api/v2/authorizations', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'buckets (2.x /api/v2/buckets)', method: 'GET', path: () => 'influx/api/v2/buckets', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'drop a bucket (2.x DELETE /api/v2/buckets/ID)', method: 'DELETE', path: () => 'influx/api/v2/buckets/0123456789abcdef', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'Flux by GET (the query route is POST only)', method: 'GET', path: () => 'influx/api/v2/query?org=tcplat', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'render a heatmap', method: 'GET', path: () => render, viewer: { status: 200 }, editor: { status: 200 } },
    { what: 'render by POST', method: 'POST', path: () => render, body: () => '', viewer: NO_ROUTE, editor: NO_ROUTE },
    { what: 'mint a signed link (POST /links)', method: 'POST', path: () => 'renderer/links', body: () => link, type: 'application/json', viewer: DENIED, editor: { status: 201, text: /"url":"http:\/\/127\.0\.0\.1:\d+\/render\/heatmap\.png\?.*sig=/ } },
    { what: "the renderer's metrics", method: 'GET', path: () => 'renderer/metrics', viewer: DENIED, editor: { status: 200, text: /tcplat_renderer_/ } },
    { what: "the renderer's other paths (no route)", method: 'GET', path: () => 'renderer/healthz', viewer: NO_ROUTE, editor: NO_ROUTE },
  ];

  test.each(rows.map((r) => [r.what, r] as const))('%s', async (_what, row) => {
    const before = { dbs: await showDatabases(), points: await pointCount() };
    for (const role of ['Viewer', 'Editor'] as const) {
      const want = role === 'Viewer' ? row.viewer : row.editor;
      const got = await call(role, row.method, 'tcplat', row.path(), row.body?.(), row.type);
      expect([role, got.status]).toEqual([role, want.status]);
      if (typeof want.text === 'string') expect(got.text).toBe(want.text);
      else if (want.text) expect(got.text).toMatch(want.text);
      if (row.what.startsWith('render a')) expect([got.type, got.buf.subarray(1, 4).toString()]).toEqual(['image/png', 'PNG']);
    }
    // Nothing was written, deleted or dropped, whoever asked.
    expect(await showDatabases()).toEqual(before.dbs);
    expect(await pointCount()).toBe(before.points);
  });

  test('a request that matches no route reaches no service: nothing was sent upstream for it', async () => {
    const n = proxy!.upstream.length;
    expect((await call('Editor', 'POST', 'tcplat', `influx/write?db=${db}`, 'x v=1')).status).toBe(502);
    expect(proxy!.upstream.slice(n)).toEqual([expect.objectContaining({ route: null, url: `/influx/write?db=${db}` })]);
  });

  test('the InfluxQL route sends u/p and no token; the renderer routes send only the bearer token', async () => {
    const n = proxy!.upstream.length;
    await call('Viewer', 'GET', 'tcplat', sel('SHOW MEASUREMENTS'));
    await call('Viewer', 'GET', 'tcplat', render);
    const [q, r] = proxy!.upstream.slice(n);
    const qu = new URL(q.url);
    expect([qu.pathname, qu.searchParams.get('u'), qu.searchParams.get('p')]).toEqual(['/query', READER.user, READER.password]);
    expect(q.headers.authorization).toBeUndefined();
    const ru = new URL(r.url);
    expect([ru.pathname, ru.searchParams.get('u'), ru.searchParams.get('p'), r.headers.authorization]).toEqual(['/render/heatmap.png', null, null, `Bearer ${RENDERER_TOKEN}`]);
  });

  test("wrong password: InfluxDB's 401 reaches the browser as Grafana's 400 \"Authentication to data source failed\"", async () => {
    const got = await call('Viewer', 'GET', 'wrong-password', sel('SHOW MEASUREMENTS'));
    expect([got.status, got.text, got.type]).toEqual([400, AUTH_FAILED, 'text/plain; charset=utf-8']);
  });

  test('no user or password set: u and p go out empty (never "<no value>"), and InfluxDB refuses', async () => {
    const n = proxy!.upstream.length;
    const got = await call('Viewer', 'GET', 'no-credentials', sel('SHOW MEASUREMENTS'));
    expect([got.status, got.text]).toEqual([400, AUTH_FAILED]);
    const sent = proxy!.upstream[n].url;
    expect(sent).not.toContain('no+value');
    expect(sent).not.toContain('no%20value');
    expect(sent).toMatch(/&p=&.*&u=$/);
  });

  test("wrong renderer token: the renderer's 401 becomes the same 400, and no token reaches the browser", async () => {
    const got = await call('Viewer', 'GET', 'wrong-renderer-token', render);
    expect([got.status, got.text]).toEqual([400, AUTH_FAILED]);
    expect(got.text).not.toContain('not-the-renderer-token');
  });

  const v2test = missingInflux2() ? test.skip : test;
  v2test('InfluxDB 2.x: Flux through the POST route with a read-only token; write, delete, tokens and buckets match no route', async () => {
    const flux = JSON.stringify({ query: `from(bucket: "${v2!.bucket}") |> range(start: -1h) |> limit(n: 1)`, type: 'flux' });
    for (const role of ['Viewer', 'Editor'] as const) {
      const q = await call(role, 'POST', 'tcplat-2x', 'influx/api/v2/query?org=tcplat', flux, 'application/json');
      expect([role, q.status]).toEqual([role, 200]);
      for (const [method, p] of [
        ['POST', `influx/api/v2/write?org=tcplat&bucket=${v2!.bucket}`],
        ['POST', 'influx/api/v2/delete?org=tcplat'],
        ['POST', 'influx/api/v2/authorizations'],
        ['GET', 'influx/api/v2/buckets'],
        ['POST', 'influx/api/v2/query/../delete?org=tcplat'],
      ]) {
        expect([role, method, p, (await call(role, method, 'tcplat-2x', p, method === 'GET' ? undefined : '{}', 'application/json')).status]).toEqual([role, method, p, 502]);
      }
    }
    // Even if a route let a write through, the token Grafana holds could not write.
    const w = await fetch(`${TEST_INFLUX2_URL}/api/v2/write?org=tcplat&bucket=${v2!.bucket}`, { method: 'POST', headers: { Authorization: `Token ${v2!.readToken}` }, body: 'm v=1' });
    expect([401, 403, 404]).toContain(w.status); // 2.x may answer a bucket the token cannot write as not found
  });
});

/** A token that can only read one bucket, made with the test 2.x's operator token. */
async function readOnlyToken(bucket: string): Promise<string> {
  const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}`, 'Content-Type': 'application/json' };
  const orgs = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/orgs?org=tcplat`, { headers })).json()) as { orgs: { id: string }[] };
  const buckets = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets?name=${bucket}`, { headers })).json()) as { buckets: { id: string }[] };
  const orgID = orgs.orgs[0].id;
  const res = await fetch(`${TEST_INFLUX2_URL}/api/v2/authorizations`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ orgID, description: 'gproxy test read', permissions: [{ action: 'read', resource: { type: 'buckets', id: buckets.buckets[0].id, orgID } }] }),
  });
  if (res.status !== 201) throw new Error(`cannot create a read token: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}
