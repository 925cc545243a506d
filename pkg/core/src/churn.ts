/**
 * Connection churn per service -> destination over an interval (issue 15): the ONE place where its
 * formulas live, used alike by the Grafana datasource, the renderer and `tcplat top`.
 *
 * Inputs are sums over the interval: tcp_connect_hist `count` of result `ok` (new connections), and the
 * tcp_session_hist fields and lifespan buckets (SESSION_BUCKET_FIELDS) of the connections that CLOSED in
 * it. tcp_session_hist exists only where the agent runs with `--probe-close`.
 */
import { SESSION_BUCKET_BOUNDS_MS, SESSION_BUCKET_FIELDS } from './buckets';
import { quantileFromBuckets } from './histogram';

/** A connection that lived less than this is short-lived: a lifespan bucket bound (1, 1.6, ... 630, 1000 ms). */
export const SHORT_LIVED_MS = 1000;

/** Index of the last lifespan bucket that holds only lifespans <= SHORT_LIVED_MS. */
const SHORT_LAST = SESSION_BUCKET_BOUNDS_MS.indexOf(SHORT_LIVED_MS);
if (SHORT_LAST < 0) throw new Error(`SHORT_LIVED_MS (${SHORT_LIVED_MS}) must be a lifespan bucket bound`);

/** The lifespan bucket fields whose sum is the number of short-lived connections (le_1 .. le_1000). */
export const SHORT_LIVED_FIELDS: readonly string[] = Object.freeze(SESSION_BUCKET_FIELDS.slice(0, SHORT_LAST + 1));

function interval(intervalS: number): number {
  if (!(Number.isFinite(intervalS) && intervalS > 0)) throw new RangeError(`the interval must be a positive number of seconds, got ${intervalS}`);
  return intervalS;
}

/** New connections per second: successful connects (tcp_connect_hist count, result ok) over the interval. */
export function newConnectionsPerS(okConnects: number, intervalS: number): number {
  return okConnects / interval(intervalS);
}

/**
 * Concurrently open connections, the MEAN over the interval, by Little's law: the summed lifespans of the
 * connections that closed in it (tcp_session_hist sum_ms) / the interval. Exact when the interval is long
 * against the lifespans; a connection still open at the interval's end counts in the interval it closes in.
 */
export function meanOpenConnections(lifespanSumMs: number, intervalS: number): number {
  return lifespanSumMs / 1000 / interval(intervalS);
}

/** A lifespan quantile (ms) from summed lifespan buckets, clamped to min/max when known; NaN when empty. */
export function lifespanQuantile(buckets: readonly number[], q: number, minMs = NaN, maxMs = NaN): number {
  if (buckets.length !== SESSION_BUCKET_FIELDS.length) throw new RangeError(`expected ${SESSION_BUCKET_FIELDS.length} lifespan buckets, got ${buckets.length}`);
  return quantileFromBuckets(buckets, q, minMs, maxMs, SESSION_BUCKET_BOUNDS_MS);
}

/**
 * The share (0..1) of connections that lived under SHORT_LIVED_MS: the buckets up to 1000 ms over the
 * connections counted (tcp_session_hist count; the buckets' sum when not given). NaN when none closed.
 */
export function shortLivedShare(buckets: readonly number[], count?: number): number {
  if (buckets.length !== SESSION_BUCKET_FIELDS.length) throw new RangeError(`expected ${SESSION_BUCKET_FIELDS.length} lifespan buckets, got ${buckets.length}`);
  let short = 0;
  let all = 0;
  buckets.forEach((c, i) => {
    if (i <= SHORT_LAST) short += c;
    all += c;
  });
  const n = count ?? all;
  return n > 0 ? short / n : NaN;
}

/** Sums of tcp_session_hist over an interval (one service -> dst, or whatever the caller summed). */
export interface SessionSums {
  count: number;
  sumMs: number;
  minMs?: number;
  maxMs?: number;
  /** Non-cumulative lifespan bucket counts in SESSION_BUCKET_FIELDS order. */
  buckets: readonly number[];
}

export interface Churn {
  newConnectionsPerS: number;
  /** Mean over the interval (Little's law): see meanOpenConnections. */
  meanOpen: number;
  lifespanP50Ms: number;
  lifespanP99Ms: number;
  /** 0..1 */
  shortLivedShare: number;
}

/** Every churn metric of one interval. NaN where no connection closed in it (lifespans unknown). */
export function churn(o: { intervalS: number; okConnects: number; sessions: SessionSums }): Churn {
  const s = o.sessions;
  return {
    newConnectionsPerS: newConnectionsPerS(o.okConnects, o.intervalS),
    meanOpen: meanOpenConnections(s.sumMs, o.intervalS),
    lifespanP50Ms: lifespanQuantile(s.buckets, 0.5, s.minMs, s.maxMs),
    lifespanP99Ms: lifespanQuantile(s.buckets, 0.99, s.minMs, s.maxMs),
    shortLivedShare: shortLivedShare(s.buckets, s.count),
  };
}
