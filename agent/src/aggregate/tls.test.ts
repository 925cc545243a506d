/**
 * TLS handshakes through the aggregate stage (an Aggregator of kind 'tls'): tls_handshake_hist in the connect
 * buckets and schema, tls_handshake raw points with the connect path's limit, weights and unique timestamps.
 */
import {
  BUCKET_FIELDS,
  encodePoint,
  HIST_FIELD,
  histPoint,
  Histogram,
  IntValue,
  MEASUREMENT,
  parseLine,
  parseProbeLine,
  TAG,
  TLS_DST_UNSEEN,
  TLS_FIELD,
  type Point,
  type TlsEvent,
} from '@tcplat/core';
import { Enricher } from '../enrich/enricher';
import { Metrics, StageCounters } from '../metrics';
import type { EnrichedTls } from '../types';
import { Aggregator } from './aggregator';

const T0 = 1_764_100_000_000_000_000n; // a whole 10 s window start
const S = 1_000_000_000n;

function tls(tsNs: bigint, over: Partial<EnrichedTls> = {}): EnrichedTls {
  const base: TlsEvent = {
    type: 'tls', tsNs, latencyNs: 310_000_000, result: 'ok', pid: 7, tid: 7, comm: 'python3', cgroupId: '0', lib: 'openssl', calls: 1,
    socket: { family: 'ipv4', saddr: '127.0.0.1', sport: 40000, daddr: '127.0.0.1', dport: 8443 },
  };
  return { ...base, service: 'api', dst: '127.0.0.1:8443', ...over };
}

function make(opts: Partial<ConstructorParameters<typeof Aggregator>[0]> = {}) {
  const stage = new StageCounters(new Metrics(), 'aggregate');
  let seed = 1;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const a = new Aggregator({ host: 'h', windowNs: 10n * S, rawLimit: 10_000, runId: 1, random, kind: 'tls', ...opts }, stage);
  const points: Point[] = [];
  // Through the encoder and back: what InfluxDB gets.
  const flush = (final = false) =>
    a.flush((p) => {
      if ('raw' in p) throw new Error('a TLS aggregator emitted a raw tcp_connect point');
      points.push(parseLine(encodePoint(p)));
    }, final);
  return { a, stage, points, flush };
}

const num = (v: unknown) => (v instanceof IntValue ? Number(v.value) : (v as number));
const hist = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.tlsHist);
const raw = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.tls);

test('tls_handshake_hist has exactly the tags and fields of tcp_connect_hist (syn_retrans 0), counts per result', () => {
  const { a, points, flush } = make();
  for (let i = 0; i < 4; i++) a.add(tls(T0 + BigInt(i) * S));
  a.add(tls(T0 + 5n * S, { result: 'failed', latencyNs: 2_000_000 }));
  flush(true);
  const h = hist(points);
  expect(h.map((p) => p.tags!.result).sort()).toEqual(['failed', 'ok']);
  const ok = h.find((p) => p.tags!.result === 'ok')!;
  expect(num(ok.fields[HIST_FIELD.count])).toBe(4);
  expect(num(ok.fields[HIST_FIELD.sumMs])).toBeCloseTo(1240, 6);
  expect(num(ok.fields[HIST_FIELD.minMs])).toBe(310);
  expect(num(ok.fields[HIST_FIELD.synRetrans])).toBe(0);
  // The same keys as a tcp_connect_hist point of the same series: every reader of one reads the other.
  const connect = parseLine(encodePoint(histPoint({ host: 'h', service: 'api', dst: '127.0.0.1:8443', result: 'ok' }, new Histogram(), T0)));
  expect(Object.keys(ok.tags!).sort()).toEqual(Object.keys(connect.tags!).sort());
  expect(Object.keys(ok.fields).sort()).toEqual(Object.keys(connect.fields).sort());
  // The connect buckets: 310 ms falls in the bucket whose bounds hold it, and they add up to count.
  const inBuckets = BUCKET_FIELDS.map((f) => num(ok.fields[f]));
  expect(inBuckets.reduce((x, y) => x + y, 0)).toBe(4);
  expect(BigInt(ok.timeNs!) - T0).toBeLessThan(10n * S);
  expect(points.some((p) => p.measurement === MEASUREMENT.connectHist || p.measurement === MEASUREMENT.connect)).toBe(false);
});

test('tls_handshake raw points: tags, latency_ms, lib, pid, thread, container; no family tag when the socket was not seen', () => {
  const { a, points, flush } = make();
  a.add(tls(T0 + 1n, { thread: 'worker 1', container: 'docker/abc' }));
  const unseen = tls(T0 + 2n, { dst: TLS_DST_UNSEEN });
  delete unseen.socket;
  a.add(unseen);
  flush(true);
  const r = raw(points);
  expect(r).toHaveLength(2);
  const [seen, noSocket] = r;
  expect(seen.tags).toEqual({ [TAG.comm]: 'python3', [TAG.dst]: '127.0.0.1:8443', [TAG.family]: 'ipv4', [TAG.host]: 'h', [TAG.result]: 'ok', [TAG.service]: 'api' });
  expect(seen.fields[TLS_FIELD.latencyMs]).toBe(310);
  expect(num(seen.fields[TLS_FIELD.pid])).toBe(7);
  expect(seen.fields[TLS_FIELD.lib]).toBe('openssl');
  expect(seen.fields[TLS_FIELD.thread]).toBe('worker 1');
  expect(seen.fields[TLS_FIELD.container]).toBe('docker/abc');
  expect(seen.fields[TLS_FIELD.sampleWeight]).toBeUndefined();
  expect(seen.timeNs).toBe(String(T0 + 1n));
  expect(noSocket.tags![TAG.family]).toBeUndefined();
  expect(noSocket.tags![TAG.dst]).toBe(TLS_DST_UNSEEN);
  // Both still count in the histogram.
  expect(hist(points).reduce((n, p) => n + num(p.fields[HIST_FIELD.count]), 0)).toBe(2);
});

test('the raw limit samples tls_handshake with weights summing to the handshakes; the histogram keeps them all', () => {
  const { a, stage, points, flush } = make({ rawLimit: 3 });
  for (let i = 0; i < 12; i++) a.add(tls(T0 + BigInt(i) * 1000n));
  flush(true);
  const r = raw(points);
  expect(r).toHaveLength(3);
  expect(r.reduce((n, p) => n + (p.fields[TLS_FIELD.sampleWeight] as number), 0)).toBeCloseTo(12, 9);
  expect(num(hist(points)[0].fields[HIST_FIELD.count])).toBe(12);
  expect(stage.droppedCount('sampled_out')).toBe(9);
});

test('two handshakes at the same ns keep both points (the later moved by 1 ns)', () => {
  const { a, points, flush } = make();
  a.add(tls(T0 + 5n));
  a.add(tls(T0 + 5n, { latencyNs: 400_000_000 }));
  flush(true);
  expect(raw(points).map((p) => p.timeNs)).toEqual([String(T0 + 5n), String(T0 + 6n)]);
  expect(a.collisions).toBe(1);
});

test('import mode: the same capture gives the same points at the same times (re-import overwrites)', () => {
  const run = () => {
    const m = make({ importEvery: 5 });
    for (let i = 0; i < 13; i++) {
      m.a.add(tls(T0 + BigInt(i) * 700_000_000n, { result: i % 4 === 0 ? 'failed' : 'ok' }));
      if (m.a.pending >= 5) m.flush();
    }
    m.flush(true);
    return m.points.map((p) => encodePoint(p)).sort();
  };
  const first = run();
  expect(first).toEqual(run());
  expect(first.length).toBeGreaterThan(13);
});

test('a TLS handshake given to the connect aggregator is refused, not mixed into tcp_connect_hist', () => {
  const { a } = make({ kind: 'connect' });
  expect(() => a.add(tls(T0))).toThrow(/connect aggregator/);
});

describe('the enricher on tls lines', () => {
  const enricher = () =>
    new Enricher({ rules: { services: [], destinations: [], needsProc: false, needsThread: false }, selfPids: new Set([99]), useProc: false }, new StageCounters(new Metrics(), 'enrich'));
  const line = (over: Record<string, unknown>) => {
    const r = parseProbeLine(
      JSON.stringify({ type: 'tls', ts_ns: 1796671246741581148, latency_ns: 310468724, result: 'ok', pid: 21360, tid: 21361, comm: 'python3', thread: 'py-worker', cgroup_id: 1, lib: 'openssl', calls: 1, family: 'ipv4', saddr: '127.0.0.1', sport: 57304, daddr: '127.0.0.1', dport: 43377, ...over }),
    );
    if (!r.ok) throw new Error(r.error.message);
    return r.value as TlsEvent;
  };

  test('service from comm, dst from the socket, thread kept', () => {
    const e = enricher().enrich(line({})) as EnrichedTls;
    expect(e.service).toBe('python3');
    expect(e.dst).toBe('127.0.0.1:43377');
    expect(e.thread).toBe('py-worker');
  });

  test('a handshake whose socket the probe did not see: dst unknown', () => {
    const e = enricher().enrich(line({ family: '', saddr: '', daddr: '', sport: 0, dport: 0 })) as EnrichedTls;
    expect(e.dst).toBe(TLS_DST_UNSEEN);
  });

  test("the agent's own handshakes (to InfluxDB over https) are dropped", () => {
    expect(enricher().enrich(line({ pid: 99 }))).toBeNull();
  });
});
