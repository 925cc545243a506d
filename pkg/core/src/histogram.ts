import { BUCKET_BOUNDS_MS, BUCKET_COUNT, bucketIndex } from './buckets';

/** An exact latency histogram over the shared buckets, with count, sum, min and max. */
export class Histogram {
  readonly buckets: number[] = new Array<number>(BUCKET_COUNT).fill(0);
  count = 0;
  sumMs = 0;
  minMs = Infinity;
  maxMs = -Infinity;

  add(ms: number, weight = 1): void {
    this.buckets[bucketIndex(ms)] += weight;
    this.count += weight;
    this.sumMs += ms * weight;
    if (ms < this.minMs) this.minMs = ms;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  merge(other: Histogram): void {
    for (let i = 0; i < BUCKET_COUNT; i++) this.buckets[i] += other.buckets[i];
    this.count += other.count;
    this.sumMs += other.sumMs;
    if (other.minMs < this.minMs) this.minMs = other.minMs;
    if (other.maxMs > this.maxMs) this.maxMs = other.maxMs;
  }

  /** Quantile estimate (ms), see quantileFromBuckets. NaN when empty. */
  quantile(q: number): number {
    return quantileFromBuckets(this.buckets, q, this.minMs, this.maxMs);
  }
}

/**
 * Estimate a quantile from non-cumulative bucket counts by linear interpolation inside the bucket that
 * holds the rank, clamped to the observed min/max when known (so a single sample reports its own value
 * and the overflow bucket is bounded by max). Returns NaN when the histogram is empty. `bounds` are the
 * finite buckets' upper bounds (the counts have one more, the overflow): the connect buckets by default,
 * SESSION_BUCKET_BOUNDS_MS for lifespans.
 */
export function quantileFromBuckets(counts: readonly number[], q: number, minMs = NaN, maxMs = NaN, bounds: readonly number[] = BUCKET_BOUNDS_MS): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be within 0..1, got ${q}`);
  let total = 0;
  for (const c of counts) total += c;
  if (total <= 0) return NaN;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c <= 0) continue;
    if (seen + c >= rank) {
      let lo = i === 0 ? 0 : bounds[i - 1];
      let hi = i >= bounds.length ? Infinity : bounds[i];
      if (Number.isFinite(minMs)) lo = Math.max(lo, Math.min(minMs, hi));
      if (Number.isFinite(maxMs)) hi = Math.min(hi, Math.max(maxMs, lo));
      if (!Number.isFinite(hi)) hi = lo;
      const frac = Math.min(1, Math.max(0, (rank - seen) / c));
      return lo + (hi - lo) * frac;
    }
    seen += c;
  }
  return Number.isFinite(maxMs) ? maxMs : bounds[Math.min(counts.length, bounds.length + 1) - 2] ?? 0;
}
