/**
 * Issue 14: the renderer reads the coarsest rollup that keeps one bin per pixel column, on the real
 * InfluxDB 1.x and 2.x. The 10 s data is written as the agent writes it (histPoint + line protocol) and the
 * rollups in the schema of pkg/core (rollupHistPoints: one point per series per window, summed), into the
 * rollup retention policy (1.x) or bucket (2.x). The numbers drawn from the rollups must equal the numbers
 * drawn from the 10 s data, bin by bin and bucket by bucket. Charts over every host read the fleet rollups
 * (summed over hosts) that tcplat rollup's engine makes, and say so.
 */
import {
  BUCKET_COUNT,
  encodePoints,
  loadConfig,
  queryInfluxQL,
  quote,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  rollupHistPoints,
  writeLines,
  type InfluxTarget,
  type InfluxV1Target,
  type InfluxV2Target,
  type Point,
} from '@tcplat/core';
import type { FastifyInstance } from 'fastify';
import { rollupFleetRange, rollupRange, rollupStore } from '../agent/src/rollup/engine';
import { buildApp } from '../renderer/src/app';
import { chartQuery, heatmapChart } from '../renderer/src/charts';
import { RENDERER_OPTIONS, rendererConfig } from '../renderer/src/config';
import { influxSource, readLevels, type RollupWhere } from '../renderer/src/data';
import { DEFAULT_LIMITS, parseRenderParams, type ChartKind } from '../renderer/src/params';
import { WorkerPool } from '../renderer/src/pool';
import { seedPoints } from './renderer-support';
import { describeWith } from './support/prereq';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2, TEST_INFLUX2_TOKEN, TEST_INFLUX2_URL } from './support/influx';

const H = 3_600_000;
const D = 24 * H;
// "now" inside an hour and a minute: the newest windows of every rollup level are still open.
const NOW = Date.UTC(2026, 10, 30, 12, 34, 56);
const WIDTH = 1000;

/** Sparse history (one 10 s window in ~30 min per series, like quiet services) over 31 days, dense for the last 3 h. */
function history(fromMs: number): Point[] {
  const series = [
    { host: 'h1', service: 'api', dst: 'pg:5432', perWindow: 3, latency: (i: number, w: number) => 0.2 + ((i * 7 + w) % 13) * 0.05 },
    { host: 'h2', service: 'api', dst: 'pg:5432', perWindow: 2, latency: (i: number, w: number) => 1000 + ((i + w) % 5) * 20 },
    { host: 'h1', service: 'api', dst: 'redis:6379', result: 'refused' as const, perWindow: 1, latency: () => 0.04 },
  ];
  const points: Point[] = [];
  // One window in every 1,790 s (not a divisor of any rollup window: the windows drift through every offset).
  for (let t = Math.ceil(fromMs / 10_000) * 10_000; t < NOW - 3 * H; t += 1_790_000) points.push(...seedPoints(series, t, t + 10_000));
  // Every window of the last 3 h, with late extra points (the agent stamps them window start + k ns).
  points.push(...seedPoints(series, NOW - 3 * H, NOW, 10_000, true));
  return points;
}

/** The rollups of `points` at every level, as the agent's engine would have written them by `untilMs`. */
function rollups(points: Point[], untilMs: number): Point[] {
  const done = points.filter((p) => BigInt(p.timeNs!) < BigInt(untilMs) * 1_000_000n);
  return ROLLUP_WINDOWS.flatMap((w) => rollupHistPoints(done, w.name));
}

async function write(target: InfluxTarget, points: Point[]): Promise<void> {
  for (let i = 0; i < points.length; i += 5000) await writeLines(target, encodePoints(points.slice(i, i + 5000)));
}

async function createBucket(name: string): Promise<void> {
  const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}`, 'Content-Type': 'application/json' };
  const orgs = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/orgs?org=tcplat`, { headers })).json()) as { orgs: { id: string }[] };
  const res = await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets`, { method: 'POST', headers, body: JSON.stringify({ orgID: orgs.orgs[0].id, name, retentionRules: [] }) });
  if (res.status !== 201) throw new Error(`cannot create bucket ${name}: HTTP ${res.status} ${await res.text()}`);
}

async function deleteBucket(name: string): Promise<void> {
  const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}` };
  const found = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets?name=${encodeURIComponent(name)}`, { headers })).json()) as { buckets?: { id: string }[] };
  for (const b of found.buckets ?? []) await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets/${b.id}`, { method: 'DELETE', headers });
}

function flagsOf(t: InfluxTarget): string[] {
  return t.version === 1 ? ['--influx-url', t.url, '--influx-db', t.db] : ['--influx-url', t.url, '--influx-org', t.org, '--influx-bucket', t.bucket, '--influx-token', t.token];
}

interface Store {
  name: string;
  missing: () => string | null;
  /** A fresh database/bucket for the 10 s data, with (or without) its rollup RP/bucket. */
  make(withRollups: boolean): Promise<{ target: InfluxTarget; rollup: InfluxTarget | null; drop(): Promise<void> }>;
}

const STORES: Store[] = [
  {
    name: 'InfluxDB 1.x (InfluxQL, retention policy tcplat_rollups)',
    missing: missingInflux,
    async make(withRollups) {
      const target = await freshDatabase('resolution');
      if (withRollups) await queryInfluxQL({ ...target, db: '' }, `CREATE RETENTION POLICY ${quote('influxql-ident', ROLLUP_RP)} ON ${quote('influxql-ident', target.db)} DURATION INF REPLICATION 1`, { method: 'POST' });
      return { target, rollup: withRollups ? ({ ...target, rp: ROLLUP_RP } as InfluxV1Target) : null, drop: () => dropDatabase(target) };
    },
  },
  {
    name: 'InfluxDB 2.x (Flux, bucket <bucket>_rollups)',
    missing: missingInflux2,
    async make(withRollups) {
      const target = await freshBucket('resolution');
      const rollupBucket = target.bucket + ROLLUP_BUCKET_SUFFIX;
      if (withRollups) await createBucket(rollupBucket);
      return {
        target,
        rollup: withRollups ? ({ ...target, bucket: rollupBucket } as InfluxV2Target) : null,
        drop: async () => {
          await deleteBucket(target.bucket);
          await deleteBucket(rollupBucket);
        },
      };
    },
  },
];

/** The renderer on a target, its worker pool watched so a test can see what each chart asked the workers to draw. */
async function renderer(target: InfluxTarget, extra: string[] = []): Promise<{ app: FastifyInstance; drawn: Record<string, unknown>[]; base: string }> {
  const config = rendererConfig(loadConfig(RENDERER_OPTIONS, [...flagsOf(target), '--log-level', 'silent', '--cache-mb', '0', '--workers', '1', '--query-timeout', '120s', ...extra], {}).values);
  const pool = new WorkerPool({ python: config.python, workers: 1, queue: 8, timeoutMs: 60_000 });
  await pool.start();
  const drawn: Record<string, unknown>[] = [];
  const render = pool.render.bind(pool);
  pool.render = (req) => {
    drawn.push(req);
    return render(req);
  };
  const app = await buildApp({ config, pool, now: () => NOW });
  app.addHook('onClose', async () => pool.close());
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, drawn, base };
}

/** Per bin, the connects per bucket a heatmap request draws. */
function cells(req: Record<string, unknown>): number[][] {
  const counts = req.counts as number[];
  const out: number[][] = [];
  for (let i = 0; i < counts.length; i += BUCKET_COUNT) out.push(counts.slice(i, i + BUCKET_COUNT));
  return out;
}

const WHERE_NONE: RollupWhere = { levels: [], rp: ROLLUP_RP };

for (const store of STORES) {
  describeWith(store.missing(), `renderer resolution on ${store.name}`, () => {
    let made: Awaited<ReturnType<Store['make']>>;
    let points: Point[];
    const where: RollupWhere = { levels: ROLLUP_WINDOWS.map((w) => w.name), rp: ROLLUP_RP };

    beforeAll(async () => {
      made = await store.make(true);
      points = history(NOW - 32 * D);
      await write(made.target, points);
      // The agent recomputes rollups every 30 s: the last ~minute is not in them yet.
      await write(made.rollup!, rollups(points, NOW - 60_000));
    }, 300_000);
    afterAll(async () => made?.drop());

    const params = (kind: ChartKind, rangeMs: number, width = WIDTH) => parseRenderParams(kind, { from: String(NOW - rangeMs), to: String(NOW), width: String(width) }, DEFAULT_LIMITS, NOW);

    test('the rule: 1 h reads the 10 s data, 24 h the 10 min rollups, 7 d and 30 d the 1 h rollups (1,000 px); bins are whole windows', () => {
      const picked = [H, D, 7 * D, 30 * D].map((r) => {
        const p = params('heatmap', r);
        expect(p.windowMs % { base: 10_000, '1m': 60_000, '10m': 600_000, '1h': H }[p.level]).toBe(0);
        return [p.level, p.windowMs];
      });
      expect(picked).toEqual([
        ['base', 20_000],
        ['10m', 600_000],
        ['1h', H],
        ['1h', 6 * H],
      ]);
      // A narrower picture at 24 h: 400 px gives 60 bins of 30 min, still 10 min rollups; 2,000 px: 5 min bins of 1 min rollups.
      expect([params('heatmap', D, 400).level, params('heatmap', D, 2000).level]).toEqual(['10m', '1m']);
    });

    test.each([
      ['24 h', D],
      ['7 d', 7 * D],
      ['30 d', 30 * D],
    ])('%s: the counts drawn from the rollups equal the counts drawn from the 10 s data, per bin and bucket', async (_name, rangeMs) => {
      const source = influxSource(made.target, 60_000);
      const p = params('heatmap', rangeMs);
      const fromRollups = await readLevels(source, chartQuery(p), p.level, where, NOW, 10_000);
      const from10s = await readLevels(source, chartQuery(p), 'base', WHERE_NONE, NOW, 10_000);
      expect(fromRollups.level).not.toBe('base');
      expect(fromRollups.fallback).toBeUndefined();
      // The newest windows come from finer levels, down to the 10 s data for the last minutes.
      expect(fromRollups.parts[0].level).toBe(p.level);
      expect(fromRollups.parts.at(-1)!.level).toBe('base');
      expect(fromRollups.parts.at(-1)!.fromMs).toBeGreaterThanOrEqual(NOW - 3 * 60_000);
      const a = heatmapChart(p, fromRollups.rows);
      const b = heatmapChart(p, from10s.rows);
      expect(a.total).toBeGreaterThan(0);
      expect(cells(a.request)).toEqual(cells(b.request));
      // Percentile overlays come from the same counts and the same min/max.
      const po = { ...p, overlays: ['p50', 'p99', 'max'] as const } as typeof p;
      const oa = heatmapChart(po, (await readLevels(source, chartQuery(po), p.level, where, NOW, 10_000)).rows).request.overlays as Record<string, (number | null)[]>;
      const ob = heatmapChart(po, (await readLevels(source, chartQuery(po), 'base', WHERE_NONE, NOW, 10_000)).rows).request.overlays as Record<string, (number | null)[]>;
      expect(oa.max.some((v) => v !== null)).toBe(true);
      expect(oa).toEqual(ob);
    }, 120_000);

    test('through HTTP: the header and the subtitle say which resolution was read, and the last minute (not yet rolled up) is drawn', async () => {
      const r = await renderer(made.target);
      try {
        for (const [range, level, label] of [
          [H, 'base', '20 s bins of 10 s data'],
          [D, '10m', '10 min bins of 10 min rollups'],
          [7 * D, '1h', '1 h bins of 1 h rollups'],
          [30 * D, '1h', '6 h bins of 1 h rollups'],
        ] as const) {
          const res = await fetch(`${r.base}/render/heatmap.png?from=${NOW - range}&to=${NOW}&width=${WIDTH}`);
          expect(res.status).toBe(200);
          expect(res.headers.get('x-tcplat-resolution')).toBe(level);
          expect(res.headers.get('x-tcplat-rollup-fallback')).toBeNull();
          const req = r.drawn.at(-1)!;
          expect(req.subtitle).toContain(label);
        }
        // Percentile charts read the same level.
        const pres = await fetch(`${r.base}/render/percentiles.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
        expect(pres.headers.get('x-tcplat-resolution')).toBe('1h');
        // The connects of the last 60 s are only in the 10 s data; the 7 d chart's last bin has them all.
        const last = points.filter((pt) => BigInt(pt.timeNs!) >= BigInt(Math.floor(NOW / H) * H) * 1_000_000n);
        const want = last.reduce((n, pt) => n + Number((pt.fields.count as { value: number }).value), 0);
        await fetch(`${r.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
        const bins = cells(r.drawn.at(-1)!);
        expect(bins.at(-1)!.reduce((x, y) => x + y, 0)).toBe(want);
      } finally {
        await r.app.close();
      }
    }, 300_000);

    test("rollups made by the agent's own engine (agent/src/rollup rollupRange) are read and draw the 10 s data's counts", async () => {
      const eng = await store.make(true);
      try {
        const pts = history(NOW - 8 * D).filter((pt) => BigInt(pt.timeNs!) >= BigInt(NOW - 7 * D) * 1_000_000n);
        await write(eng.target, pts);
        await rollupRange({ store: rollupStore(eng.target), fromMs: NOW - 8 * D, toMs: NOW });
        const source = influxSource(eng.target, 60_000);
        for (const rangeMs of [D, 7 * D]) {
          const p = params('heatmap', rangeMs);
          const got = await readLevels(source, chartQuery(p), p.level, where, NOW, 10_000);
          const want = await readLevels(source, chartQuery(p), 'base', WHERE_NONE, NOW, 10_000);
          expect(got.fallback).toBeUndefined();
          expect(got.parts[0].level).toBe(p.level);
          expect(cells(heatmapChart(p, got.rows).request)).toEqual(cells(heatmapChart(p, want.rows).request));
        }
      } finally {
        await eng.drop();
      }
    }, 300_000);

    test('10 s data gone (short retention), rollups kept: a month is still drawn from the rollups', async () => {
      const only = await store.make(true);
      try {
        const old = history(NOW - 32 * D).filter((pt) => BigInt(pt.timeNs!) < BigInt(NOW - 7 * D) * 1_000_000n);
        // Only the rollups of the old history exist (its 10 s data expired).
        await write(only.rollup!, rollups(old, NOW));
        const source = influxSource(only.target, 60_000);
        const p = params('heatmap', 30 * D);
        const got = await readLevels(source, chartQuery(p), p.level, where, NOW, 10_000);
        const want = old.filter((pt) => BigInt(pt.timeNs!) >= BigInt(p.binFromMs) * 1_000_000n).reduce((n, pt) => n + Number((pt.fields.count as { value: number }).value), 0);
        expect(want).toBeGreaterThan(0);
        expect(heatmapChart(p, got.rows).total).toBe(want);
        expect(got.fallback).toBeUndefined();
      } finally {
        await only.drop();
      }
    }, 120_000);

    test('no rollups at all (no RP/bucket, or an empty one), or rollups younger than the range: the 10 s data is drawn and the chart says so', async () => {
      const none = await store.make(false);
      const empty = await store.make(true);
      const partial = await store.make(true);
      try {
        const pts = history(NOW - 8 * D).filter((pt) => BigInt(pt.timeNs!) >= BigInt(NOW - 7 * D) * 1_000_000n);
        for (const m of [none, empty, partial]) await write(m.target, pts);
        // Rollups made only for the last 2 days (the agent upgraded then; nobody ran tcplat rollup).
        await write(partial.rollup!, rollups(pts.filter((pt) => BigInt(pt.timeNs!) >= BigInt(NOW - 2 * D) * 1_000_000n), NOW - 60_000));
        const p = params('heatmap', 7 * D);
        const truth = heatmapChart(p, (await readLevels(influxSource(none.target, 60_000), chartQuery(p), 'base', WHERE_NONE, NOW, 10_000)).rows);
        expect(truth.total).toBeGreaterThan(0);
        for (const [m, fallback, note] of [
          [none, 'missing', /no rollups \((retention policy tcplat_rollups|bucket of the rollups) not found\): read the 10 s data; run tcplat rollup/],
          [empty, 'empty', /no 1 h rollups in this range: read the 10 s data; run tcplat rollup/],
          [partial, 'partial', /before 2026-11-28 1[0-9]:00 UTC: 10 s data \(no 1 h rollups there; run tcplat rollup\)/],
        ] as const) {
          const r = await renderer(m.target);
          try {
            const res = await fetch(`${r.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
            expect(res.status).toBe(200);
            expect(res.headers.get('x-tcplat-no-data')).toBeNull();
            expect(res.headers.get('x-tcplat-rollup-fallback')).toBe(fallback);
            expect(res.headers.get('cache-control')).toBe('private, max-age=60');
            const req = r.drawn.at(-1)!;
            expect(req.subtitle).toMatch(note);
            expect(cells(req)).toEqual(cells(truth.request));
            const metrics = await (await fetch(`${r.base}/metrics`)).text();
            expect(metrics).toContain(`tcplat_renderer_rollup_fallbacks_total{reason="${fallback}"} 1`);
          } finally {
            await r.app.close();
          }
        }
        // --rollups none: the 10 s data, no fallback to speak of.
        const r = await renderer(none.target, ['--rollups', 'none']);
        try {
          const res = await fetch(`${r.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
          expect([res.headers.get('x-tcplat-resolution'), res.headers.get('x-tcplat-rollup-fallback')]).toEqual(['base', null]);
          expect(r.drawn.at(-1)!.subtitle).toContain('1 h bins of 10 s data');
        } finally {
          await r.app.close();
        }
      } finally {
        for (const m of [none, empty, partial]) await m.drop();
      }
    }, 600_000);

    test('a chart over every host reads the fleet rollups made by tcplat rollup (rollupFleetRange), a host filter the per-host ones; both draw the 10 s data\'s counts', async () => {
      const fl = await store.make(true);
      const stale = await store.make(true);
      try {
        const pts = history(NOW - 8 * D).filter((pt) => BigInt(pt.timeNs!) >= BigInt(NOW - 7 * D) * 1_000_000n);
        for (const m of [fl, stale]) {
          await write(m.target, pts);
          await rollupRange({ store: rollupStore(m.target), fromMs: NOW - 8 * D, toMs: NOW });
        }
        await rollupFleetRange({ store: rollupStore(fl.target), fromMs: NOW - 8 * D, toMs: NOW });
        // Fleet rollups that stop 2 days ago (tcplat rollup --follow stopped then).
        await rollupFleetRange({ store: rollupStore(stale.target), fromMs: NOW - 8 * D, toMs: NOW - 2 * D });
        const fleetWhere: RollupWhere = { ...where, fleet: true };
        for (const [m, note] of [
          [fl, undefined],
          [stale, /^after 2026-11-28 1[0-9]:00 UTC: per-host data \(fleet rollups end there: is tcplat rollup --follow running\?\)$/],
        ] as const) {
          const source = influxSource(m.target, 60_000);
          for (const rangeMs of [D, 7 * D]) {
            const p = params('heatmap', rangeMs);
            const got = await readLevels(source, chartQuery(p), p.level, fleetWhere, NOW, 10_000);
            const want = await readLevels(source, chartQuery(p), 'base', WHERE_NONE, NOW, 10_000);
            if (m === stale && rangeMs === D) {
              // The last day has no fleet rollups at all: per host, as without them.
              expect(got.fleet).toBeUndefined();
            } else {
              expect({ fleet: got.fleet, first: got.parts[0] }).toEqual({ fleet: true, first: expect.objectContaining({ level: p.level, fleet: true, fromMs: p.binFromMs }) });
              if (note) expect(got.note).toMatch(note);
              else expect(got.note).toBeUndefined();
            }
            expect(got.fallback).toBeUndefined();
            const a = heatmapChart(p, got.rows);
            expect(a.total).toBeGreaterThan(0);
            expect(cells(a.request)).toEqual(cells(heatmapChart(p, want.rows).request));
          }
        }
        const r = await renderer(fl.target);
        try {
          const res = await fetch(`${r.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
          expect([res.status, res.headers.get('x-tcplat-resolution'), res.headers.get('x-tcplat-fleet-rollups')]).toEqual([200, '1h', 'true']);
          expect(r.drawn.at(-1)!.subtitle).toContain('1 h bins of 1 h fleet rollups');
          const one = await fetch(`${r.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}&host=h1`);
          expect([one.status, one.headers.get('x-tcplat-resolution'), one.headers.get('x-tcplat-fleet-rollups')]).toEqual([200, '1h', null]);
          expect(r.drawn.at(-1)!.subtitle).toContain('1 h bins of 1 h rollups');
          const p1 = parseRenderParams('heatmap', { from: String(NOW - 7 * D), to: String(NOW), width: String(WIDTH), host: 'h1' }, DEFAULT_LIMITS, NOW);
          const want1 = await readLevels(influxSource(fl.target, 60_000), chartQuery(p1), 'base', WHERE_NONE, NOW, 10_000);
          expect(cells(r.drawn.at(-1)!)).toEqual(cells(heatmapChart(p1, want1.rows).request));
        } finally {
          await r.app.close();
        }
        // --no-fleet-rollups: the per-host rollups, as before.
        const off = await renderer(fl.target, ['--no-fleet-rollups']);
        try {
          const res = await fetch(`${off.base}/render/heatmap.png?from=${NOW - 7 * D}&to=${NOW}&width=${WIDTH}`);
          expect(res.headers.get('x-tcplat-fleet-rollups')).toBeNull();
          expect(off.drawn.at(-1)!.subtitle).toContain('1 h bins of 1 h rollups');
        } finally {
          await off.app.close();
        }
      } finally {
        await fl.drop();
        await stale.drop();
      }
    }, 600_000);
  });
}

test('rollup flags: levels, RP and bucket are checked at start with a message naming the flag', () => {
  const cfg = (flags: string[]) => rendererConfig(loadConfig(RENDERER_OPTIONS, ['--influx-db', 'x', ...flags], {}).values);
  expect(cfg([]).rollups).toEqual({ levels: ['1m', '10m', '1h'], rp: 'tcplat_rollups', bucket: undefined, fleet: true });
  expect(cfg(['--rollups', '1h,10m', '--rollup-rp', 'long']).rollups).toEqual({ levels: ['1h', '10m'], rp: 'long', bucket: undefined, fleet: true });
  expect([cfg(['--no-fleet-rollups']).rollups.fleet, cfg(['--rollups', 'none']).rollups.fleet]).toEqual([false, false]);
  expect(cfg(['--rollups', 'none']).limits.rollupLevels).toEqual([]);
  expect(() => cfg(['--rollups', '5m'])).toThrow(/--rollups: "5m" is not a rollup level/);
  expect(() => cfg(['--rollup-rp', ''])).toThrow(/--rollup-rp: expected a name/);
  expect(() => cfg(['--rollup-bucket', 'b'])).toThrow(/--rollup-bucket is for InfluxDB 2.x/);
  const env = loadConfig(RENDERER_OPTIONS, ['--influx-db', 'x'], { TCPLAT_ROLLUP_RP: 'from_env' }).values;
  expect(rendererConfig(env).rollups.rp).toBe('from_env');
});
