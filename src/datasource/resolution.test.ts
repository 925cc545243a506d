/**
 * Issue 14: the datasource reads the coarsest rollup that fits Grafana's interval, on the real InfluxDB
 * 1.x (InfluxQL) and 2.x (Flux). Grafana's backend_srv is replaced by a pass-through to the real server
 * (tests/support/datasource-backend.ts). Data: the agent's 10 s points and their
 * rollups (pkg/core rollupHistPoints), in the rollup retention policy / bucket.
 */
import crypto from 'node:crypto';
import { dateTime, type DataFrame, type DataQueryRequest, type DataSourceInstanceSettings } from '@grafana/data';
import { FLEET_ROLLUP_WINDOWS, fleetRollupMeasurement, Histogram, histPoint, MEASUREMENT, ROLLUP_BUCKET_SUFFIX, ROLLUP_RP, ROLLUP_WINDOWS, rollupHistPoints, type Point } from '@tcplat/core';
import { lastValueFrom } from 'rxjs';
import { backend, bucket2, INFLUX1, INFLUX2, TOKEN2, write1, write2, call } from '../../tests/support/datasource-backend';
import { describeWith } from '../../tests/support/prereq';
import { TcplatDataSource } from './datasource';
import type { Metric, TcplatOptions, TcplatQuery } from './types';

jest.mock('@grafana/runtime', () => jest.requireActual('../../tests/support/datasource-backend').grafanaRuntime());

const H = 3_600_000;
const D = 24 * H;
const NOW = Math.floor(Date.now() / 10_000) * 10_000;

function points(fromMs: number): Point[] {
  const out: Point[] = [];
  const series = [
    { host: 'h1', service: 'api', dst: 'pg:5432', result: 'ok' as const, n: 3, base: 0.3 },
    { host: 'h2', service: 'api', dst: 'pg:5432', result: 'ok' as const, n: 2, base: 900 },
    { host: 'h1', service: 'api', dst: 'pg:5432', result: 'refused' as const, n: 1, base: 0.04 },
  ];
  const add = (t: number, k: number) => {
    for (const s of series) {
      const h = new Histogram();
      for (let i = 0; i < s.n; i++) h.add(s.base * (1 + ((i + k) % 7) / 10));
      out.push(histPoint(s, h, BigInt(t) * 1_000_000n));
    }
  };
  let k = 0;
  for (let t = Math.ceil(fromMs / 10_000) * 10_000; t < NOW - 3 * H; t += 1_790_000) add(t, k++);
  for (let t = NOW - 3 * H; t <= NOW; t += 10_000) add(t, k++);
  return out;
}

/** The fleet rollups of `pts` (every host's points summed per service, dst, result), as tcplat rollup writes them. */
function fleetRollups(pts: Point[]): Point[] {
  const hostless = pts.map((p) => ({ ...p, tags: { ...p.tags, host: undefined } }));
  return FLEET_ROLLUP_WINDOWS.flatMap((w) => rollupHistPoints(hostless, w).map((p) => ({ ...p, measurement: fleetRollupMeasurement(MEASUREMENT.connectHist, w) })));
}

function ds(jsonData: Partial<TcplatOptions>): TcplatDataSource {
  return new TcplatDataSource({
    id: 1,
    uid: 'tcplat',
    type: 'tcplat-connect-datasource',
    name: 'tcplat',
    url: '/api/datasources/proxy/uid/tcplat',
    jsonData: { influxUrl: backend.upstream.influxUrl, ...jsonData },
    meta: {} as DataSourceInstanceSettings['meta'],
    readOnly: false,
    access: 'proxy',
  } as DataSourceInstanceSettings<TcplatOptions>);
}

function request(rangeMs: number, intervalMs: number, metric: Metric): DataQueryRequest<TcplatQuery> {
  return {
    targets: [{ refId: 'A', version: 1, metric, groupBy: ['host'] }],
    range: { from: dateTime(NOW - rangeMs), to: dateTime(NOW), raw: { from: 'now', to: 'now' } },
    intervalMs,
    scopedVars: {},
  } as unknown as DataQueryRequest<TcplatQuery>;
}

const values = (frames: DataFrame[]) => frames.map((f) => ({ name: f.name, fields: f.fields.map((x) => [x.name, [...x.values]]) }));

interface Store {
  name: string;
  missing: string | null;
  setup(): Promise<{ json: Partial<TcplatOptions>; noRollups: Partial<TcplatOptions> }>;
}

const STORES: Store[] = [
  {
    name: 'InfluxDB 1.x (InfluxQL)',
    missing: INFLUX1 ? null : 'no test InfluxDB: TCPLAT_TEST_INFLUX_URL is unset (run through npm test)',
    async setup() {
      backend.upstream = { influxUrl: INFLUX1, token: '' };
      const db = `res_${crypto.randomBytes(4).toString('hex')}`;
      const bare = `${db}_bare`;
      for (const d of [db, bare]) await call('POST', `${INFLUX1}/query`, `q=${encodeURIComponent(`CREATE DATABASE "${d}"`)}`, { 'Content-Type': 'application/x-www-form-urlencoded' });
      await call('POST', `${INFLUX1}/query`, `q=${encodeURIComponent(`CREATE RETENTION POLICY "${ROLLUP_RP}" ON "${db}" DURATION INF REPLICATION 1`)}`, { 'Content-Type': 'application/x-www-form-urlencoded' });
      const pts = points(NOW - 31 * D);
      await write1(db, null, pts);
      await write1(bare, null, pts);
      const done = pts.filter((p) => BigInt(p.timeNs!) < BigInt(NOW - 60_000) * 1_000_000n);
      await write1(db, ROLLUP_RP, [...ROLLUP_WINDOWS.flatMap((w) => rollupHistPoints(done, w.name)), ...fleetRollups(done)]);
      return { json: { dialect: 'influxql', database: db }, noRollups: { dialect: 'influxql', database: bare } };
    },
  },
  {
    name: 'InfluxDB 2.x (Flux)',
    missing: INFLUX2 && TOKEN2 ? null : 'no test InfluxDB 2.x: TCPLAT_TEST_INFLUX2_URL/TOKEN are unset (run through npm test)',
    async setup() {
      backend.upstream = { influxUrl: INFLUX2, token: TOKEN2 };
      const b = `res_${crypto.randomBytes(4).toString('hex')}`;
      const bare = `${b}_bare`;
      for (const name of [b, b + ROLLUP_BUCKET_SUFFIX, bare]) await bucket2(name);
      const pts = points(NOW - 31 * D);
      await write2(b, pts);
      await write2(bare, pts);
      const done = pts.filter((p) => BigInt(p.timeNs!) < BigInt(NOW - 60_000) * 1_000_000n);
      await write2(b + ROLLUP_BUCKET_SUFFIX, [...ROLLUP_WINDOWS.flatMap((w) => rollupHistPoints(done, w.name)), ...fleetRollups(done)]);
      return { json: { dialect: 'flux', org: 'tcplat', bucket: b }, noRollups: { dialect: 'flux', org: 'tcplat', bucket: bare } };
    },
  },
];

for (const store of STORES) {
  describeWith(store.missing, `datasource resolution on ${store.name}`, () => {
    let cfg: Awaited<ReturnType<Store['setup']>>;
    beforeAll(async () => {
      cfg = await store.setup();
    }, 180_000);
    beforeEach(() => {
      backend.upstream = store.name.startsWith('InfluxDB 1') ? { influxUrl: INFLUX1, token: '' } : { influxUrl: INFLUX2, token: TOKEN2 };
    });

    // Grafana's intervals for a ~1,000 px panel: 1 h -> 2 s (10 s data), 24 h -> 1 min, 7 d -> 10 min, 30 d -> 30 min; a 200 px one at 30 d -> 3 h.
    test.each([
      ['1 h', H, 2_000, 'base', 10_000],
      ['24 h', D, 60_000, '1m', 60_000],
      ['7 d', 7 * D, 600_000, '10m', 600_000],
      ['30 d', 30 * D, 1_800_000, '10m', 1_800_000],
      ['30 d, narrow', 30 * D, 3 * H, '1h', 3 * H],
    ])('%s (range %d ms, interval %d ms): reads level %s, says so in the frame, and its numbers equal the 10 s data’s', async (_n, rangeMs, intervalMs, level, windowMs) => {
      for (const metric of ['rate', 'p99', 'buckets'] as const) {
        // Buckets are summed over every host (one heatmap): that query reads the fleet rollups where there are some.
        const fleet = metric === 'buckets' && (FLEET_ROLLUP_WINDOWS as readonly string[]).includes(level);
        backend.sent.length = 0;
        const res = await lastValueFrom(ds(cfg.json).query(request(rangeMs, intervalMs, metric)));
        expect(res.errors).toBeUndefined();
        expect(res.data.length).toBeGreaterThan(0);
        for (const f of res.data as DataFrame[]) {
          expect(f.meta?.custom).toMatchObject({ resolution: level });
          expect(f.meta?.custom?.rollupFallback).toBeUndefined();
          const label = `${level === '1h' ? '1 h' : level === '10m' ? '10 min' : '1 min'} ${fleet ? 'fleet rollups' : 'rollups'}`;
          if (level !== 'base') expect(f.meta?.notices?.some((n) => n.severity === 'info' && n.text.includes(label))).toBe(true);
        }
        // The first query reads the picked level (in the rollup RP / bucket); the bins are whole windows of it.
        const measurement = level === 'base' ? 'tcp_connect_hist' : fleet ? fleetRollupMeasurement(MEASUREMENT.connectHist, level as '10m' | '1h') : `tcp_connect_hist_${level}`;
        expect(backend.sent[0]).toContain(store.name.startsWith('InfluxDB 1') ? (level === 'base' ? `FROM "${measurement}"` : `FROM "${ROLLUP_RP}"."${measurement}"`) : `r._measurement == "${measurement}"`);
        expect(backend.sent[0]).toContain(store.name.startsWith('InfluxDB 1') ? `time(${windowMs}ms)` : `every: ${windowMs}ms`);
        const base = await lastValueFrom(ds({ ...cfg.json, rollups: false }).query(request(rangeMs, intervalMs, metric)));
        expect((base.data as DataFrame[])[0].meta?.custom).toMatchObject({ resolution: 'base' });
        expect(values(res.data)).toEqual(values(base.data));
      }
    }, 120_000);

    test('a query over every host (not grouped by host) reads the fleet rollups, says so, and gives the 10 s data’s numbers; grouped by host (rate, p99) it reads per host', async () => {
      for (const metric of ['rate', 'p99', 'buckets'] as const) {
        const req = request(7 * D, 600_000, metric);
        req.targets = [{ ...req.targets[0], groupBy: [] }];
        backend.sent.length = 0;
        const res = await lastValueFrom(ds(cfg.json).query(req));
        expect(res.errors).toBeUndefined();
        const f = (res.data as DataFrame[])[0];
        expect(f.meta?.custom).toMatchObject({ resolution: '10m', resolutionLabel: '10 min fleet rollups', fleetRollups: true });
        expect(f.meta?.notices?.some((n) => n.severity === 'info' && n.text.includes('10 min fleet rollups'))).toBe(true);
        const fleet = fleetRollupMeasurement(MEASUREMENT.connectHist, '10m');
        expect(backend.sent[0]).toContain(store.name.startsWith('InfluxDB 1') ? `FROM "${ROLLUP_RP}"."${fleet}"` : `r._measurement == "${fleet}"`);
        const base = await lastValueFrom(ds({ ...cfg.json, rollups: false }).query(req));
        expect(values(res.data)).toEqual(values(base.data));
        // fleetRollups: false reads the per-host rollups, with the same numbers.
        backend.sent.length = 0;
        const off = await lastValueFrom(ds({ ...cfg.json, fleetRollups: false }).query(req));
        expect((off.data as DataFrame[])[0].meta?.custom?.fleetRollups).toBeUndefined();
        expect(backend.sent.some((q) => q.includes('_fleet_'))).toBe(false);
        expect(values(off.data)).toEqual(values(base.data));
      }
      // Grouped by host (the other tests' requests): never the fleet rollups.
      backend.sent.length = 0;
      await lastValueFrom(ds(cfg.json).query(request(7 * D, 600_000, 'rate')));
      expect(backend.sent.some((q) => q.includes('_fleet_'))).toBe(false);
    }, 120_000);

    test('no rollups (no RP / bucket): the 10 s data, and a warning on the panel naming tcplat rollup', async () => {
      const res = await lastValueFrom(ds(cfg.noRollups).query(request(7 * D, 600_000, 'rate')));
      expect(res.errors).toBeUndefined();
      const f = (res.data as DataFrame[])[0];
      expect(f.meta?.custom).toMatchObject({ resolution: 'base', rollupFallback: 'missing' });
      expect(f.meta?.notices?.find((n) => n.severity === 'warning')?.text).toMatch(/no rollups .*not found.*run tcplat rollup/);
      const good = await lastValueFrom(ds(cfg.json).query(request(7 * D, 600_000, 'rate')));
      expect(values(res.data)).toEqual(values(good.data));
    }, 120_000);
  });
}
