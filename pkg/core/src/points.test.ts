import { Histogram } from './histogram';
import { HOSTILE } from '../../../tests/support/hostile';
import { BUCKET_FIELDS } from './buckets';
import { encodePoint, int, IntValue, LineProtocolError, nsAsMsText, parseLine } from './lineprotocol';
import { connectLine, connectPoint, histPoint, rollupHistPoints } from './points';

test('connectPoint keeps pid and sport as fields, never tags', () => {
  const line = encodePoint(
    connectPoint({ host: 'h', service: 'api', comm: 'node', dst: 'db:5432', result: 'ok', family: 'ipv4', latencyMs: 1.25, synRetrans: 0, pid: 42, sport: 40000, timeNs: 5n }),
  );
  expect(line).toBe('tcp_connect,comm=node,dst=db:5432,family=ipv4,host=h,result=ok,service=api latency_ms=1.25,syn_retrans=0i,pid=42i,sport=40000i 5');
});

test('histPoint writes count, sum, min, max and every bucket', () => {
  const h = new Histogram();
  h.add(0.5);
  h.add(1000);
  const line = encodePoint(histPoint({ host: 'h', service: 's', dst: 'd', result: 'ok' }, h, 10_000_000_000n, 1));
  expect(line.startsWith('tcp_connect_hist,dst=d,host=h,result=ok,service=s count=2i,sum_ms=1000.5,min_ms=0.5,max_ms=1000,syn_retrans=1i,le_0.01=0i')).toBe(true);
  expect(line).toContain('le_0.63=1i');
  expect(line).toContain('le_1000=1i');
  expect(line).toContain('le_inf=0i 10000000000');
});

describe('connectLine (the agent hot path) writes exactly what encodePoint(connectPoint()) writes', () => {
  const base = { host: 'h', service: 'api', comm: 'node', dst: 'db:5432', result: 'ok' as const, family: 'ipv4' as const, latencyNs: 1_250_000, synRetrans: 0, pid: 42, sport: 40000, timeNs: 1764100000123456789n };
  type V = Omit<typeof base, 'result' | 'family'> & { result: 'ok' | 'refused'; family: 'ipv4' | 'ipv6'; errno?: number; container?: string; thread?: string; sampleWeight?: number };
  const asPoint = (v: V) => connectPoint({ ...v, latencyMs: v.latencyNs / 1e6 });
  const variants: V[] = [
    base,
    { ...base, errno: 111, result: 'refused' as const, latencyNs: 40_000 },
    { ...base, container: 'docker:0123abcd', sampleWeight: 3.5, synRetrans: 2 },
    { ...base, thread: 'HikariPool-1 c', container: 'pod:u' },
    { ...base, sampleWeight: 1, comm: '', service: '' },
    { ...base, latencyNs: 1, timeNs: 5n },
    { ...base, latencyNs: 0 },
    { ...base, latencyNs: 3_000_000_000 },
    { ...base, latencyNs: 1_000_000_007 },
  ];
  test.each(variants.map((v, i) => [i, v] as const))('variant %i', (_i, v) => {
    expect(connectLine(v)).toBe(encodePoint(asPoint(v)));
    expect(connectLine({ ...v, timeNs: String(v.timeNs) })).toBe(encodePoint(asPoint(v)));
  });

  test('latencies as exact decimals of ns: the same text as the float below 1e15 ns, the same value always', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    for (let k = 0; k < 20_000; k++) {
      const ns = Math.floor(Math.exp(rnd() * 34.5)); // 1 ns .. ~1e15 ns
      expect(nsAsMsText('f', ns)).toBe(String(ns / 1e6));
    }
    for (const ns of [Number.MAX_SAFE_INTEGER, 1e15 + 1, 123_456_789_012_345_6, 8_999_999_999_999_999]) expect(Number(nsAsMsText('f', ns))).toBe(ns / 1e6);
    expect(nsAsMsText('f', 2.5)).toBe(String(2.5 / 1e6)); // not whole ns: the float path
  });

  test('every hostile value in every tag and the container and thread fields', () => {
    for (const x of HOSTILE) {
      const v = { ...base, host: x, service: x, comm: x, dst: x, container: x, thread: x };
      const line = connectLine(v);
      expect(line).toBe(encodePoint(asPoint(v)));
      expect(parseLine(line).fields.container).toBe(x);
      if (x !== '') expect(parseLine(line).fields.thread).toBe(x);
    }
  });

  test('the cache of tag sections stays right past its bound (many series)', () => {
    for (let i = 0; i < 45_000; i++) {
      const v = { ...base, service: `svc-${i % 30_000}`, dst: i % 2 ? 'a' : 'b', family: i % 3 ? ('ipv4' as const) : ('ipv6' as const) };
      const line = connectLine(v);
      if (i % 997 === 0 || i >= 44_990) expect(line).toBe(encodePoint(asPoint(v)));
      else expect(line.startsWith(`tcp_connect,comm=node,dst=${v.dst},family=${v.family},host=h,result=ok,service=svc-${i % 30_000} `)).toBe(true);
    }
  });

  test('refuses what InfluxDB would refuse, like encodePoint', () => {
    expect(() => connectLine({ ...base, latencyNs: NaN })).toThrow(LineProtocolError);
    expect(() => connectLine({ ...base, pid: 1.5 })).toThrow(/integer/);
    expect(() => connectLine({ ...base, timeNs: '1; DROP' })).toThrow(/timestamp/);
  });
});

test('rollupHistPoints: one point per series per window at its start, counts summed, min of mins, max of maxes', () => {
  const a = new Histogram();
  a.add(0.5);
  a.add(2);
  const b = new Histogram();
  b.add(1500);
  const c = new Histogram();
  c.add(0.2);
  const tags = { host: 'h', service: 's', dst: 'd', result: 'ok' as const };
  const t0 = 1_764_100_800_000n * 1_000_000n; // a whole hour
  const points = [histPoint(tags, a, t0 + 10_000_000_000n), histPoint(tags, b, t0 + 3_590_000_000_000n + 1n), histPoint(tags, c, t0 + 3_600_000_000_000n), histPoint({ ...tags, host: 'g' }, c, t0)];
  const out = rollupHistPoints(points, '1h');
  expect(out.map((p) => [p.measurement, p.tags?.host, String(p.timeNs)])).toEqual([
    ['tcp_connect_hist_1h', 'h', String(t0)],
    ['tcp_connect_hist_1h', 'h', String(t0 + 3_600_000_000_000n)],
    ['tcp_connect_hist_1h', 'g', String(t0)],
  ]);
  const f = out[0].fields;
  expect(f.count).toEqual(int(3n));
  expect(f.sum_ms).toBeCloseTo(1502.5);
  expect([f.min_ms, f.max_ms]).toEqual([0.5, 1500]);
  const total = BUCKET_FIELDS.reduce((n, k) => n + Number((f[k] as IntValue).value), 0);
  expect(total).toBe(3);
  expect(() => rollupHistPoints(points, '5m' as never)).toThrow(/unknown rollup window/);
});
