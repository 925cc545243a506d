import { Metrics } from './metrics';

test('counters, gauges and histograms in the Prometheus text format', () => {
  const m = new Metrics();
  m.counter('tcplat_x_total', 'Things.', { kind: 'a"b' }).inc(2);
  m.gauge('tcplat_depth', 'Depth.', () => 7);
  const h = m.histogram('tcplat_seconds', 'Time.', [0.1, 1]);
  for (const v of [0.05, 0.1, 0.5, 3]) h.observe(v);
  const text = m.prometheus();
  expect(text).toContain('# TYPE tcplat_x_total counter\ntcplat_x_total{kind="a\\"b"} 2\n');
  expect(text).toContain('tcplat_depth 7\n');
  expect(text).toContain(
    '# TYPE tcplat_seconds histogram\ntcplat_seconds_bucket{le="0.1"} 2\ntcplat_seconds_bucket{le="1"} 3\ntcplat_seconds_bucket{le="+Inf"} 4\ntcplat_seconds_sum 3.65\ntcplat_seconds_count 4\n',
  );
  expect(m.get('tcplat_x_total', { kind: 'a"b' })).toBe(2);
  expect(m.snapshot()).toMatchObject({ tcplat_seconds_count: 4, tcplat_depth: 7 });
});
