import { BUCKET_BOUNDS_MS, BUCKET_COUNT, BUCKET_FIELDS, bucketField, bucketIndex, bucketLowerMs, bucketUpperMs, SESSION_BUCKET_BOUNDS_MS, SESSION_BUCKET_COUNT, SESSION_BUCKET_FIELDS, sessionBucketIndex } from './buckets';

describe('histogram buckets', () => {
  test('run log-spaced from 10 us to 10 s, five per decade, plus overflow', () => {
    expect(BUCKET_BOUNDS_MS[0]).toBe(0.01);
    expect(BUCKET_BOUNDS_MS[BUCKET_BOUNDS_MS.length - 1]).toBe(10000);
    expect(BUCKET_BOUNDS_MS).toHaveLength(31);
    expect(BUCKET_COUNT).toBe(32);
    for (let i = 1; i < BUCKET_BOUNDS_MS.length; i++) {
      const ratio = BUCKET_BOUNDS_MS[i] / BUCKET_BOUNDS_MS[i - 1];
      expect(ratio).toBeGreaterThan(1.4);
      expect(ratio).toBeLessThan(1.8);
    }
    // every decade boundary is a bucket bound
    for (const d of [0.01, 0.1, 1, 10, 100, 1000, 10000]) expect(BUCKET_BOUNDS_MS).toContain(d);
  });

  test('field names are unique, numeric and end with the overflow bucket', () => {
    expect(new Set(BUCKET_FIELDS).size).toBe(BUCKET_COUNT);
    expect(BUCKET_FIELDS[0]).toBe('le_0.01');
    expect(BUCKET_FIELDS[BUCKET_COUNT - 1]).toBe('le_inf');
    expect(bucketField(5)).toBe('le_0.1');
    expect(() => bucketField(BUCKET_COUNT)).toThrow(RangeError);
    for (const f of BUCKET_FIELDS.slice(0, -1)) expect(Number(f.slice(3))).not.toBeNaN();
  });

  test('bucketIndex puts a value in (lower, upper]', () => {
    expect(bucketIndex(0)).toBe(0);
    expect(bucketIndex(0.01)).toBe(0);
    expect(bucketIndex(0.0100001)).toBe(1);
    expect(bucketIndex(1)).toBe(BUCKET_BOUNDS_MS.indexOf(1));
    expect(bucketIndex(1.05)).toBe(BUCKET_BOUNDS_MS.indexOf(1.6));
    expect(bucketIndex(10000)).toBe(30);
    expect(bucketIndex(10000.5)).toBe(31);
    expect(bucketIndex(1e9)).toBe(31);
    for (let i = 0; i < BUCKET_COUNT; i++) {
      const lo = bucketLowerMs(i);
      const hi = bucketUpperMs(i);
      const inside = Number.isFinite(hi) ? (lo + hi) / 2 : lo * 2;
      expect(bucketIndex(inside)).toBe(i);
    }
  });
});

describe('session (lifespan) buckets', () => {
  test('run from 1 ms to a day, R5 steps, plus overflow; le_<ms> fields like the connect buckets', () => {
    expect(SESSION_BUCKET_BOUNDS_MS[0]).toBe(1);
    expect(SESSION_BUCKET_BOUNDS_MS.at(-1)).toBe(86_400_000);
    expect(SESSION_BUCKET_BOUNDS_MS.slice(0, 6)).toEqual([1, 1.6, 2.5, 4, 6.3, 10]);
    expect(SESSION_BUCKET_BOUNDS_MS.at(-2)).toBe(63_000_000);
    expect(SESSION_BUCKET_COUNT).toBe(SESSION_BUCKET_BOUNDS_MS.length + 1);
    expect(SESSION_BUCKET_FIELDS[0]).toBe('le_1');
    expect(SESSION_BUCKET_FIELDS.at(-1)).toBe('le_inf');
    expect(new Set(SESSION_BUCKET_FIELDS).size).toBe(SESSION_BUCKET_COUNT);
  });

  test('a lifespan goes to the first bucket whose bound it does not exceed', () => {
    expect(sessionBucketIndex(0)).toBe(0);
    expect(sessionBucketIndex(1)).toBe(0);
    expect(sessionBucketIndex(1.0001)).toBe(1);
    expect(SESSION_BUCKET_FIELDS[sessionBucketIndex(1500)]).toBe('le_1600');
    expect(SESSION_BUCKET_FIELDS[sessionBucketIndex(86_400_000)]).toBe('le_86400000');
    expect(SESSION_BUCKET_FIELDS[sessionBucketIndex(86_400_001)]).toBe('le_inf');
  });
});
