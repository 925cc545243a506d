/**
 * Histogram bucket boundaries for tcp_connect_hist: one constant shared by agent, renderer and datasource.
 *
 * Upper bounds in milliseconds, log-spaced from 10 us to 10 s with five steps per decade (the Renard R5
 * series 1, 1.6, 2.5, 4, 6.3, so names stay short and exact), plus an overflow bucket above 10 s.
 * Buckets are non-cumulative: bucket i counts latencies in (BOUNDS_MS[i-1], BOUNDS_MS[i]]; bucket 0 also
 * takes everything at or below 10 us.
 */

const R5 = [1, 1.6, 2.5, 4, 6.3];

function makeBounds(): number[] {
  const out: number[] = [];
  for (let exp = -2; exp <= 4; exp++) {
    for (const m of R5) {
      if (exp === 4 && m > 1) break;
      // toPrecision avoids 0.0160000000001-style names; the values are exact decimals.
      out.push(Number((m * 10 ** exp).toPrecision(2)));
    }
  }
  return out;
}

/** Upper bounds (ms) of the finite buckets: 0.01 .. 10000. */
export const BUCKET_BOUNDS_MS: readonly number[] = Object.freeze(makeBounds());

/** Number of buckets including the overflow bucket. */
export const BUCKET_COUNT = BUCKET_BOUNDS_MS.length + 1;

/** Field name of a bucket: `le_<upper bound in ms>`, and `le_inf` for overflow. */
export function bucketField(index: number): string {
  if (index < 0 || index >= BUCKET_COUNT) throw new RangeError(`bucket index ${index} out of range 0..${BUCKET_COUNT - 1}`);
  return index === BUCKET_BOUNDS_MS.length ? 'le_inf' : `le_${BUCKET_BOUNDS_MS[index]}`;
}

/** All bucket field names in order, overflow last. */
export const BUCKET_FIELDS: readonly string[] = Object.freeze(Array.from({ length: BUCKET_COUNT }, (_, i) => bucketField(i)));

/** Lower bound (ms) of a bucket; 0 for the first. */
export function bucketLowerMs(index: number): number {
  return index === 0 ? 0 : BUCKET_BOUNDS_MS[index - 1];
}

/** Upper bound (ms) of a bucket; Infinity for overflow. */
export function bucketUpperMs(index: number): number {
  return index >= BUCKET_BOUNDS_MS.length ? Infinity : BUCKET_BOUNDS_MS[index];
}

/** Index of the bucket a latency (ms) falls in. NaN and negatives go to bucket 0. */
export function bucketIndex(ms: number): number {
  let lo = 0;
  let hi = BUCKET_BOUNDS_MS.length; // overflow index
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms <= BUCKET_BOUNDS_MS[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Bucket boundaries for tcp_session_hist (connection lifespans): the same layout as the connect buckets
 * (R5 steps, non-cumulative, `le_<ms>` fields, overflow `le_inf`) over 1 ms .. a day: 1, 1.6, 2.5, 4,
 * 6.3, 10, ... 63,000,000 ms (17.5 h), then 86,400,000 ms (24 h), then the overflow.
 */
function makeSessionBounds(): number[] {
  const out: number[] = [];
  for (let exp = 0; exp <= 7; exp++) for (const m of R5) out.push(Number((m * 10 ** exp).toPrecision(2)));
  out.push(86_400_000);
  return out;
}

/** Upper bounds (ms) of the finite lifespan buckets: 1 .. 86,400,000. */
export const SESSION_BUCKET_BOUNDS_MS: readonly number[] = Object.freeze(makeSessionBounds());

/** Number of lifespan buckets including the overflow bucket. */
export const SESSION_BUCKET_COUNT = SESSION_BUCKET_BOUNDS_MS.length + 1;

/** Lifespan bucket field names in order, overflow (`le_inf`) last. */
export const SESSION_BUCKET_FIELDS: readonly string[] = Object.freeze(
  Array.from({ length: SESSION_BUCKET_COUNT }, (_, i) => (i === SESSION_BUCKET_BOUNDS_MS.length ? 'le_inf' : `le_${SESSION_BUCKET_BOUNDS_MS[i]}`)),
);

/** Index of the lifespan bucket a lifespan (ms) falls in. NaN and negatives go to bucket 0. */
export function sessionBucketIndex(ms: number): number {
  let lo = 0;
  let hi = SESSION_BUCKET_BOUNDS_MS.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ms <= SESSION_BUCKET_BOUNDS_MS[mid]) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
