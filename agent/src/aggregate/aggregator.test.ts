import { BUCKET_FIELDS, CONNECT_FIELD, connectLine, encodePoint, HIST_FIELD, IntValue, MEASUREMENT, parseLine, type ConnectEvent, type Point } from '@tcplat/core';
import { Metrics, StageCounters } from '../metrics';
import type { EnrichedConnect, EnrichedSession } from '../types';
import { Aggregator } from './aggregator';

const T0 = 1_764_100_000_000_000_000n; // a whole 10 s window start
const S = 1_000_000_000n;

function ev(tsNs: bigint, over: Partial<EnrichedConnect> = {}): EnrichedConnect {
  const base: ConnectEvent = {
    type: 'connect', tsNs, latencyNs: 2_000_000, result: 'ok', errno: 0, synRetrans: 0, pid: 1, tid: 1, comm: 'ruby', cgroupId: '0',
    family: 'ipv4', saddr: '127.0.0.1', sport: 1, daddr: '10.0.0.1', dport: 5432,
  };
  return { ...base, service: 'rails', dst: 'pg', ...over };
}

function make(opts: Partial<ConstructorParameters<typeof Aggregator>[0]> = {}) {
  const stage = new StageCounters(new Metrics(), 'aggregate');
  let seed = 1;
  const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const a = new Aggregator({ host: 'h', windowNs: 10n * S, rawLimit: 10_000, runId: 1, random, ...opts }, stage);
  const points: Point[] = [];
  // Raw connect points come as connectLine's values: encode and read them back to check what InfluxDB will get.
  return { a, stage, points, flush: (final = false) => a.flush((p) => points.push('raw' in p ? parseLine(connectLine(p)) : p), final) };
}

const num = (v: unknown) => (v instanceof IntValue ? Number(v.value) : (v as number));
const hist = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.connectHist);
const raw = (ps: Point[]) => ps.filter((p) => p.measurement === MEASUREMENT.connect);

describe('histograms', () => {
  test('one delta point per series and window per flush, stamped inside the window, never twice at one time', () => {
    const { a, points, flush } = make();
    for (let i = 0; i < 5; i++) a.add(ev(T0 + BigInt(i) * S));
    a.add(ev(T0 + 1n, { result: 'refused', latencyNs: 100_000 }));
    flush();
    // Late events for the same window after it was flushed, plus a new window.
    a.add(ev(T0 + 3n * S, { latencyNs: 1_050_000_000, synRetrans: 1 }));
    a.add(ev(T0 + 12n * S));
    flush(true);
    const h = hist(points);
    expect(h).toHaveLength(4);
    const okW0 = h.filter((p) => p.tags!.result === 'ok' && BigInt(p.timeNs!) < T0 + 10n * S);
    expect(okW0).toHaveLength(2);
    // The window's histogram is the sum of its points.
    expect(okW0.reduce((n, p) => n + num(p.fields[HIST_FIELD.count]), 0)).toBe(6);
    expect(okW0.reduce((n, p) => n + num(p.fields[HIST_FIELD.synRetrans]), 0)).toBe(1);
    expect(Math.max(...okW0.map((p) => num(p.fields[HIST_FIELD.maxMs])))).toBe(1050);
    const times = h.map((p) => `${p.tags!.result}@${p.timeNs}`);
    expect(new Set(times).size).toBe(times.length);
    for (const p of h) {
      const t = BigInt(p.timeNs!);
      expect(t - (t % (10n * S))).toBe(t >= T0 + 10n * S ? T0 + 10n * S : T0);
    }
    // Bucket fields add up to count.
    for (const p of h) expect(BUCKET_FIELDS.reduce((n, f) => n + num(p.fields[f]), 0)).toBe(num(p.fields[HIST_FIELD.count]));
  });

  test('another run (agent restarted) stamps the same window at other times', () => {
    const r1 = make({ runId: 1 });
    const r2 = make({ runId: 2 });
    r1.a.add(ev(T0));
    r2.a.add(ev(T0));
    r1.flush();
    r2.flush();
    expect(hist(r1.points)[0].timeNs).not.toBe(hist(r2.points)[0].timeNs);
  });
});

describe('raw points', () => {
  test('exact below the limit; unique timestamps (host-wide, so per series too; collisions move by 1 ns)', () => {
    const { a, points, flush } = make();
    a.add(ev(T0 + 5n));
    a.add(ev(T0 + 5n));
    a.add(ev(T0 + 5n, { result: 'refused' }));
    a.add(ev(T0 + 6n));
    flush(true);
    const r = raw(points);
    expect(r.map((p) => `${p.tags!.result}@${BigInt(p.timeNs!) - T0}`)).toEqual(['ok@5', 'ok@6', 'refused@7', 'ok@8']);
    expect(r.every((p) => p.fields[CONNECT_FIELD.sampleWeight] === undefined)).toBe(true);
    expect(a.collisions).toBe(5);
  });

  test('events of a second that arrive out of order are written in time order, each with its own values', () => {
    const { a, points, flush } = make();
    const offsets = [900n, 5n, 300n, 5n, 42n];
    offsets.forEach((o, i) => a.add(ev(T0 + o, { pid: 100 + i })));
    flush(true);
    const r = raw(points).map((p) => [BigInt(p.timeNs!) - T0, num(p.fields[CONNECT_FIELD.pid])]);
    // Sorted by time; the two events at +5 keep their arrival order, the second moved by 1 ns.
    expect(r).toEqual([
      [5n, 101],
      [6n, 103],
      [42n, 104],
      [300n, 102],
      [900n, 100],
    ]);
  });

  test('beyond the limit per second of event time: a sample whose weights sum to the events', () => {
    const { a, points, flush, stage } = make({ rawLimit: 100 });
    for (let i = 0; i < 1000; i++) a.add(ev(T0 + BigInt(i) * 1000n)); // 1000 events in one second
    for (let i = 0; i < 50; i++) a.add(ev(T0 + S + BigInt(i))); // 50 in the next
    flush(true);
    const r = raw(points);
    const first = r.filter((p) => BigInt(p.timeNs!) < T0 + S);
    expect(first).toHaveLength(100);
    expect(first.reduce((n, p) => n + (p.fields[CONNECT_FIELD.sampleWeight] as number), 0)).toBeCloseTo(1000, 6);
    const second = r.filter((p) => BigInt(p.timeNs!) >= T0 + S);
    expect(second).toHaveLength(50);
    expect(second.every((p) => p.fields[CONNECT_FIELD.sampleWeight] === undefined)).toBe(true);
    expect(stage.droppedCount('sampled_out')).toBe(900);
    // The histogram is exact regardless.
    expect(hist(points).reduce((n, p) => n + num(p.fields[HIST_FIELD.count]), 0)).toBe(1050);
  });

  test('a second is emitted once a newer second is seen, or at the second flush; late events respect the budget', () => {
    const { a, points, flush } = make({ rawLimit: 3 });
    a.add(ev(T0));
    flush();
    expect(raw(points)).toHaveLength(0); // its second may still be filling
    flush();
    expect(raw(points)).toHaveLength(1);
    a.add(ev(T0 + 1n));
    a.add(ev(T0 + 2n));
    a.add(ev(T0 + 3n));
    a.add(ev(T0 + 4n)); // second T0 already had 1 point: 2 more fit, 4 events -> weight 2
    a.add(ev(T0 + 2n * S));
    flush();
    const late = raw(points).slice(1);
    expect(late).toHaveLength(2);
    expect(late.every((p) => p.fields[CONNECT_FIELD.sampleWeight] === 2)).toBe(true);
    expect(a.pending).toBe(1);
  });

  test('hostile values are carried, and encoded without breaking the line', () => {
    const { a, points, flush } = make();
    a.add(ev(T0, { comm: 'a b,c=d\n"x"\\', service: 'svc\\', dst: 'x y', container: 'c"' })); // container ids are hex or uuids: never a newline
    flush(true);
    for (const p of points) expect(encodePoint(p).split('\n')).toHaveLength(1);
    const [r] = raw(points);
    expect(r.tags).toMatchObject({ comm: 'a b,c=d\\n"x"\uFF3C', service: 'svc\uFF3C', dst: 'x y' }); // as InfluxDB stores them
    expect(r.fields[CONNECT_FIELD.container]).toBe('c"');
  });

  test('every raw point keeps its own values: container only where the event had one, errno only when set', () => {
    const { a, points, flush } = make();
    a.add(ev(T0 + 1n, { pid: 1 }));
    a.add(ev(T0 + 2n, { pid: 2, container: 'docker:abc', result: 'refused', errno: 111, latencyNs: 40_000 }));
    a.add(ev(T0 + 3n, { pid: 3, sport: 4242, synRetrans: 2 }));
    flush(true);
    expect(raw(points).map((p) => [p.tags!.result, p.fields])).toEqual([
      ['ok', { latency_ms: 2, syn_retrans: new IntValue(0), pid: new IntValue(1), sport: new IntValue(1) }],
      ['refused', { latency_ms: 0.04, syn_retrans: new IntValue(0), pid: new IntValue(2), sport: new IntValue(1), errno: new IntValue(111), container: 'docker:abc' }],
      ['ok', { latency_ms: 2, syn_retrans: new IntValue(2), pid: new IntValue(3), sport: new IntValue(4242) }],
    ]);
  });
});

test('sessions keep their own time and become tcp_session points', () => {
  const { a, points, flush } = make();
  const s: EnrichedSession = {
    type: 'session', tsNs: T0, lifespanMs: 22.5, txKb: 2.93, rxKb: 0.01, pid: 7, comm: 'node', family: 'ipv4', saddr: '127.0.0.1', sport: 40000,
    daddr: '127.0.0.1', dport: 47001, service: 'node', dst: '127.0.0.1:47001',
  };
  a.add(s);
  a.add({ ...s });
  flush();
  expect(points.map((p) => [p.measurement, BigInt(p.timeNs!) - T0])).toEqual([
    [MEASUREMENT.session, 0n],
    [MEASUREMENT.session, 1n],
  ]);
});

describe('import mode (--once): the points depend only on the capture', () => {
  // A capture: 3 windows, rate-limited seconds, late events (2 s and 70 s), repeated timestamps, sessions.
  function capture(): EnrichedConnect[] {
    const out: EnrichedConnect[] = [];
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 16807) % 2147483647) % n;
    for (let i = 0; i < 5000; i++) {
      let ts = T0 + BigInt(i) * 6_000_000n; // 30 s of event time
      if (i % 7 === 0) ts -= 2n * S;
      if (i % 501 === 0) ts -= 70n * S;
      if (i % 13 === 0) ts -= ts % 1000n; // coarse: collides with others
      out.push(ev(ts, { pid: i, service: ['a', 'b'][rnd(2)], result: rnd(10) === 0 ? 'refused' : 'ok', latencyNs: 10_000 + rnd(5_000_000) }));
    }
    return out;
  }

  function importOnce(flushEvery: number[]) {
    const m = make({ importEvery: 1000, random: undefined, rawLimit: 50 });
    const events = capture();
    events.forEach((e, i) => {
      m.a.add(e);
      // Timer flushes at arbitrary moments (different per run) must not change anything.
      if (flushEvery.some((k) => i % k === 0)) m.flush();
      if (m.a.pending >= 1000) m.flush();
    });
    m.flush(true);
    return m.points.map((p) => encodePoint(p)).sort();
  }

  test('two imports with timer flushes at different moments write the very same points (so a re-import overwrites itself)', () => {
    const a = importOnce([97]);
    const b = importOnce([13, 501]);
    expect(a.length).toBeGreaterThan(1000);
    expect(b).toEqual(a);
  });

  test('histogram deltas use slot 0 of their window; live runs never do', () => {
    const imp = make({ importEvery: 10 });
    imp.a.add(ev(T0 + 5n));
    imp.flush(true);
    expect(BigInt(hist(imp.points)[0].timeNs!) - T0).toBe(0n);
    for (const runId of [0, 1, 9999, 10_000, 123_456]) {
      const live = make({ runId });
      live.a.add(ev(T0 + 5n));
      live.flush();
      const off = BigInt(live.points.find((p) => p.measurement === MEASUREMENT.connectHist)!.timeNs!) - T0;
      expect(off).toBeGreaterThanOrEqual(1_000_000n);
      expect(off).toBeLessThan(10n * S);
    }
  });

  test('a timer flush between epochs emits nothing', () => {
    const { a, points, flush } = make({ importEvery: 3 });
    a.add(ev(T0));
    a.add(ev(T0 + 2n * S));
    flush();
    expect(points).toHaveLength(0);
    a.add(ev(T0 + 3n * S));
    flush();
    expect(hist(points).length).toBeGreaterThan(0);
  });
});

describe('raw points are never overwritten, however late', () => {
  test('an event 120 s late at the time of an earlier point (beyond the old 30 s horizon) is moved, not overwritten', () => {
    const { a, points, flush } = make();
    a.add(ev(T0 + 5n));
    flush();
    for (let s = 1n; s <= 120n; s++) {
      a.add(ev(T0 + s * S));
      flush();
    }
    a.add(ev(T0 + 5n, { pid: 2 })); // the same series and time, 120 s later
    flush(true);
    const times = raw(points).map((p) => p.timeNs);
    expect(new Set(times).size).toBe(times.length);
    expect(raw(points)).toHaveLength(122);
    expect(a.unchecked).toBe(0);
  });

  test('an event older than the memory (300 s) is counted as unchecked, never silently', () => {
    const { a, flush } = make({ dedupHorizonS: 300 });
    a.add(ev(T0));
    flush();
    a.add(ev(T0 + 400n * S));
    flush();
    flush();
    a.add(ev(T0 + 1n));
    flush(true);
    expect(a.unchecked).toBe(1);
  });
});
