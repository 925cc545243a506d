import { SESSION_BUCKET_BOUNDS_MS, SESSION_BUCKET_FIELDS, sessionBucketIndex } from './buckets';
import { churn, lifespanQuantile, meanOpenConnections, newConnectionsPerS, SHORT_LIVED_FIELDS, SHORT_LIVED_MS, shortLivedShare, type SessionSums } from './churn';
import { quantileFromBuckets } from './histogram';

/** The tcp_session_hist sums of connections with these lifespans (ms), as the agent would write them. */
function sessions(lifespans: number[]): SessionSums {
  const buckets = SESSION_BUCKET_FIELDS.map(() => 0);
  for (const ms of lifespans) buckets[sessionBucketIndex(ms)]++;
  return { count: lifespans.length, sumMs: lifespans.reduce((a, b) => a + b, 0), minMs: Math.min(...lifespans), maxMs: Math.max(...lifespans), buckets };
}

describe('churn formulas (schema-note: one place for datasource, renderer and top)', () => {
  // A pool that churns: 30 connections of 50 ms and 10 of 5 s closed in a 60 s interval, 40 new ones.
  const s = sessions([...Array<number>(30).fill(50), ...Array<number>(10).fill(5000)]);

  test('30 connections of 50 ms and 10 of 5 s over 60 s', () => {
    const c = churn({ intervalS: 60, okConnects: 40, sessions: s });
    expect(c.newConnectionsPerS).toBeCloseTo(40 / 60, 12);
    // Little's law: (30 x 0.05 s + 10 x 5 s) / 60 s open on average.
    expect(c.meanOpen).toBeCloseTo(51.5 / 60, 12);
    expect(c.shortLivedShare).toBe(0.75);
    // The median is a 50 ms connection: inside its bucket (40, 63], no lower than the smallest lifespan.
    expect(c.lifespanP50Ms).toBeGreaterThanOrEqual(50);
    expect(c.lifespanP50Ms).toBeLessThanOrEqual(63);
    // p99 is one of the 5 s ones: (4000, 6300] clamped to the largest lifespan.
    expect(c.lifespanP99Ms).toBeGreaterThan(4000);
    expect(c.lifespanP99Ms).toBeLessThanOrEqual(5000);
  });

  test('a pool that reuses its connections: long lifespans, few connects, nothing short-lived', () => {
    const c = churn({ intervalS: 600, okConnects: 4, sessions: sessions([300_000, 310_000, 290_000, 305_000]) });
    expect(c.newConnectionsPerS).toBeCloseTo(4 / 600, 12);
    expect(c.shortLivedShare).toBe(0);
    expect(c.meanOpen).toBeCloseTo(1_205_000 / 1000 / 600, 12);
    expect(c.lifespanP50Ms).toBeGreaterThan(250_000);
  });

  test('short-lived means under a second: the 1000 ms bucket bound counts, the next bucket does not', () => {
    expect(SESSION_BUCKET_BOUNDS_MS).toContain(SHORT_LIVED_MS);
    expect(SHORT_LIVED_FIELDS.at(-1)).toBe('le_1000');
    expect(SHORT_LIVED_FIELDS[0]).toBe(SESSION_BUCKET_FIELDS[0]);
    expect(shortLivedShare(sessions([999, 1000, 1001, 1500]).buckets)).toBe(0.5);
    // The count field is the denominator when given (the agent writes it next to the buckets).
    expect(shortLivedShare(sessions([10]).buckets, 4)).toBe(0.25);
  });

  test('nothing closed: lifespans and the short share are unknown (NaN), never 0; open mean is 0', () => {
    const c = churn({ intervalS: 10, okConnects: 3, sessions: { count: 0, sumMs: 0, buckets: SESSION_BUCKET_FIELDS.map(() => 0) } });
    expect(c.newConnectionsPerS).toBeCloseTo(0.3, 12);
    expect(c.meanOpen).toBe(0);
    expect(c.shortLivedShare).toBeNaN();
    expect(c.lifespanP50Ms).toBeNaN();
  });

  test('lifespan quantiles use the lifespan bounds, not the connect ones', () => {
    const h = sessions([20_000]);
    expect(lifespanQuantile(h.buckets, 0.5)).toBeGreaterThan(16_000);
    expect(lifespanQuantile(h.buckets, 0.5)).toBeLessThanOrEqual(25_000);
    expect(lifespanQuantile(h.buckets, 0.5, 20_000, 20_000)).toBe(20_000);
    // The same counts read with the connect bounds would put it far below: the bound set matters.
    expect(quantileFromBuckets(h.buckets, 0.5)).toBeLessThan(16_000);
    // Over a day: the overflow bucket, between a day and the max.
    const long = lifespanQuantile(sessions([2 * 86_400_000]).buckets, 0.5, NaN, 2 * 86_400_000);
    expect(long).toBeGreaterThan(86_400_000);
    expect(long).toBeLessThanOrEqual(2 * 86_400_000);
  });

  test('bad input: a clear error', () => {
    expect(() => newConnectionsPerS(1, 0)).toThrow(/positive number of seconds/);
    expect(() => meanOpenConnections(1, NaN)).toThrow(/positive number of seconds/);
    expect(() => shortLivedShare([1, 2, 3])).toThrow(/lifespan buckets/);
    expect(() => lifespanQuantile([1], 0.5)).toThrow(/lifespan buckets/);
  });
});
