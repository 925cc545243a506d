import { IntValue, MEASUREMENT, SESSION_BUCKET_FIELDS, sessionBucketIndex, type CloseEvent, type Point } from '@tcplat/core';
import { Metrics, StageCounters } from '../metrics';
import type { EnrichedClose } from '../types';
import { Aggregator } from './aggregator';

const T0 = 1_764_100_000_000_000_000n; // a whole 10 s window start
const S = 1_000_000_000n;

function close(tsNs: bigint, over: Partial<EnrichedClose> = {}): EnrichedClose {
  const base: CloseEvent = {
    type: 'close', tsNs, lifespanNs: 2_000_000, pid: 1, tid: 2, comm: 'ruby', thread: 'puma srv tp 0', cgroupId: '0', family: 'ipv4',
    saddr: '127.0.0.1', sport: 40000, daddr: '10.0.0.1', dport: 5432, bytesSent: 100, bytesReceived: 200, retrans: 0, srttUs: 350, closedBy: 'local',
  };
  return { ...base, service: 'rails', dst: 'pg', ...over };
}

function make(opts: Partial<ConstructorParameters<typeof Aggregator>[0]> = {}) {
  const stage = new StageCounters(new Metrics(), 'aggregate');
  const a = new Aggregator({ host: 'h', windowNs: 10n * S, rawLimit: 10_000, runId: 1, ...opts }, stage);
  const points: Point[] = [];
  return { a, stage, points, flush: (final = false) => a.flush((p) => points.push(p as Point), final) };
}

const num = (v: unknown) => (v instanceof IntValue ? Number(v.value) : (v as number));
const hist = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.sessionHist);
const raw = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.session);
const sum = (ps: Point[], f: string) => ps.reduce((n, p) => n + num(p.fields[f]), 0);

describe('close events: tcp_session_hist', () => {
  test('exact lifespan buckets per series and window of close time, with retransmit and reset counts', () => {
    const { a, points, flush } = make();
    a.add(close(T0 + 1n, { lifespanNs: 1_500_000_000, retrans: 3 })); // closes in window 0
    a.add(close(T0 + 2n, { lifespanNs: 9_000_000_000, closedBy: 'reset_in' })); // SYN in window 0, closes in window 0 (9 s)
    a.add(close(T0 + 5n * S, { lifespanNs: 6_000_000_000, closedBy: 'reset_out' })); // closes at 11 s: window 1
    a.add(close(T0 + 3n, { service: 'cron', lifespanNs: 200_000 })); // 0.2 ms: the first bucket
    flush(true);
    const h = hist(points);
    const rails0 = h.find((p) => p.tags!.service === 'rails' && BigInt(p.timeNs as bigint) / (10n * S) === T0 / (10n * S))!;
    const rails1 = h.find((p) => p.tags!.service === 'rails' && BigInt(p.timeNs as bigint) / (10n * S) === T0 / (10n * S) + 1n)!;
    expect(h).toHaveLength(3);
    expect(rails0.tags).toEqual({ host: 'h', service: 'rails', dst: 'pg' });
    expect(num(rails0.fields.count)).toBe(2);
    expect(num(rails0.fields.retrans)).toBe(3);
    expect(num(rails0.fields.resets_in)).toBe(1);
    expect(num(rails0.fields.resets_out)).toBe(0);
    expect(rails0.fields.min_ms).toBe(1500);
    expect(rails0.fields.max_ms).toBe(9000);
    expect(rails0.fields.sum_ms).toBe(10500);
    expect(num(rails0.fields[SESSION_BUCKET_FIELDS[sessionBucketIndex(1500)]])).toBe(1);
    expect(num(rails0.fields.le_1600)).toBe(1);
    expect(num(rails0.fields.le_10000)).toBe(1);
    expect(num(rails1.fields.resets_out)).toBe(1);
    const cron = h.find((p) => p.tags!.service === 'cron')!;
    expect(num(cron.fields.le_1)).toBe(1);
    // Buckets always sum to count.
    for (const p of h) expect(SESSION_BUCKET_FIELDS.reduce((n, f) => n + num(p.fields[f]), 0)).toBe(num(p.fields.count));
  });

  test('zero windows (probe --zero-windows) are summed per window; absent when no close carried them', () => {
    const { a, points, flush } = make();
    a.add(close(T0 + 1n, { zeroWindows: 2 }));
    a.add(close(T0 + 2n, { zeroWindows: 1 }));
    a.add(close(T0 + 3n, { service: 'cron' }));
    flush(true);
    const h = hist(points);
    expect(num(h.find((p) => p.tags!.service === 'rails')!.fields.zero_windows)).toBe(3);
    expect(h.find((p) => p.tags!.service === 'cron')!.fields).not.toHaveProperty('zero_windows');
    expect(raw(points).map((p) => (p.fields.zero_windows === undefined ? undefined : num(p.fields.zero_windows)))).toEqual([2, 1, undefined]);
  });

  test('late closes land in later deltas of their window; deltas of one window never share a timestamp', () => {
    const { a, points, flush } = make();
    a.add(close(T0 + 1n));
    flush();
    a.add(close(T0 + 7n, { sport: 2 }));
    flush();
    const h = hist(points);
    expect(h).toHaveLength(2);
    expect(new Set(h.map((p) => String(p.timeNs))).size).toBe(2);
    expect(sum(h, 'count')).toBe(2);
  });
});

describe('close events: tcp_session points', () => {
  test('one point per close at its connect\'s ts_ns, closed_by as a tag, the connection\'s figures as fields', () => {
    const { a, points, flush } = make();
    a.add(close(T0 + 123n, { lifespanNs: 1_512_000_000, bytesSent: 104857, bytesReceived: 2048, retrans: 2, srttUs: 350, closedBy: 'peer', container: 'abc' }));
    flush(true);
    const [p] = raw(points);
    expect(p.timeNs).toBe(T0 + 123n);
    expect(p.tags).toEqual({ host: 'h', service: 'rails', comm: 'ruby', dst: 'pg', family: 'ipv4', closed_by: 'peer' });
    expect(p.fields.lifespan_ms).toBe(1512);
    expect(num(p.fields.bytes_sent)).toBe(104857);
    expect(num(p.fields.bytes_received)).toBe(2048);
    expect(num(p.fields.retrans)).toBe(2);
    expect(p.fields.srtt_ms).toBe(0.35);
    expect(p.fields.thread).toBe('puma srv tp 0');
    expect(p.fields.container).toBe('abc');
    expect(p.fields).not.toHaveProperty('sample_weight');
    expect(p.fields).not.toHaveProperty('tx_kb');
  });

  test('the raw limit per second of event time keeps a sample whose weights sum to the events; import mode samples the same way twice', () => {
    const run = () => {
      const { a, points, flush } = make({ rawLimit: 10, importEvery: 1_000_000 });
      for (let i = 0; i < 100; i++) a.add(close(T0 + BigInt(i) * 1_000_000n, { sport: i }));
      flush(true);
      return points;
    };
    const first = run();
    const r = raw(first);
    expect(r).toHaveLength(10);
    expect(r.reduce((n, p) => n + (p.fields.sample_weight as number), 0)).toBeCloseTo(100, 6);
    expect(sum(hist(first), 'count')).toBe(100); // the histogram is exact
    expect(raw(run()).map((p) => num(p.fields.sport))).toEqual(r.map((p) => num(p.fields.sport)));
  });

  test('two closes with the same ts_ns (a repeated capture line) get distinct times', () => {
    const { a, points, flush } = make();
    a.add(close(T0 + 5n));
    a.add(close(T0 + 5n, { sport: 2 }));
    flush(true);
    expect(raw(points).map((p) => p.timeNs)).toEqual([T0 + 5n, T0 + 6n]);
  });
});
