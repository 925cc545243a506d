import fc from 'fast-check';
import { BUCKET_FIELDS, connectLine, HIST_FIELD, Histogram, IntValue, MEASUREMENT, parseLine, RESULTS, type ConnectEvent, type ConnectResult, type Point } from '@tcplat/core';
import { Metrics, StageCounters } from '../metrics';
import { silentLogger, type EnrichedConnect, type EnrichedHist, type EnrichedSession, type Logger } from '../types';
import { Aggregator } from './aggregator';
import { OTHER, SeriesBudget } from './budget';

const T0 = 1_764_100_000_000_000_000n; // a whole 10 s window start
const S = 1_000_000_000n;

function ev(tsNs: bigint, over: Partial<EnrichedConnect> = {}): EnrichedConnect {
  const base: ConnectEvent = {
    type: 'connect', tsNs, latencyNs: 2_000_000, result: 'ok', errno: 0, synRetrans: 0, pid: 1, tid: 1, comm: 'ruby', cgroupId: '0',
    family: 'ipv4', saddr: '127.0.0.1', sport: 1, daddr: '10.0.0.1', dport: 5432,
  };
  return { ...base, service: 'rails', dst: 'pg', ...over };
}

function session(tsNs: bigint, over: Partial<EnrichedSession> = {}): EnrichedSession {
  return {
    type: 'session', tsNs, lifespanMs: 5, txKb: 1, rxKb: 2, pid: 1, comm: 'ruby', family: 'ipv4', saddr: '127.0.0.1', sport: 40000, daddr: '10.0.0.1', dport: 5432,
    service: 'rails', dst: 'pg', ...over,
  };
}

function make(maxSeries: number, opts: { horizonS?: number; log?: Logger; rawLimit?: number } = {}) {
  const metrics = new Metrics();
  const budget = new SeriesBudget({ maxSeries, horizonS: opts.horizonS ?? 3600 }, metrics, opts.log ?? null);
  const a = new Aggregator({ host: 'h', windowNs: 10n * S, rawLimit: opts.rawLimit ?? 0, runId: 1, random: () => 0.5, budget }, new StageCounters(metrics, 'aggregate'));
  const points: Point[] = [];
  const flush = (final = false) => a.flush((p) => points.push('raw' in p ? parseLine(connectLine(p)) : p), final);
  return { a, budget, metrics, points, flush };
}

const num = (v: unknown) => (v instanceof IntValue ? Number(v.value) : (v as number));
const hist = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.connectHist);
const raw = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.connect);
const seriesKey = (p: Point) => p.measurement + JSON.stringify(Object.entries(p.tags ?? {}).sort());
const distinctSeries = (ps: Point[]) => new Set(ps.map(seriesKey));
const countOf = (ps: Point[]) => ps.reduce((n, p) => n + num(p.fields[HIST_FIELD.count]), 0);

describe('folding', () => {
  test('past the budget, dst folds first: the service and result stay, every event still counts in the histogram', () => {
    const { a, points, flush, budget } = make(3);
    // One service meets 6 destinations; 2 events each, in one window.
    for (let d = 0; d < 6; d++) for (let k = 0; k < 2; k++) a.add(ev(T0 + BigInt(d * 2 + k) * 1000n, { dst: `10.0.0.${d}:80`, latencyNs: 1_000_000 * (d + 1) }));
    flush(true);
    const h = hist(points);
    expect(distinctSeries(h).size).toBe(4);
    const byDst = new Map(h.map((p) => [p.tags!.dst, p]));
    expect([...byDst.keys()].sort()).toEqual(['10.0.0.0:80', '10.0.0.1:80', '10.0.0.2:80', OTHER]);
    const other = byDst.get(OTHER)!;
    expect(other.tags).toEqual({ dst: OTHER, host: 'h', result: 'ok', service: 'rails' });
    // The three folded series merged into one point (they share the window's time): counts, sums, min/max exact.
    expect(h.filter((p) => p.tags!.dst === OTHER)).toHaveLength(1);
    expect(num(other.fields[HIST_FIELD.count])).toBe(6);
    expect(other.fields[HIST_FIELD.sumMs]).toBeCloseTo(2 * (4 + 5 + 6), 9);
    expect(num(other.fields[HIST_FIELD.minMs])).toBe(4);
    expect(num(other.fields[HIST_FIELD.maxMs])).toBe(6);
    expect(BUCKET_FIELDS.reduce((n, f) => n + num(other.fields[f]), 0)).toBe(6);
    expect(countOf(h)).toBe(12);
    // Raw points: the same budget per measurement; folded ones keep service, comm, result, family.
    const r = raw(points);
    expect(r).toHaveLength(12);
    expect(r.filter((p) => p.tags!.dst === OTHER)).toHaveLength(6);
    for (const p of r) expect(p.tags).toMatchObject({ service: 'rails', comm: 'ruby', result: 'ok', family: 'ipv4', host: 'h' });
    const st = budget.status().measurements[MEASUREMENT.connectHist];
    expect(st).toMatchObject({ budget: 3, live: 3, other: 1, folded_series: 3, folded_points: { dst: 3, all: 0 } });
    expect(budget.status().measurements[MEASUREMENT.connect].folded_points.dst).toBe(6);
  });

  test('result never folds: a folded failure stays a failure in its own `other` series', () => {
    const { a, points, flush } = make(1);
    a.add(ev(T0, { dst: 'a' }));
    a.add(ev(T0 + 1n, { dst: 'b', result: 'refused' }));
    a.add(ev(T0 + 2n, { dst: 'c', result: 'timeout' }));
    flush(true);
    const h = hist(points);
    expect(h.map((p) => `${p.tags!.dst}/${p.tags!.result}`).sort()).toEqual(['a/ok', 'other/refused', 'other/timeout']);
  });

  test('when the `other` series themselves pass a tenth of the budget, service (and comm) fold too; the total stays bounded', () => {
    const { a, points, flush, budget } = make(10);
    // 200 services (named after short-lived processes), each to its own destination.
    for (let i = 0; i < 200; i++) a.add(ev(T0 + BigInt(i), { service: `job-${i}`, comm: `job-${i}`, dst: `10.1.${i >> 8}.${i & 255}:443` }));
    flush(true);
    const h = hist(points);
    // 10 own + 1 level-1 other (a tenth of 10) + 1 level-2 (service=other, dst=other).
    expect(distinctSeries(h).size).toBe(12);
    expect(h.filter((p) => p.tags!.service === OTHER && p.tags!.dst === OTHER)).toHaveLength(1);
    expect(countOf(h)).toBe(200);
    const r = raw(points);
    expect(distinctSeries(r).size).toBe(12);
    expect(r.filter((p) => p.tags!.comm === OTHER && p.tags!.service === OTHER)).toHaveLength(189);
    const st = budget.status().measurements[MEASUREMENT.connectHist];
    expect(st.folded_points).toEqual({ dst: 1, all: 189 });
  });

  test('a real destination named `other` joins the `other` series instead of overwriting its point', () => {
    const { a, points, flush } = make(1);
    a.add(ev(T0, { dst: 'a' }));
    a.add(ev(T0 + 1n, { dst: 'b' }));
    a.add(ev(T0 + 2n, { dst: OTHER }));
    flush(true);
    const h = hist(points).filter((p) => p.tags!.dst === OTHER);
    expect(h).toHaveLength(1);
    expect(num(h[0].fields[HIST_FIELD.count])).toBe(2);
  });

  test('sessions (tcp_session) have a budget of their own, by construction from their tags', () => {
    const { a, points, flush, budget } = make(2);
    for (let i = 0; i < 5; i++) a.add(session(T0 + BigInt(i) * S, { dst: `10.0.0.${i}:5432` }));
    flush(true);
    const s = points.filter((p) => p.measurement === MEASUREMENT.session);
    expect(s).toHaveLength(5);
    expect(s.filter((p) => p.tags!.dst === OTHER)).toHaveLength(3);
    expect(new Set(s.map((p) => String(p.timeNs))).size).toBe(5);
    expect(budget.status().measurements[MEASUREMENT.session]).toMatchObject({ live: 2, other: 1, folded_series: 3 });
  });

  test('a histogram measurement added later (tcp_session_hist, say) gets the budget and exact merging by construction', () => {
    const budget = new SeriesBudget({ maxSeries: 2, horizonS: 3600 }, null, null);
    const out: Point[] = [];
    const emit = budget.begin((p) => out.push(p as Point), 1_764_100_000);
    const h = (dst: string, count: number, min: number, max: number): Point => ({
      measurement: 'tcp_session_hist',
      tags: { dst, host: 'h', service: 'rails' },
      fields: { count: new IntValue(count), sum_ms: count * min, min_ms: min, max_ms: max, le_1: new IntValue(count) },
      timeNs: T0 + 5n,
    });
    for (const [i, d] of ['a', 'b', 'c', 'd', 'e'].entries()) emit(h(d, i + 1, i + 1, 10 * (i + 1)));
    budget.end((p) => out.push(p as Point));
    expect(out.map((p) => p.tags!.dst)).toEqual(['a', 'b', OTHER]);
    const other = out[2];
    expect(other.measurement).toBe('tcp_session_hist');
    expect(num(other.fields.count)).toBe(3 + 4 + 5);
    expect(num(other.fields.le_1)).toBe(12);
    expect(other.fields.sum_ms).toBe(9 + 16 + 25);
    expect(other.fields.min_ms).toBe(3);
    expect(other.fields.max_ms).toBe(50);
    expect(budget.status().measurements.tcp_session_hist).toMatchObject({ live: 2, other: 1, folded_series: 3 });
  });

  test('budget 0: nothing folds', () => {
    const { a, points, flush } = make(0);
    for (let i = 0; i < 50; i++) a.add(ev(T0 + BigInt(i), { dst: `d${i}` }));
    flush(true);
    expect(distinctSeries(hist(points)).size).toBe(50);
  });
});

describe('horizon', () => {
  test('a series quiet for the horizon frees its slot; a folded series that keeps writing stays folded', () => {
    const { a, points, flush, budget } = make(1, { horizonS: 600 });
    a.add(ev(T0, { dst: 'a' }));
    a.add(ev(T0 + 1n, { dst: 'b' }));
    flush();
    expect(hist(points).map((p) => p.tags!.dst).sort()).toEqual(['a', OTHER]);
    // 5 and 10 minutes later: only b writes (folded: decisions stick while a series is live).
    for (const m of [5n, 10n]) {
      points.length = 0;
      a.add(ev(T0 + m * 60n * S, { dst: 'b' }));
      flush();
      expect(hist(points).map((p) => p.tags!.dst)).toEqual([OTHER]);
    }
    // 11 minutes: a has been quiet for more than 600 s, so c gets its own series; a is folded now.
    points.length = 0;
    a.add(ev(T0 + 11n * 60n * S, { dst: 'c' }));
    a.add(ev(T0 + 11n * 60n * S + 1n, { dst: 'a' }));
    flush();
    expect(hist(points).map((p) => p.tags!.dst).sort()).toEqual(['c', OTHER]);
    expect(budget.status().measurements[MEASUREMENT.connectHist]).toMatchObject({ live: 1, folded_series: 2 });
  });

  test('histogram-only input (--probe-mode hist) expires by the time of its points', () => {
    const { a, points, flush } = make(1, { horizonS: 120 });
    const h = (tsNs: bigint, dst: string): EnrichedHist => {
      const hist = new Histogram();
      hist.add(1);
      return { type: 'hist', tsNs, endNs: tsNs + 10n * S, pid: 1, comm: 'ruby', cgroupId: '0', family: 'ipv4', daddr: '10.0.0.1', dport: 1, result: 'ok', errno: 0, synRetrans: 0, hist, service: 'rails', dst };
    };
    a.add(h(T0, 'a'));
    a.add(h(T0, 'b'));
    flush();
    expect(hist(points).map((p) => p.tags!.dst).sort()).toEqual(['a', OTHER]);
    // Three minutes later a is gone from the horizon: c gets its slot (two flushes: the time comes from points).
    points.length = 0;
    a.add(h(T0 + 180n * S, 'b'));
    flush();
    a.add(h(T0 + 190n * S, 'c'));
    flush();
    expect(hist(points).map((p) => p.tags!.dst)).toEqual([OTHER, 'c']);
  });

  test('memory is bounded: five minutes of scanning many destinations keeps at most the budget plus 4x in folded series', () => {
    const { a, flush, budget } = make(20, { horizonS: 60 });
    for (let s = 0; s < 300; s++) {
      for (let i = 0; i < 50; i++) a.add(ev(T0 + BigInt(s) * S + BigInt(i), { dst: `10.${s & 255}.${s >> 8}.${i}:80` }));
      flush();
      const st = budget.status().measurements[MEASUREMENT.connectHist];
      expect(st.live).toBeLessThanOrEqual(20);
      expect(st.folded_series).toBeLessThanOrEqual(80);
      expect(st.other).toBeLessThanOrEqual(2 + 1);
    }
    expect(budget.status().measurements[MEASUREMENT.connectHist].untracked_folds).toBeGreaterThan(0);
  });
});

describe('status and log', () => {
  test('/api/status names the top contributors; /metrics counts folded points; one log line for the burst', () => {
    const lines: { obj: Record<string, unknown>; msg: string }[] = [];
    const log: Logger = { ...silentLogger, warn: (obj, msg) => lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) };
    const { a, flush, budget, metrics } = make(50, { log });
    // A crawler explodes dst; two well-behaved services write a few series each.
    for (let i = 0; i < 100; i++) a.add(ev(T0 + BigInt(i), { service: 'crawler', comm: 'python3', dst: `198.51.${i >> 8}.${i & 255}:443` }));
    for (let i = 0; i < 6; i++) a.add(ev(T0 + 1000n + BigInt(i), { service: 'rails', dst: `pg-${i}` }));
    flush();
    for (let i = 100; i < 150; i++) a.add(ev(T0 + S + BigInt(i), { service: 'crawler', comm: 'python3', dst: `198.51.${i >> 8}.${i & 255}:443` }));
    flush(true);
    const st = budget.status().measurements[MEASUREMENT.connectHist];
    expect(st.top.service[0]).toEqual({ value: 'crawler', series: 150, folded: 100 });
    expect(st.top.service[1]).toEqual({ value: 'rails', series: 6, folded: 6 });
    expect(st.top.dst).toHaveLength(5);
    expect(metrics.get('tcplat_series_folded_total', { measurement: MEASUREMENT.connectHist, reason: 'dst' })).toBe(106);
    expect(metrics.get('tcplat_series_folded_total', { measurement: MEASUREMENT.connect })).toBe(106);
    expect(metrics.get('tcplat_series_live', { measurement: MEASUREMENT.connectHist })).toBe(50);
    // 106 folded deltas became one point per `other` series and flush: crawler and rails in the first (56 -> 2),
    // crawler in the second (50 -> 1): 103 merged away, and said so.
    expect(metrics.get('tcplat_series_merged_points_total', { measurement: MEASUREMENT.connectHist })).toBe(103);
    expect(metrics.prometheus()).toContain('tcplat_series_folded_total{measurement="tcp_connect_hist",reason="dst"} 106');
    // Two flushes, two measurements folding: one line at once for the burst; the rest waits for the summary.
    expect(lines).toHaveLength(1);
    expect(lines[0].msg).toMatch(/^tcp_connect_hist: 50 series on this host in the last 1h reach the budget \(--max-series 50\): 56 new series folded into dst=other; top contributors: service=crawler \(100 series\), service=rails \(6 series\)\./);
    budget.flushLog();
    expect(lines).toHaveLength(2);
    expect(lines[1].msg).toMatch(/more series folded/);
  });
});

describe('exact histograms with folding (seeded random cases, shrunk on failure)', () => {
  const event = fc.record({
    dt: fc.integer({ min: 0, max: 40_000 }), // ms after T0: four windows
    late: fc.boolean(),
    svc: fc.integer({ min: 0, max: 6 }),
    dst: fc.integer({ min: 0, max: 40 }),
    result: fc.constantFrom<ConnectResult>(...RESULTS),
    latencyUs: fc.integer({ min: 1, max: 3_000_000 }),
  });
  const step = fc.oneof(event, fc.constant('flush' as const));

  test('every event counts once, per window and result; no two points share series and time; series stay bounded', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.array(step, { maxLength: 300 }), (max, steps) => {
        const { a, points, flush } = make(max);
        const want = new Map<string, number>();
        let sumMs = 0;
        let i = 0;
        for (const s of steps) {
          if (s === 'flush') {
            flush();
            continue;
          }
          const ts = T0 + BigInt(s.dt) * 1_000_000n + BigInt(i++) - (s.late ? 9n * S : 0n);
          a.add(ev(ts, { service: `s${s.svc}`, comm: `c${s.svc}`, dst: `d${s.dst}`, result: s.result, latencyNs: s.latencyUs * 1000 }));
          const k = `${(ts - (ts % (10n * S))).toString()}/${s.result}`;
          want.set(k, (want.get(k) ?? 0) + 1);
          sumMs += s.latencyUs / 1000;
        }
        flush(true);
        const h = hist(points);
        const got = new Map<string, number>();
        for (const p of h) {
          const t = BigInt(p.timeNs!);
          const k = `${(t - (t % (10n * S))).toString()}/${p.tags!.result}`;
          got.set(k, (got.get(k) ?? 0) + num(p.fields[HIST_FIELD.count]));
          expect(BUCKET_FIELDS.reduce((n, f) => n + num(p.fields[f]), 0)).toBe(num(p.fields[HIST_FIELD.count]));
        }
        expect(got).toEqual(want);
        expect(h.reduce((n, p) => n + (p.fields[HIST_FIELD.sumMs] as number), 0)).toBeCloseTo(sumMs, 6);
        const at = h.map((p) => seriesKey(p) + '@' + String(p.timeNs));
        expect(new Set(at).size).toBe(at.length);
        // Own series <= max; `other` series <= ceil(max/10) at level 1 + one per result at level 2.
        const own = [...distinctSeries(h)].filter((k) => !k.includes(`"${OTHER}"`));
        expect(own.length).toBeLessThanOrEqual(max);
        expect(distinctSeries(h).size - own.length).toBeLessThanOrEqual(Math.ceil(max / 10) + RESULTS.length);
        expect(raw(points)).toHaveLength(i);
      }),
      { seed: Number(process.env.TCPLAT_TEST_SEED ?? 20261207), numRuns: Number(process.env.TCPLAT_TEST_RUNS ?? 200) },
    );
  });
});
