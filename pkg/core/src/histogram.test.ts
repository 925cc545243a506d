import { BUCKET_COUNT } from './buckets';
import { Histogram, quantileFromBuckets } from './histogram';

describe('Histogram', () => {
  test('counts, sums and bounds are exact', () => {
    const h = new Histogram();
    for (const ms of [0.2, 0.3, 1050, 3.5]) h.add(ms);
    expect(h.count).toBe(4);
    expect(h.sumMs).toBeCloseTo(1054);
    expect(h.minMs).toBe(0.2);
    expect(h.maxMs).toBe(1050);
    expect(h.buckets.reduce((a, b) => a + b, 0)).toBe(4);
  });

  test('a single sample reports its own value at every quantile', () => {
    const h = new Histogram();
    h.add(1023.4);
    for (const q of [0, 0.5, 0.99, 1]) expect(h.quantile(q)).toBeCloseTo(1023.4, 5);
  });

  test('quantiles land within the bucket resolution of the true value', () => {
    const h = new Histogram();
    const xs: number[] = [];
    for (let i = 0; i < 10000; i++) {
      const v = 0.05 * Math.pow(10, (i / 10000) * 4); // 0.05 ms .. 500 ms, log-uniform
      xs.push(v);
      h.add(v);
    }
    xs.sort((a, b) => a - b);
    for (const q of [0.5, 0.9, 0.99]) {
      const truth = xs[Math.floor(q * xs.length) - 1];
      const est = h.quantile(q);
      expect(est / truth).toBeGreaterThan(1 / 1.6);
      expect(est / truth).toBeLessThan(1.6);
    }
  });

  test('merge adds windows exactly', () => {
    const a = new Histogram();
    const b = new Histogram();
    a.add(1);
    b.add(2000);
    b.add(20000);
    a.merge(b);
    expect(a.count).toBe(3);
    expect(a.maxMs).toBe(20000);
    expect(a.buckets[BUCKET_COUNT - 1]).toBe(1);
    expect(a.quantile(1)).toBe(20000);
  });

  test('empty histograms give NaN and bad quantiles throw', () => {
    expect(quantileFromBuckets(new Array(BUCKET_COUNT).fill(0), 0.5)).toBeNaN();
    expect(() => quantileFromBuckets([1], 1.5)).toThrow(RangeError);
  });
});
