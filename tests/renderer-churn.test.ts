/**
 * The renderer's churn and TLS charts against the real InfluxDB 1.x (issues 15, 16): tcp_session_hist,
 * tls_handshake_hist and tcp_connect_hist written with the agent's encoders (sessionHistPoint, histPoint)
 * and the rollups of tcp_connect_hist and tcp_session_hist in the schema of pkg/core (rollupHistPoints), real
 * Python workers, PNGs decoded. Checked: lifespan.png's counts per lifespan bucket, its new connections/s,
 * p50/p99 and the resolution its subtitle names (an hour: the 10 s data; a day: the 10 min rollups of both,
 * pkg/core ROLLED_UP_MEASUREMENTS); metric=tls reads tls_handshake_hist.
 * The same reads through Flux on the real InfluxDB 2.x.
 */
import {
  encodePoints,
  Histogram,
  histPoint,
  MEASUREMENT,
  queryInfluxQL,
  quote,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  rollupHistPoints,
  SESSION_BUCKET_COUNT,
  SESSION_BUCKET_FIELDS,
  writeLines,
  sessionBucketIndex,
  sessionHistPoint,
  type InfluxV1Target,
  type InfluxV2Target,
  type ConnectResult,
  type Point,
} from '@tcplat/core';
import { chartQuery, lifespanChart, newConnectsQuery, percentilesChart } from '../renderer/src/charts';
import { influxSource, readLevels } from '../renderer/src/data';
import { DEFAULT_LIMITS, parseRenderParams } from '../renderer/src/params';
import { describeWith } from './support/prereq';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2, TEST_INFLUX2_TOKEN, TEST_INFLUX2_URL } from './support/influx';
import { colourMass, decodePng, testServer, writePoints, type TestServer } from './renderer-support';

// A fixed "now" on a whole hour: bins, levels and expectations are deterministic.
const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
const DAY_FROM = NOW - 86_400_000;
const HOUR_FROM = NOW - 3_600_000;
const W = 10_000;

/** Per 10 s window: the reusing pool closes one 5-minute connection, the churning one 100 of 16-25 ms. */
const REUSE = { closed: 1, lifespanMs: 300_000, opened: 1 };
const CHURN = { closed: 100, lifespan: (i: number) => 16.5 + (i % 9), opened: 100, refused: 5 };
const DST = 'api:8080';

function sessionWindow(lifespans: number[]) {
  const buckets = new Array<number>(SESSION_BUCKET_COUNT).fill(0);
  for (const l of lifespans) buckets[sessionBucketIndex(l)]++;
  return { count: lifespans.length, sumMs: lifespans.reduce((a, b) => a + b, 0), minMs: Math.min(...lifespans), maxMs: Math.max(...lifespans), buckets, retrans: 0, resetsIn: 0, resetsOut: 0 };
}

function connectWindow(n: number, ms: number) {
  const h = new Histogram();
  for (let i = 0; i < n; i++) h.add(ms);
  return h;
}

/** 10 s points from `from` to NOW: lifespans and connects of both pools, TLS handshakes of one service. */
/** 10 s points from `from`; hourBase: those of the last three hours only. */
function seed(from: number): { base: Point[]; hourBase: Point[] } {
  const base: Point[] = [];
  const churnLifespans = Array.from({ length: CHURN.closed }, (_, i) => CHURN.lifespan(i));
  const reuseLifespans = Array.from({ length: REUSE.closed }, () => REUSE.lifespanMs);
  for (let t = from; t < NOW; t += W) {
    const ns = BigInt(t) * 1_000_000n;
    base.push(sessionHistPoint({ host: 'h1', service: 'reuse', dst: DST }, sessionWindow(reuseLifespans), ns));
    base.push(sessionHistPoint({ host: 'h1', service: 'churn', dst: DST }, sessionWindow(churnLifespans), ns));
    base.push(histPoint({ host: 'h1', service: 'reuse', dst: DST, result: 'ok' }, connectWindow(REUSE.opened, 0.2), ns));
    base.push(histPoint({ host: 'h1', service: 'churn', dst: DST, result: 'ok' }, connectWindow(CHURN.opened, 0.2), ns));
    base.push(histPoint({ host: 'h1', service: 'churn', dst: DST, result: 'refused' }, connectWindow(CHURN.refused, 0.05), ns));
  }
  return { base, hourBase: base.filter((p) => BigInt(p.timeNs!) >= BigInt(HOUR_FROM - 2 * 3_600_000) * 1_000_000n) };
}

/** TLS: nest -> api:443, 20 handshakes of ~300 ms and 2 failed ones per window; its TCP connects take 0.2 ms. */
function tlsPoints(): Point[] {
  const tls: Point[] = [];
  for (let t = HOUR_FROM; t < NOW; t += W) {
    const ns = BigInt(t) * 1_000_000n;
    const ok = new Histogram();
    for (let i = 0; i < 20; i++) ok.add(290 + i);
    // tls_handshake_hist is tcp_connect_hist under another name (the contract); its result is ok/failed.
    tls.push({ ...histPoint({ host: 'h1', service: 'nest', dst: 'api:443', result: 'ok' }, ok, ns), measurement: MEASUREMENT.tlsHist });
    tls.push({ ...histPoint({ host: 'h1', service: 'nest', dst: 'api:443', result: 'failed' as ConnectResult }, connectWindow(2, 4), ns), measurement: MEASUREMENT.tlsHist });
    tls.push(histPoint({ host: 'h1', service: 'nest', dst: 'api:443', result: 'ok' }, connectWindow(22, 0.2), ns));
  }
  return tls;
}

/** Counts per lifespan bucket over the whole chart. */
function perBucket(req: Record<string, unknown>): Record<string, number> {
  const counts = req.counts as number[];
  const out: Record<string, number> = {};
  for (let i = 0; i < counts.length; i++) {
    const f = SESSION_BUCKET_FIELDS[i % SESSION_BUCKET_COUNT];
    if (counts[i] > 0) out[f] = (out[f] ?? 0) + counts[i];
  }
  return out;
}

describeWith(missingInflux(), 'renderer churn and TLS charts on InfluxDB 1.x', () => {
  let target: InfluxV1Target;
  let srv: TestServer;

  beforeAll(async () => {
    target = await freshDatabase('renderer_churn');
    await queryInfluxQL({ ...target, db: '' }, `CREATE RETENTION POLICY ${quote('influxql-ident', ROLLUP_RP)} ON ${quote('influxql-ident', target.db)} DURATION INF REPLICATION 1`, { method: 'POST' });
    const { base, hourBase } = seed(DAY_FROM - 3_600_000);
    // Lifespans and connects: 10 s data of the last three hours only, and the rollups of the whole day, so
    // a day's lifespan counts and connects/s prove they came from the rollups.
    await writePoints(target, hourBase);
    await writePoints({ ...target, rp: ROLLUP_RP } as InfluxV1Target, ROLLUP_WINDOWS.flatMap((w) => rollupHistPoints(base, w.name)));
    await writePoints(target, tlsPoints());
    srv = await testServer(target, ['--cache-mb', '0'], { now: () => NOW });
  }, 120_000);

  afterAll(async () => {
    await srv?.close();
    if (target) await dropDatabase(target);
  });

  const WHERE = { levels: ROLLUP_WINDOWS.map((w) => w.name), rp: ROLLUP_RP };

  async function chartOf(service: string, from: number) {
    const p = parseRenderParams('lifespan', { service, from: String(from), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    const source = influxSource(target, 10_000);
    const [read, connects] = await Promise.all([readLevels(source, chartQuery(p), p.level, WHERE, NOW, W), readLevels(source, newConnectsQuery(p), p.level, WHERE, NOW, W)]);
    return { p, read, chart: lifespanChart(p, read.rows, connects.rows, { level: read.level, baseMs: W, note: read.note }) };
  }

  test('an hour of 10 s data: exact counts per lifespan bucket, new connections/s from ok connects, p50/p99 lines, the resolution named', async () => {
    const windows = 3_600_000 / W;
    const churn = await chartOf('churn', HOUR_FROM);
    expect(churn.read.level).toBe('base');
    const req = churn.chart.request;
    // 16.5 .. 24.5 ms: all in (16, 25].
    expect(perBucket(req)).toEqual({ le_25: windows * CHURN.closed });
    expect(req.subtitle).toContain(`of 10 s data`);
    // 100 ok connects per 10 s window: 10/s; the 5 refused ones are no new connections.
    const rate = req.rate as number[];
    expect(rate.length).toBe(req.bins);
    for (const r of rate) expect(r).toBeCloseTo(CHURN.opened / 10, 6);
    expect(req.subtitle).toContain('10.0 new conns/s');
    const { p50, p99 } = req.overlays as Record<string, number[]>;
    for (const v of [...p50, ...p99]) {
      expect(v).toBeGreaterThanOrEqual(16.5);
      expect(v).toBeLessThanOrEqual(24.5);
    }
    const reuse = await chartOf('reuse', HOUR_FROM);
    expect(perBucket(reuse.chart.request)).toEqual({ le_400000: windows });
    for (const r of reuse.chart.request.rate as number[]) expect(r).toBeCloseTo(0.1, 6);
    expect(reuse.chart.request.subtitle).toMatch(/lifespan p50 5 min, p99 5 min/);
    // Little's law over the hour: one 5-minute connection closing every 10 s means 30 open on average.
    expect(reuse.chart.request.subtitle).toContain('mean open 30.0');
  });

  test('a day: lifespans and new connections/s from the 10 min rollups (tcp_session_hist is rolled up too); every connection counted', async () => {
    const { p, read, chart } = await chartOf('churn', DAY_FROM);
    expect(p.level).toBe('10m');
    expect(read.level).toBe('10m');
    expect(read.fallback).toBeUndefined();
    expect(read.note).toBeUndefined();
    // The 10 s lifespans hold only the last three hours: the whole day's closes counted means the rollups were read.
    expect(perBucket(chart.request)).toEqual({ le_25: (86_400_000 / W) * CHURN.closed });
    expect(chart.request.subtitle).toMatch(/ bins of 10 min rollups/);
    // The 10 s connects hold only the last three hours: 10/s in every bin means the rollups were read.
    for (const r of chart.request.rate as number[]) expect(r).toBeCloseTo(10, 6);
  });

  test('GET /render/lifespan.png: the churning pool sits low on the lifespan axis, the reusing one high; headers name the resolution', async () => {
    const w = 800;
    const h = 500;
    const range = `from=${HOUR_FROM}&to=${NOW}&width=${w}&height=${h}`;
    const churn = await srv.get(`/render/lifespan.png?service=churn&${range}`);
    const reuse = await srv.get(`/render/lifespan.png?service=reuse&${range}`);
    for (const r of [churn, reuse]) {
      expect(r.statusCode).toBe(200);
      expect(r.headers['content-type']).toBe('image/png');
      expect(r.headers['x-tcplat-resolution']).toBe('base');
      expect(r.headers['x-tcplat-no-data']).toBeUndefined();
    }
    // The heatmap: the top three quarters of the plot area (the bottom quarter is the connects/s strip).
    const plotTop = 44;
    const plotBottom = h - 40;
    const box = { left: 90, right: w - 100, top: plotTop + 2, bottom: plotTop + Math.floor(((plotBottom - plotTop) * 3) / 4) - 10 };
    const cm = colourMass(decodePng(churn.body), box);
    const rm = colourMass(decodePng(reuse.body), box);
    expect(cm.count).toBeGreaterThan(300);
    expect(rm.count).toBeGreaterThan(300);
    expect(rm.meanRow).toBeLessThan(cm.meanRow - 0.3 * (box.bottom - box.top));
    const day = await srv.get(`/render/lifespan.png?service=churn&from=${DAY_FROM}&to=${NOW}`);
    expect(day.statusCode).toBe(200);
    expect(day.headers['x-tcplat-resolution']).toBe('10m');
    // No closed connections for a service: a "no data" image that says how to record them.
    const none = await srv.get(`/render/lifespan.png?service=nest&${range}`);
    expect(none.statusCode).toBe(200);
    expect(none.headers['x-tcplat-no-data']).toBe('true');
    const p = parseRenderParams('lifespan', { service: 'nest', from: String(HOUR_FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    expect(lifespanChart(p, [], [{ timeMs: HOUR_FROM, tags: {}, values: { count: 5 } }]).request.detail).toMatch(/--probe-close/);
  });

  test('metric=tls reads tls_handshake_hist: ~300 ms handshakes and their failure share, where the TCP connects take 0.2 ms', async () => {
    const range = `service=nest&from=${HOUR_FROM}&to=${NOW}&width=720&height=360`;
    const tls = await srv.get(`/render/heatmap.png?metric=tls&result=ok&${range}`);
    const tcp = await srv.get(`/render/heatmap.png?${range}`);
    for (const r of [tls, tcp]) {
      expect(r.statusCode).toBe(200);
      expect(r.headers['x-tcplat-no-data']).toBeUndefined();
    }
    const box = { left: 90, right: 720 - 100, top: 46, bottom: 360 - 42 };
    const a = colourMass(decodePng(tls.body), box);
    const b = colourMass(decodePng(tcp.body), box);
    expect(a.meanRow).toBeLessThan(b.meanRow - 0.3 * (box.bottom - box.top));
    // The same bytes are not served for both (the cache key holds the metric).
    expect(tls.body.equals(tcp.body)).toBe(false);

    const p = parseRenderParams('percentiles', { service: 'nest', metric: 'tls', from: String(HOUR_FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    const q = chartQuery(p);
    expect(q.measurement).toBe(MEASUREMENT.tlsHist);
    const chart = percentilesChart(p, await influxSource(target, 10_000).query(q));
    expect(chart.total).toBe((3_600_000 / W) * 22);
    expect(String(chart.request.title)).toMatch(/^TLS handshake percentiles/);
    const [s] = chart.request.series as { name: string; p50: number[]; error_pct: number[] }[];
    expect(s.name).toBe('api:443');
    for (const v of s.p50) {
      expect(v).toBeGreaterThan(290);
      expect(v).toBeLessThan(310);
    }
    for (const e of s.error_pct) expect(e).toBeCloseTo((2 / 22) * 100, 2);
    const png = await srv.get(`/render/percentiles.png?metric=tls&${range}`);
    expect(png.statusCode).toBe(200);
    expect(png.headers['x-tcplat-no-data']).toBeUndefined();
    // TLS for a service that has none: the no-data image, not the TCP connects.
    const none = await srv.get(`/render/heatmap.png?metric=tls&service=churn&from=${HOUR_FROM}&to=${NOW}`);
    expect(none.headers['x-tcplat-no-data']).toBe('true');
  });
});

describeWith(missingInflux2(), 'renderer churn and TLS charts on InfluxDB 2.x (Flux)', () => {
  let target: InfluxV2Target;

  beforeAll(async () => {
    target = await freshBucket('renderer_churn');
    const { hourBase } = seed(HOUR_FROM);
    const points = [...hourBase, ...tlsPoints()];
    for (let i = 0; i < points.length; i += 5000) await writeLines(target, encodePoints(points.slice(i, i + 5000)));
  }, 120_000);

  afterAll(async () => {
    if (!target) return;
    const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}` };
    const found = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets?name=${encodeURIComponent(target.bucket)}`, { headers })).json()) as { buckets?: { id: string }[] };
    for (const b of found.buckets ?? []) await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets/${b.id}`, { method: 'DELETE', headers });
  });

  test('lifespan counts per bucket and new connections/s, and TLS percentiles, through Flux', async () => {
    const source = influxSource(target, 60_000);
    const p = parseRenderParams('lifespan', { service: 'churn', from: String(HOUR_FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    const none = { levels: [], rp: ROLLUP_RP };
    const [read, connects] = await Promise.all([readLevels(source, chartQuery(p), p.level, none, NOW, W), readLevels(source, newConnectsQuery(p), p.level, none, NOW, W)]);
    const chart = lifespanChart(p, read.rows, connects.rows, { level: read.level, baseMs: W });
    expect(perBucket(chart.request)).toEqual({ le_25: (3_600_000 / W) * CHURN.closed });
    for (const r of chart.request.rate as number[]) expect(r).toBeCloseTo(10, 6);
    const reuse = parseRenderParams('lifespan', { service: 'reuse', from: String(HOUR_FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    expect(perBucket(lifespanChart(reuse, await source.query(chartQuery(reuse)), []).request)).toEqual({ le_400000: 3_600_000 / W });

    const t = parseRenderParams('percentiles', { service: 'nest', metric: 'tls', from: String(HOUR_FROM), to: String(NOW) }, DEFAULT_LIMITS, NOW);
    const tc = percentilesChart(t, await source.query(chartQuery(t)));
    expect(tc.total).toBe((3_600_000 / W) * 22);
    const [s] = tc.request.series as { p50: number[]; error_pct: number[] }[];
    for (const v of s.p50) expect(v).toBeGreaterThan(290);
    for (const e of s.error_pct) expect(e).toBeCloseTo((2 / 22) * 100, 2);
  }, 120_000);
});
