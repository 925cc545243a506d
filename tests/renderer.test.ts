/**
 * The renderer end to end against the real InfluxDB 1.x: data written through the agent's encoder
 * (histPoint + line protocol), real Python workers, PNGs decoded and their pixels checked.
 */
import { BUCKET_BOUNDS_MS, queryInfluxQL, type InfluxV1Target } from '@tcplat/core';
import { chartQuery, percentilesChart } from '../renderer/src/charts';
import { influxSource } from '../renderer/src/data';
import { DEFAULT_LIMITS, parseRenderParams } from '../renderer/src/params';
import { describeWith } from './support/prereq';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { colourMass, decodePng, seedPoints, testServer, writePoints, type TestServer } from './renderer-support';

// A fixed "now" on a whole hour keeps bins, cache keys and expectations deterministic.
const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
const FROM = NOW - 2 * 3_600_000;
const PER_WINDOW = { nest: 20, railsOk: 10, railsRefused: 2 };
const WINDOWS = (NOW - FROM) / 10_000;

describeWith(missingInflux(), 'renderer on InfluxDB 1.x', () => {
  let target: InfluxV1Target;
  let srv: TestServer;
  let seededCount = 0;

  beforeAll(async () => {
    target = await freshDatabase('renderer');
    const points = seedPoints(
      [
        // The fast service: NestJS to PostgreSQL, ~0.2 ms handshakes.
        { service: 'nest', dst: 'pg:5432', perWindow: PER_WINDOW.nest, latency: (i) => 0.15 + 0.01 * (i % 10) },
        // The slow one: Rails to the same PostgreSQL, every handshake after a dropped SYN, ~1 s.
        { service: 'rails', dst: 'pg:5432', perWindow: PER_WINDOW.railsOk, latency: (i) => 1010 + i * 5 },
        { service: 'rails', dst: 'pg:5432', result: 'refused', perWindow: PER_WINDOW.railsRefused, latency: () => 0.04 },
      ],
      FROM,
      NOW,
      10_000,
      true, // plus one late event per series and window, in a second point of the same window
    );
    await writePoints(target, points);
    seededCount = WINDOWS * (PER_WINDOW.nest + PER_WINDOW.railsOk + PER_WINDOW.railsRefused + 3);
    srv = await testServer(target, ['--cache-mb', '16'], { now: () => NOW });
  });

  afterAll(async () => {
    await srv?.close();
    if (target) await dropDatabase(target);
  });

  const get = (url: string, headers: Record<string, string> = {}) => srv.get(url, headers);

  test('a heatmap PNG has the requested size and the slow service sits higher than the fast one', async () => {
    const w = 720;
    const h = 360;
    const range = `from=${FROM}&to=${NOW}&width=${w}&height=${h}`;
    const slow = await get(`/render/heatmap.png?service=rails&result=ok&${range}`);
    const fast = await get(`/render/heatmap.png?service=nest&${range}`);
    for (const r of [slow, fast]) {
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe('image/png');
      expect(r.headers['x-tcplat-no-data']).toBeUndefined();
    }
    const si = decodePng(slow.body);
    const fi = decodePng(fast.body);
    expect([si.width, si.height]).toEqual([w, h]);
    expect([fi.width, fi.height]).toEqual([w, h]);
    // The plot box: 84 px left for the latency axis, 92 px right for the colour bar, 44 px title, 40 px time axis.
    const box = { left: 90, right: w - 100, top: 46, bottom: h - 42 };
    const sm = colourMass(si, box);
    const fm = colourMass(fi, box);
    expect(sm.count).toBeGreaterThan(500);
    expect(fm.count).toBeGreaterThan(500);
    expect(sm.meanRow).toBeLessThan(fm.meanRow - 0.3 * (box.bottom - box.top));
    // And each mass is where its latency is on the log axis (edges one R5 step beyond the bounds).
    const lo = BUCKET_BOUNDS_MS[0] / 1.6;
    const hi = BUCKET_BOUNDS_MS[BUCKET_BOUNDS_MS.length - 1] * 1.6;
    const latencyAt = (row: number) => {
      const frac = (h - 40 - row) / (h - 40 - 44);
      return Math.exp(Math.log(lo) + frac * (Math.log(hi) - Math.log(lo)));
    };
    expect(latencyAt(sm.meanRow)).toBeGreaterThan(500);
    expect(latencyAt(sm.meanRow)).toBeLessThan(2500);
    expect(latencyAt(fm.meanRow)).toBeGreaterThan(0.08);
    expect(latencyAt(fm.meanRow)).toBeLessThan(0.6);
  });

  test('bins SUM every point of a window (late events in extra points count)', async () => {
    const source = influxSource(target, 5000);
    const rows = await source.query({ fromMs: FROM, toMs: NOW, windowMs: 60_000, metrics: ['count', 'buckets', 'max'] });
    expect(rows).toHaveLength(120);
    expect(rows.reduce((s, r) => s + (r.values.count ?? 0), 0)).toBe(seededCount);
    // buckets add up to count in every bin
    for (const r of rows) {
      const b = Object.entries(r.values).filter(([k]) => k.startsWith('le_')).reduce((s, [, v]) => s + v, 0);
      expect(b).toBe(r.values.count);
    }
    expect(Math.max(...rows.map((r) => r.values.max_ms ?? 0))).toBe(1010 + PER_WINDOW.railsOk * 5);
  });

  test('percentiles: p50 per destination from ok handshakes, error rate from failures', async () => {
    const p = parseRenderParams('percentiles', { service: 'rails', from: String(FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    const rows = await influxSource(target, 5000).query(chartQuery(p));
    const chart = percentilesChart(p, rows);
    const series = chart.request.series as { name: string; p50: (number | null)[]; error_pct: (number | null)[] }[];
    expect(series.map((s) => s.name)).toEqual(['pg:5432']);
    const p50 = series[0].p50.filter((x): x is number => x !== null);
    expect(Math.min(...p50)).toBeGreaterThan(900);
    // 2 refused + 1 late refused of 10 + 1 ok + 3 failures per window
    const err = series[0].error_pct.filter((x): x is number => x !== null);
    for (const e of err) expect(e).toBeCloseTo((300 / 14) * 1, 0);
    const r = await get(`/render/percentiles.png?service=rails&service=nest&from=${FROM}&to=${NOW}&width=800&height=500&theme=light&tz=Europe/Berlin`);
    expect(r.statusCode).toBe(200);
    const img = decodePng(r.body);
    expect([img.width, img.height]).toEqual([800, 500]);
  });

  test('no data in range: 200, an image that says so, and a header', async () => {
    const r = await get(`/render/heatmap.png?service=nobody&from=${FROM}&to=${NOW}&width=400&height=200`);
    expect(r.statusCode).toBe(200);
    expect(r.headers['x-tcplat-no-data']).toBe('true');
    const img = decodePng(r.body);
    expect([img.width, img.height]).toEqual([400, 200]);
    const p = await get(`/render/percentiles.png?dst=nowhere&from=${FROM}&to=${NOW}`);
    expect(p.statusCode).toBe(200);
    expect(p.headers['x-tcplat-no-data']).toBe('true');
  });

  test('a linear colour scale draws the same cells in other colours; a bad scale names the parameter', async () => {
    const url = `/render/heatmap.png?service=nest&service=rails&from=${FROM}&to=${NOW}&width=600&height=300`;
    const log = await get(url);
    const lin = await get(`${url}&scale=linear`);
    expect([log.statusCode, lin.statusCode]).toEqual([200, 200]);
    const a = decodePng(log.body);
    const b = decodePng(lin.body);
    expect([b.width, b.height]).toEqual([600, 300]);
    const box = { left: 90, right: 600 - 100, top: 46, bottom: 300 - 42 };
    // Same data, so coloured cells in the same places; but not the same picture.
    expect(Math.abs(colourMass(a, box).count - colourMass(b, box).count)).toBeLessThan(0.2 * colourMass(a, box).count);
    expect(lin.body.equals(log.body)).toBe(false);
    const bad = await get(`${url}&scale=cubic`);
    expect(bad.statusCode).toBe(400);
    expect(bad.json().parameter).toBe('scale');
  });

  test("the seed's URL answers with the same heatmap", async () => {
    const seed = await get('/visualize/tcp-latency-heatmap?serviceName=rails&timeRange=1h');
    const same = await get('/render/heatmap.png?service=rails&from=now-1h&to=now');
    expect(seed.statusCode).toBe(200);
    expect(seed.headers['content-type']).toBe('image/png');
    expect(same.headers.etag).toBe(seed.headers.etag);
    const bad = await get('/visualize/tcp-latency-heatmap?serviceName=rails&timeRange=1h%27%20%7C%3E%20drop()');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().parameter).toBe('timeRange');
  });

  test('cache: second request is a hit with the same ETag; If-None-Match gives 304', async () => {
    const url = `/render/heatmap.png?service=nest&from=${FROM}&to=${NOW}&width=500&height=300&overlay=p50,p99`;
    const a = await get(url);
    const b = await get(url);
    expect(a.statusCode).toBe(200);
    expect(b.headers['x-tcplat-cache']).toBe('hit');
    expect(b.headers.etag).toBe(a.headers.etag);
    // The range ends now: its last bins are still filling, so clients may keep it for one bin (2 min, capped at 60 s).
    expect(a.headers['cache-control']).toBe('private, max-age=60');
    const c = await get(url, { 'if-none-match': String(a.headers.etag) });
    expect(c.statusCode).toBe(304);
  });

  test.each([
    ['width', 'width=99999'],
    ['width', 'width=abc'],
    ['height', 'height=10'],
    ['from', 'from=yesterday'],
    ['to', `from=${NOW}&to=${FROM}`],
    ['from', `from=${NOW - 90 * 86_400_000}&to=${NOW}`],
    ['theme', 'theme=pink'],
    ['tz', 'tz=Mars/Olympus_Mons'],
    ['tz', 'tz=../../etc/passwd'],
    ['overlay', 'overlay=p42'],
    ['bogus', 'bogus=1'],
  ])('bad %s -> 400 naming it', async (parameter, qs) => {
    const r = await get(`/render/heatmap.png?${qs}`);
    expect(r.statusCode).toBe(400);
    const body = r.json();
    expect(body.parameter).toBe(parameter);
    expect(typeof body.error).toBe('string');
    expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/); // never a stack trace
  });

  test('/healthz and /metrics', async () => {
    const h = await get('/healthz');
    expect(h.statusCode).toBe(200);
    expect(h.json()).toMatchObject({ ok: true, workers: 2, dialect: 'influxql' });
    const m = await get('/metrics');
    expect(m.statusCode).toBe(200);
    for (const name of ['tcplat_renderer_renders_total{kind="heatmap",outcome="ok"}', 'tcplat_renderer_render_duration_seconds_bucket', 'tcplat_renderer_cache_hits_total', 'tcplat_renderer_queue_depth', 'tcplat_renderer_worker_restarts_total']) {
      expect(m.text).toContain(name);
    }
  });

  test('data still there after everything above', async () => {
    const [series] = await queryInfluxQL(target, 'SELECT sum("count") FROM "tcp_connect_hist"');
    expect(series[0].values[0][1]).toBe(seededCount);
  });
});

describeWith(missingInflux(), 'renderer with InfluxDB down', () => {
  test('503 with a clear message, no stack', async () => {
    const down = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--query-timeout', '2s']);
    try {
      const r = await down.get('/render/heatmap.png?service=a');
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBeDefined();
      expect(r.json().error).toMatch(/^InfluxDB is not available \(not reachable or did not answer in time\)/);
      expect(r.text).not.toContain('127.0.0.1:9'); // where InfluxDB is stays in the log
      expect(r.text).not.toMatch(/\.ts:\d+|\n\s+at /);
    } finally {
      await down.close();
    }
  });
});
