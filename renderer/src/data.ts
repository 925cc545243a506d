/**
 * Reading tcp_connect_hist (and tls_handshake_hist, tcp_session_hist: HistQuery.measurement picks the layout): queries come from pkg/core's builders (InfluxQL for 1.x, Flux for 2.x, chosen
 * by the credentials), run with a timeout, and the answer is turned into the same rows for both.
 */
import {
  bucketFieldsOf,
  bucketIndex,
  histTagsOf,
  HIST_FIELD,
  MEASUREMENT,
  sessionBucketIndex,
  type HistMeasurement,
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  describeTarget,
  FluxResultError,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  InfluxError,
  readHistLevels,
  levelMs,
  queryFlux,
  queryInfluxQL,
  type HistLevel,
  type HistQuery,
  type HistQueryTag,
  type LevelRead,
  type RollupWhere,
  type HistRow,
  type InfluxTarget,
} from '@tcplat/core';

export type { LevelRead, RollupWhere } from '@tcplat/core';

export interface HistSource {
  /** Rows of the query; throws InfluxError (status 0 when unreachable) on failure. */
  query(q: HistQuery): Promise<HistRow[]>;
  describe(): string;
  dialect: 'influxql' | 'flux';
}

/** A bucket read of one query with more fields than this is split in two, run in parallel. */
const SPLIT_FIELDS = 12;
/** Bucket ranges are worked out per series up to this many series (each one is a clause in the query text). */
export const MAX_PLANNED_SERIES = 200;
/** At most this many bucket queries per chart, run in parallel. */
export const MAX_BUCKET_QUERIES = 4;
/** The cost of one more query, in (series x field) reads: groups that would save fewer reads are merged. */
const QUERY_COST = 8;

type SeriesTags = Record<HistQueryTag, string>;

/** What the bucket plan needs of a histogram measurement, from pkg/core: its series tags, bucket fields and bucket index. */
export interface BucketLayout {
  tags: readonly HistQueryTag[];
  bucketFields: readonly string[];
  bucketIndex: (ms: number) => number;
}

export function bucketLayout(m: HistMeasurement = MEASUREMENT.connectHist): BucketLayout {
  return { tags: histTagsOf(m), bucketFields: bucketFieldsOf(m), bucketIndex: m === MEASUREMENT.sessionHist ? sessionBucketIndex : bucketIndex };
}

/** The buckets one series can have non-zero in a range: those of its smallest and its largest latency, and between. */
export interface SeriesRange {
  /** The series' tags ("" = it has no such tag). */
  tags: SeriesTags;
  /** Bucket indexes of its min_ms and max_ms over the range. */
  lo: number;
  hi: number;
}

/** One bucket query: these fields of these series (null: of every series the query's filters allow). */
export interface BucketRead {
  series: SeriesTags[] | null;
  fields: string[];
}

/**
 * The bucket queries for a range: series with the same bucket range share a query that reads only those
 * buckets; groups whose separate query would save fewer reads than it costs are merged (neighbours in
 * range order, cheapest merge first), down to MAX_BUCKET_QUERIES. Every series is in exactly one query,
 * so adding the queries' answers up is exact. Above MAX_PLANNED_SERIES series: one query, one range.
 */
export function planBucketReads(ranges: readonly SeriesRange[], layout: BucketLayout = bucketLayout()): BucketRead[] {
  if (ranges.length === 0) return [];
  interface Group {
    lo: number;
    hi: number;
    members: SeriesTags[];
  }
  const cost = (lo: number, hi: number, n: number) => QUERY_COST + n * (hi - lo + 1);
  let groups: Group[];
  if (ranges.length > MAX_PLANNED_SERIES) {
    groups = [{ lo: Math.min(...ranges.map((r) => r.lo)), hi: Math.max(...ranges.map((r) => r.hi)), members: [] }];
  } else {
    const byRange = new Map<string, Group>();
    for (const r of ranges) {
      const k = `${r.lo},${r.hi}`;
      const g = byRange.get(k);
      if (g) g.members.push(r.tags);
      else byRange.set(k, { lo: r.lo, hi: r.hi, members: [r.tags] });
    }
    groups = [...byRange.values()].sort((a, b) => a.lo - b.lo || a.hi - b.hi);
    while (groups.length > 1) {
      let best = -1;
      let bestDelta = Infinity;
      for (let i = 0; i + 1 < groups.length; i++) {
        const a = groups[i];
        const b = groups[i + 1];
        const na = a.members.length;
        const nb = b.members.length;
        const delta = cost(Math.min(a.lo, b.lo), Math.max(a.hi, b.hi), na + nb) - cost(a.lo, a.hi, na) - cost(b.lo, b.hi, nb);
        if (delta < bestDelta) {
          bestDelta = delta;
          best = i;
        }
      }
      if (bestDelta > 0 && groups.length <= MAX_BUCKET_QUERIES) break;
      const a = groups[best];
      const b = groups.splice(best + 1, 1)[0];
      a.lo = Math.min(a.lo, b.lo);
      a.hi = Math.max(a.hi, b.hi);
      for (const m of b.members) a.members.push(m);
    }
  }
  const reads: BucketRead[] = groups.map((g) => ({
    // One group holds every series there is: no need to list them.
    series: groups.length === 1 ? null : g.members,
    fields: layout.bucketFields.slice(g.lo, g.hi + 1),
  }));
  if (reads.length === 1 && reads[0].fields.length > SPLIT_FIELDS) {
    const { series, fields } = reads[0];
    return [
      { series, fields: fields.filter((_, i) => i % 2 === 0) },
      { series, fields: fields.filter((_, i) => i % 2 === 1) },
    ];
  }
  return reads;
}

/** Per-series bucket ranges from the answer of a min/max query grouped by every tag of the layout (its series). */
export function seriesRanges(rows: readonly HistRow[], layout: BucketLayout = bucketLayout()): SeriesRange[] {
  const SERIES_TAGS = layout.tags;
  const bySeries = new Map<string, { tags: SeriesTags; min: number; max: number; incomplete: boolean }>();
  for (const r of rows) {
    const tags = {} as SeriesTags;
    for (const t of SERIES_TAGS) tags[t] = r.tags[t] ?? '';
    const k = JSON.stringify(SERIES_TAGS.map((t) => tags[t]));
    let s = bySeries.get(k);
    if (!s) bySeries.set(k, (s = { tags, min: Infinity, max: -Infinity, incomplete: false }));
    const lo = r.values[HIST_FIELD.minMs];
    const hi = r.values[HIST_FIELD.maxMs];
    // A series with one of the two missing: no bound known, read every bucket.
    if (lo === undefined || hi === undefined) s.incomplete = true;
    else {
      s.min = Math.min(s.min, lo);
      s.max = Math.max(s.max, hi);
    }
  }
  const out: SeriesRange[] = [];
  for (const s of bySeries.values()) {
    const whole = s.incomplete || !(s.min <= s.max);
    out.push({ tags: s.tags, lo: whole ? 0 : layout.bucketIndex(s.min), hi: whole ? layout.bucketFields.length - 1 : layout.bucketIndex(s.max) });
  }
  return out;
}

function bucketSum(r: HistRow, layout: BucketLayout): number {
  let n = 0;
  for (const f of layout.bucketFields) n += r.values[f] ?? 0;
  return n;
}

function rowKey(r: HistRow): string {
  return JSON.stringify([r.timeMs, r.tags]);
}

/**
 * Rows of one query (`base`: count/min/max...) joined with rows of bucket queries over the same bins and
 * groups: a bucket field that several of those answer (for different series) is added up.
 */
export function mergeRows(base: readonly HistRow[], sums: readonly HistRow[][]): HistRow[] {
  const byKey = new Map<string, HistRow>();
  for (const r of base) byKey.set(rowKey(r), { timeMs: r.timeMs, tags: r.tags, values: { ...r.values } });
  for (const rows of sums) {
    for (const r of rows) {
      const k = rowKey(r);
      let have = byKey.get(k);
      if (!have) byKey.set(k, (have = { timeMs: r.timeMs, tags: r.tags, values: {} }));
      for (const [f, v] of Object.entries(r.values)) have.values[f] = (have.values[f] ?? 0) + v;
    }
  }
  return [...byKey.values()].sort((a, b) => a.timeMs - b.timeMs);
}

/** A part of at most this many windows of its level is read in one query of every field. */
export const SMALL_PART_WINDOWS = 24;

/**
 * The newest windows of a chart read at finer levels (planHistParts) span a few windows each: there the
 * two-phase plan's extra queries cost more than the bucket fields they save.
 */
function smallPart(q: HistQuery): boolean {
  if (q.source === undefined) return false;
  return (q.toMs - q.fromMs) / levelMs(q.source.level) <= SMALL_PART_WINDOWS;
}

export function influxSource(target: InfluxTarget, timeoutMs: number): HistSource {
  async function run(q: HistQuery, signal: AbortSignal): Promise<HistRow[]> {
    if (target.version === 1) {
      const [series] = await queryInfluxQL(target, buildInfluxQLHistQuery(q), { method: 'POST', epoch: 'ms', signal });
      return histRowsFromInfluxQL(series ?? [], q.groupBy ?? []);
    }
    const csv = await queryFlux(target, buildFluxHistQuery(q, { bucket: target.bucket }), signal);
    return histRowsFromFluxCsv(csv, q.groupBy ?? []);
  }

  /**
   * Bucket fields dominate the cost of a query (InfluxDB 1.x opens a cursor per field and series, and
   * most of the buckets are zero): read count (and the query's other scalars) per bin (cheap, and needed anyway) and, in parallel,
   * min/max per series over the whole range; then, for each series, only the buckets between its own
   * smallest and largest latency (exact: none of its connects lies outside), series with the same range
   * in one query, the queries in parallel. An empty range costs the two small queries. When the buckets
   * of a bin add up to less than its count, one query of every field is read instead.
   */
  async function twoPhase(q: HistQuery, signal: AbortSignal): Promise<HistRow[]> {
    const layout = bucketLayout(q.measurement);
    const scalars = q.metrics.filter((m) => m !== 'buckets');
    const head = run({ ...q, metrics: [...new Set([...scalars, 'count'] as const)], fields: undefined }, signal);
    const buckets = run({ ...q, metrics: ['min', 'max'], fields: undefined, groupBy: layout.tags, windowMs: q.toMs - q.fromMs }, signal).then((rows) =>
      Promise.all(planBucketReads(seriesRanges(rows, layout), layout).map((r) => run({ ...q, metrics: ['buckets'], fields: r.fields, ...(r.series ? { series: r.series } : {}) }, signal))),
    );
    const [base, parts] = await Promise.all([head, buckets]);
    const rows = mergeRows(base, parts);
    // Every connect is counted in one bucket. Buckets that add up to less than the count mean a series
    // had buckets outside its min/max (points written without min_ms/max_ms, not by the agent) or a point
    // arrived between the queries: then read every field in one query instead.
    if (rows.some((r) => bucketSum(r, layout) < (r.values[HIST_FIELD.count] ?? 0))) return run(q, signal);
    return rows;
  }

  return {
    dialect: target.version === 1 ? 'influxql' : 'flux',
    describe: () => describeTarget(target),
    async query(q: HistQuery): Promise<HistRow[]> {
      const signal = AbortSignal.timeout(timeoutMs);
      try {
        return q.metrics.includes('buckets') && q.fields === undefined && !smallPart(q) ? await twoPhase(q, signal) : await run(q, signal);
      } catch (e) {
        if (e instanceof FluxResultError) throw new InfluxError(e.message, 400);
        if (signal.aborted && !(e instanceof InfluxError && e.status !== 0)) {
          throw new InfluxError(`${describeTarget(target)} did not answer within ${timeoutMs} ms`, 0);
        }
        throw e;
      }
    },
  };
}

/** Read a chart's rows at the picked level: pkg/core's readHistLevels over this source. */
export function readLevels(source: HistSource, q: HistQuery, level: HistLevel, where: RollupWhere, nowMs: number, baseMs: number): Promise<LevelRead> {
  return readHistLevels((x) => source.query(x), source.dialect, q, level, where, nowMs, baseMs);
}
