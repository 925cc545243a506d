/**
 * Every parameter with hostile values against the real InfluxDB 1.x: the answer is a 4xx or a correct
 * (empty) image, never a 5xx, never a query error, and the data are still there afterwards.
 */
import { queryInfluxQL, type InfluxV1Target } from '@tcplat/core';
import { describeWith } from './support/prereq';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { pngSize, seedPoints, testServer, writePoints, type Answer, type TestServer } from './renderer-support';

const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
const FROM = NOW - 3_600_000;

const HOSTILE = [
  "'",
  '"',
  '\\',
  "\\'",
  "' OR 1=1 --",
  '" OR 1=1',
  '") |> drop(columns: ["_value"]) //',
  '|>',
  '\n',
  'a\nb',
  '\r\n',
  '${x}',
  '; DROP DATABASE x',
  '/.*/',
  '1e309',
  '-1',
  '99999999999999999999999',
  'NaN',
  'now-99999999999d',
  "now-1h' OR 1=1",
  '2025-13-45T99:99:99Z',
  '\u0000',
  '<script>alert(1)</script>',
  '../../etc/passwd',
  '$\\frac{1}{',
  '%',
  '*',
  '',
  'x'.repeat(5000),
  '🚀 ünï',
];

const PARAMS = ['service', 'dst', 'host', 'result', 'from', 'to', 'width', 'height', 'theme', 'tz', 'title', 'overlay'];

describeWith(missingInflux(), 'renderer with hostile parameters', () => {
  let target: InfluxV1Target;
  let srv: TestServer;
  let seeded = 0;

  beforeAll(async () => {
    target = await freshDatabase('renderer_hostile');
    const points = seedPoints([{ service: 'api', dst: 'db:5432', perWindow: 5, latency: (i) => 0.5 + i }], FROM, NOW);
    seeded = points.length * 5;
    await writePoints(target, points);
    srv = await testServer(target, ['--cache-mb', '0'], { now: () => NOW });
  });

  afterAll(async () => {
    await srv?.close();
    if (target) await dropDatabase(target);
  });

  function check(a: Answer, what: string): void {
    if (a.statusCode >= 500) throw new Error(`${what}: HTTP ${a.statusCode} ${a.text.slice(0, 300)}`);
    expect(a.statusCode === 200 || (a.statusCode >= 400 && a.statusCode < 500)).toBe(true);
    if (a.statusCode === 200) {
      expect(a.headers['content-type']).toBe('image/png');
      expect(pngSize(a.body).width).toBeGreaterThan(0);
    } else {
      const body = a.json();
      expect(typeof body.error).toBe('string');
      expect(a.text).not.toMatch(/\n\s+at |\.ts:\d+/);
    }
  }

  async function run(paths: string[]): Promise<Answer[]> {
    const out: Answer[] = [];
    // A few at a time: enough to be quick, never enough to hit the overload limit.
    for (let i = 0; i < paths.length; i += 4) {
      const batch = await Promise.all(paths.slice(i, i + 4).map((p) => srv.get(p)));
      batch.forEach((a, k) => check(a, paths[i + k]));
      out.push(...batch);
    }
    return out;
  }

  // Both charts parse parameters the same way: every value on the heatmap, the nastiest ones on the
  // percentile chart (its drawing differs: legend labels carry destination names).
  const NASTIEST = ["'", '"', '\\', '") |> drop(columns: ["_value"]) //', "' OR 1=1 --", '\n', '${x}', '99999999999999999999999', '\u0000', '$\\frac{1}{', '../../etc/passwd', 'x'.repeat(5000)];

  test('each parameter, each hostile value, on both charts', async () => {
    const paths: string[] = [];
    for (const route of ['/render/heatmap.png', '/render/percentiles.png']) {
      for (const p of PARAMS) {
        for (const v of route === '/render/heatmap.png' ? HOSTILE : NASTIEST) {
          // Small images: this runs hundreds of renders.
          const q = new URLSearchParams({ from: String(FROM), to: String(NOW), width: '400', height: '200' });
          q.set(p, v);
          paths.push(`${route}?${q}`);
        }
      }
    }
    const answers = await run(paths);
    const codes = new Set(answers.map((a) => a.statusCode));
    expect([...codes].every((c) => c === 200 || c === 400)).toBe(true);
    // Hostile filter values are just names nobody has: a correct empty image.
    const r = await srv.get(`/render/heatmap.png?service=${encodeURIComponent("api' OR 1=1 --")}&from=${FROM}&to=${NOW}`);
    expect(r.statusCode).toBe(200);
    expect(r.headers['x-tcplat-no-data']).toBe('true');
  }, 120_000); // hundreds of renders on a machine that may be busy

  test('the lifespan chart and metric=tls parse the same parameters the same way; metric takes only connect or tls', async () => {
    const paths: string[] = [];
    for (const [route, extra] of [
      ['/render/lifespan.png', {}],
      ['/render/heatmap.png', { metric: 'tls' }],
      ['/render/percentiles.png', { metric: 'tls' }],
    ] as const) {
      for (const p of PARAMS) {
        for (const v of NASTIEST) {
          const q = new URLSearchParams({ from: String(FROM), to: String(NOW), width: '400', height: '200', ...extra });
          q.set(p, v);
          paths.push(`${route}?${q}`);
        }
      }
    }
    for (const v of HOSTILE) for (const route of ['heatmap', 'percentiles', 'lifespan']) paths.push(`/render/${route}.png?metric=${encodeURIComponent(v)}`);
    const answers = await run(paths);
    expect(new Set(answers.map((a) => a.statusCode))).toEqual(new Set([200, 400]));
    for (const v of HOSTILE) {
      const a = await srv.get(`/render/heatmap.png?metric=${encodeURIComponent(v)}`);
      expect(a.statusCode).toBe(400);
      expect(a.json().parameter).toBe('metric');
    }
    // tcp_session_hist has no result tag: a result filter on the lifespan chart is a clear 400, not an empty chart.
    const r = await srv.get(`/render/lifespan.png?result=ok&from=${FROM}&to=${NOW}`);
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ parameter: 'result', error: expect.stringMatching(/lifespan.png has no result filter/) });
    const t = await srv.get(`/render/lifespan.png?metric=tls&from=${FROM}&to=${NOW}`);
    expect(t.statusCode).toBe(400);
    expect(t.json().parameter).toBe('metric');
  }, 120_000);

  test('hostile parameter names, repeated and oversized lists, the seed route', async () => {
    const paths = [
      ...HOSTILE.slice(0, 12).map((v) => `/render/heatmap.png?${encodeURIComponent(v)}=1`),
      `/render/heatmap.png?${Array.from({ length: 60 }, (_, i) => `service=s${i}`).join('&')}`,
      `/render/heatmap.png?service=api&service=${encodeURIComponent("'")}&from=${FROM}&to=${NOW}`,
      `/render/heatmap.png?from=${FROM}&from=${FROM - 1}`,
      `/render/heatmap.png?width=100&width=200`,
      ...HOSTILE.map((v) => `/visualize/tcp-latency-heatmap?serviceName=${encodeURIComponent(v)}`),
      ...HOSTILE.map((v) => `/visualize/tcp-latency-heatmap?serviceName=api&timeRange=${encodeURIComponent(v)}`),
    ];
    await run(paths);
  });

  test('no query error reached InfluxDB, and the data are intact', async () => {
    const m = await srv.get('/metrics');
    expect(m.text).toContain('tcplat_renderer_influx_errors_total 0');
    expect(m.text).not.toMatch(/outcome="error"/);
    const [series] = await queryInfluxQL(target, 'SELECT sum("count") FROM "tcp_connect_hist"');
    expect(series[0].values[0][1]).toBe(seeded);
    const ok = await srv.get(`/render/heatmap.png?service=api&from=${FROM}&to=${NOW}`);
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['x-tcplat-no-data']).toBeUndefined();
  });
});

describeWith(missingInflux(), 'what the renderer tells strangers, and what it logs', () => {
  const TOKEN = 'renderer-hostile-token-0123456789';
  let target: InfluxV1Target;
  beforeAll(async () => {
    target = await freshDatabase('renderer_topology');
  });
  afterAll(async () => {
    if (target) await dropDatabase(target);
  });

  test('/healthz names the InfluxDB URL and database only to a caller with a token', async () => {
    const srv = await testServer(target, ['--auth-token', TOKEN]);
    try {
      const open = await srv.get('/healthz');
      expect(open.statusCode).toBe(200);
      expect(open.json()).toMatchObject({ ok: true, workers: 2 });
      expect(open.text).not.toContain(target.db);
      expect(open.text).not.toContain(new URL(target.url).host);
      expect(open.json().influx).toBeUndefined();
      const wrong = await srv.get('/healthz', { authorization: 'Bearer not-the-token-at-all-0000' });
      expect(wrong.statusCode).toBe(200);
      expect(wrong.text).not.toContain(target.db);
      const mine = await srv.get('/healthz', { authorization: `Bearer ${TOKEN}` });
      expect(mine.text).toContain(target.db);
      expect(mine.json().dialect).toBe('influxql');
    } finally {
      await srv.close();
    }
  });

  test('a 503 for an unreachable InfluxDB does not name it; the log does, in one line for the request', async () => {
    const lines: string[] = [];
    const stream = { write: (l: string) => void lines.push(l) };
    const down = { url: 'http://127.0.0.1:9', db: 'secret_db_name' };
    const srv = await testServer(down, ['--auth-token', TOKEN, '--cache-mb', '0', '--log-level', 'info'], { logger: { stream } });
    try {
      const auth = { authorization: `Bearer ${TOKEN}` };
      lines.length = 0; // start-up lines (workers ready)
      // 30 answered requests: fine, refused, not found, bad parameters: nothing at info.
      for (let i = 0; i < 10; i++) {
        expect((await srv.get('/healthz')).statusCode).toBe(200);
        expect((await srv.get('/metrics')).statusCode).toBe(401);
        expect((await srv.get(`/render/heatmap.png?width=abc`, auth)).statusCode).toBe(400);
      }
      expect(lines).toEqual([]);
      const r = await srv.get('/render/heatmap.png?service=api', auth);
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBe('10');
      expect(r.json().error).toMatch(/^InfluxDB is not available/);
      expect(r.text).not.toContain('127.0.0.1:9');
      expect(r.text).not.toContain('secret_db_name');
      expect(lines).toHaveLength(1);
      expect(JSON.parse(lines[0])).toMatchObject({ msg: 'InfluxDB query failed', url: '/render/heatmap.png?service=api' });
    } finally {
      await srv.close();
    }
  });

  test('at debug, exactly one line per answered request, with secrets redacted', async () => {
    const lines: string[] = [];
    const stream = { write: (l: string) => void lines.push(l) };
    const srv = await testServer(target, ['--auth-token', TOKEN, '--log-level', 'debug'], { logger: { stream } });
    try {
      lines.length = 0;
      for (let i = 0; i < 5; i++) await srv.get('/healthz');
      await srv.get(`/metrics?token=${TOKEN}`);
      const request = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
      expect(lines).toHaveLength(6);
      expect(request).toHaveLength(6);
      expect(request[5]).toMatchObject({ status: 200, url: '/metrics?token=***' });
      expect(lines.join('')).not.toContain(TOKEN);
    } finally {
      await srv.close();
    }
  });
});
