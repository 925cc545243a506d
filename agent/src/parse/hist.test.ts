import fs from 'node:fs';
import path from 'node:path';
import { BUCKET_COUNT, BUCKET_FIELDS, HIST_FIELD, IntValue, MEASUREMENT, parseProbeLine, type Point } from '@tcplat/core';
import { Aggregator } from '../aggregate/aggregator';
import { Metrics, StageCounters } from '../metrics';
import type { EnrichedHist, HistEvent } from '../types';
import { isHistLine, parseHistLine } from './hist';

// Recorded from the probe (probe branch, `--mode hist --hist-interval 1 --dport 47031 --dport 47032`) on this
// machine: 30 loopback connects to a listener and 7 to a closed port, with its stats lines around them.
const LINES = fs.readFileSync(path.join(__dirname, 'fixtures', 'probe-hist-mode.ndjson'), 'utf8').split('\n').filter(Boolean);

function parsed(): HistEvent[] {
  return LINES.filter(isHistLine).map((l) => {
    const r = parseHistLine(l);
    if (!r.ok) throw new Error(r.message);
    return r.value;
  });
}

describe('probe --mode hist lines', () => {
  test('recorded lines: exact histograms per key, the window as [ts_ns - window_ns, ts_ns)', () => {
    const h = parsed();
    expect(h.map((e) => [e.comm, e.daddr, e.dport, e.result, e.errno, e.hist.count])).toEqual([
      ['node', '127.0.0.1', 47031, 'ok', 0, 30],
      ['node', '127.0.0.1', 47032, 'refused', 111, 7],
    ]);
    const first = JSON.parse(LINES.find(isHistLine)!) as { ts_ns: number; window_ns: number; sum_ns: number; min_ns: number; max_ns: number; buckets: number[] };
    expect(h[0].endNs - h[0].tsNs).toBe(BigInt(first.window_ns));
    expect(h[0].hist.buckets).toEqual(first.buckets);
    expect(h[0].hist.sumMs).toBeCloseTo(first.sum_ns / 1e6, 9);
    expect([h[0].hist.minMs, h[0].hist.maxMs]).toEqual([first.min_ns / 1e6, first.max_ns / 1e6]);
    // The exact ns of ts_ns (JSON.parse would round a 19-digit number).
    expect(h[0].endNs.toString()).toBe(/"ts_ns":(\d+)/.exec(LINES.find(isHistLine)!)![1]);
    // The stats lines of the same run stay stats lines.
    expect(LINES.filter((l) => !isHistLine(l)).every((l) => { const r = parseProbeLine(l); return r.ok && r.value.type === 'stats'; })).toBe(true);
  });

  test.each([
    ['buckets not summing to count', (o: Record<string, unknown>) => ({ ...o, count: 31 }), /buckets sum to 30, count says 31/],
    ['a bucket too few', (o: Record<string, unknown>) => ({ ...o, buckets: (o.buckets as number[]).slice(1) }), new RegExp(`buckets must be ${BUCKET_COUNT} unsigned integers`)],
    ['an unknown result', (o: Record<string, unknown>) => ({ ...o, result: 'meh' }), /field result must be one of/],
    ['min above max', (o: Record<string, unknown>) => ({ ...o, min_ns: 10, max_ns: 5 }), /min_ns 10 > max_ns 5/],
    ['no window', (o: Record<string, unknown>) => ({ ...o, window_ns: 0 }), /window_ns must be a positive integer/],
  ])('refused with a clear reason: %s', (_n, mutate, msg) => {
    const o = JSON.parse(LINES.find(isHistLine)!) as Record<string, unknown>;
    const r = parseHistLine(JSON.stringify(mutate(o)));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toBe('field');
    expect(!r.ok && r.message).toMatch(msg);
    expect(parseHistLine('{"type":"hist",')).toMatchObject({ ok: false, reason: 'json' });
  });

  test('into tcp_connect_hist: counts, sums and buckets as the probe counted them, no raw points', () => {
    const stage = new StageCounters(new Metrics(), 'aggregate');
    const a = new Aggregator({ host: 'h', windowNs: 10_000_000_000n, rawLimit: 10_000, runId: 1 }, stage);
    for (const e of parsed()) a.add({ ...e, service: 'api', dst: e.result === 'ok' ? 'pg' : `127.0.0.1:${e.dport}` } as EnrichedHist);
    // The same key again in the next probe window (same agent window): merged by the sum of points.
    const again = parsed()[0];
    a.add({ ...again, tsNs: again.tsNs + 1_000_000n, service: 'api', dst: 'pg' } as EnrichedHist);
    expect(a.pending).toBe(67);
    const points: Point[] = [];
    a.flush((p) => points.push(p as Point), true);
    expect(points.every((p) => p.measurement === MEASUREMENT.connectHist)).toBe(true);
    const num = (v: unknown) => (v instanceof IntValue ? Number(v.value) : (v as number));
    const byDst = Object.fromEntries(points.map((p) => [`${p.tags!.dst} ${p.tags!.result}`, p]));
    expect(num(byDst['pg ok'].fields[HIST_FIELD.count])).toBe(60);
    expect(num(byDst['127.0.0.1:47032 refused'].fields[HIST_FIELD.count])).toBe(7);
    for (const p of points) expect(BUCKET_FIELDS.reduce((n, f) => n + num(p.fields[f]), 0)).toBe(num(p.fields[HIST_FIELD.count]));
    const first = JSON.parse(LINES.find(isHistLine)!) as { buckets: number[]; min_ns: number };
    expect(BUCKET_FIELDS.map((f) => num(byDst['pg ok'].fields[f]))).toEqual(first.buckets.map((b) => 2 * b));
    expect(byDst['pg ok'].fields[HIST_FIELD.minMs]).toBe(first.min_ns / 1e6);
  });
});
