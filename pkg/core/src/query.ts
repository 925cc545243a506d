/**
 * Query builders for `tcp_connect_hist`, in both dialects (InfluxQL for 1.x, Flux for 2.x), and the
 * parsers that turn either answer into the same rows. Used by the renderer and the Grafana datasource.
 *
 * Every user value reaches the query through quote() (escape.ts); numbers are checked to be finite
 * integers before they are printed. Aggregation happens in the database: bucket fields, count, sum and
 * syn_retrans are SUMMED over every point in a time bin (the agent may write several points per series
 * per window: late events are stamped window start + k ns), min_ms takes the minimum and max_ms the maximum.
 *
 * Time bins are aligned to the Unix epoch in both dialects (InfluxQL `GROUP BY time()` and Flux
 * `aggregateWindow` both align to 1970-01-01), each row is stamped with its bin's start, and the range is
 * [fromMs, toMs). Empty bins are not returned.
 */
import { BUCKET_FIELDS, SESSION_BUCKET_FIELDS } from './buckets';
import { MAX_TIME_MS } from './duration';
import { QueryValueError, quote } from './escape';
import { FLEET_LAG_MS, FLEET_ROLLUP_WINDOWS, fleetRollupMeasurement, HIST_FIELD, MEASUREMENT, SESSION_HIST_FIELD, ROLLUP_BUCKET_SUFFIX, ROLLUP_RP, ROLLUP_WINDOWS, rollupMeasurement, TAG, type RollupWindowName } from './schema';

/** Tags of tcp_connect_hist that queries filter and group by. */
export const HIST_QUERY_TAGS = [TAG.service, TAG.dst, TAG.host, TAG.result] as const;
export type HistQueryTag = (typeof HIST_QUERY_TAGS)[number];

/**
 * The histogram measurements these builders read: tcp_connect_hist, tls_handshake_hist (the same schema,
 * issue 16) and tcp_session_hist (lifespans: SESSION_BUCKET_FIELDS, no `result` tag, issue 15).
 */
export const HIST_MEASUREMENTS = [MEASUREMENT.connectHist, MEASUREMENT.tlsHist, MEASUREMENT.sessionHist] as const;
export type HistMeasurement = (typeof HIST_MEASUREMENTS)[number];

/**
 * What a rolled-up measurement is made of, for the rollup engine (agent/src/rollup): the tags a series is
 * kept apart by, every field with how it adds up over a window, and which fields are floats (the others
 * are integer counts).
 */
export interface RollupSchema {
  measurement: HistMeasurement;
  tags: readonly string[];
  columns: readonly HistColumn[];
  floatFields: readonly string[];
}

const HIST_FLOATS = [HIST_FIELD.sumMs, HIST_FIELD.minMs, HIST_FIELD.maxMs];

/**
 * The rolled-up measurements, in the order the engine makes them. tls_handshake_hist has tcp_connect_hist's
 * schema; tcp_session_hist has no `result` tag, its lifespan buckets and SESSION_HIST_FIELD (min_ms min,
 * max_ms max, the rest summed).
 */
export const ROLLUP_SCHEMAS: readonly RollupSchema[] = [
  { measurement: MEASUREMENT.connectHist, tags: [TAG.host, TAG.service, TAG.dst, TAG.result], columns: histColumns(['buckets', 'count', 'sum', 'min', 'max', 'synRetrans']), floatFields: HIST_FLOATS },
  {
    measurement: MEASUREMENT.tlsHist,
    tags: [TAG.host, TAG.service, TAG.dst, TAG.result],
    columns: histColumns(['buckets', 'count', 'sum', 'min', 'max', 'synRetrans'], MEASUREMENT.tlsHist),
    floatFields: HIST_FLOATS,
  },
  {
    measurement: MEASUREMENT.sessionHist,
    tags: [TAG.host, TAG.service, TAG.dst],
    columns: [
      ...histColumns(['buckets', 'count', 'sum', 'min', 'max'], MEASUREMENT.sessionHist),
      ...[SESSION_HIST_FIELD.retrans, SESSION_HIST_FIELD.resetsIn, SESSION_HIST_FIELD.resetsOut, SESSION_HIST_FIELD.zeroWindows].map((field) => ({ field, agg: 'sum' as const })),
    ],
    floatFields: [SESSION_HIST_FIELD.sumMs, SESSION_HIST_FIELD.minMs, SESSION_HIST_FIELD.maxMs],
  },
];

/**
 * The histogram measurements that have rollups (agent/src/rollup makes them, from ROLLUP_SCHEMAS). THE
 * switch: readers of a measurement listed here read its rollups; queries of the others read their 10 s
 * data whatever the range.
 */
export const ROLLED_UP_MEASUREMENTS: readonly HistMeasurement[] = ROLLUP_SCHEMAS.map((s) => s.measurement);

/** The rollup schema of a measurement; throws for one without rollups. */
export function rollupSchemaOf(measurement: string): RollupSchema {
  const s = ROLLUP_SCHEMAS.find((x) => x.measurement === measurement);
  if (!s) throw new QueryValueError(`${JSON.stringify(measurement)} has no rollups: use one of ${ROLLED_UP_MEASUREMENTS.join(', ')}`);
  return s;
}

/** The histogram measurements that also have host-less fleet rollups (`tcplat rollup` makes them). */
export const FLEET_ROLLED_UP_MEASUREMENTS: readonly HistMeasurement[] = [MEASUREMENT.connectHist];

/** The rollup levels a query of `measurement` may read, among `levels`: none when it has no rollups. */
export function rollupLevelsFor(measurement: HistMeasurement, levels: readonly RollupWindowName[] = ROLLUP_WINDOWS.map((w) => w.name)): RollupWindowName[] {
  return ROLLED_UP_MEASUREMENTS.includes(measurement) ? [...levels] : [];
}

/** The tags a measurement's histogram series carry (tcp_session_hist has no `result`). */
export function histTagsOf(measurement: HistMeasurement): readonly HistQueryTag[] {
  return measurement === MEASUREMENT.sessionHist ? HIST_QUERY_TAGS.filter((t) => t !== TAG.result) : HIST_QUERY_TAGS;
}

/** The bucket fields of a measurement, in order, overflow last. */
export function bucketFieldsOf(measurement: HistMeasurement): readonly string[] {
  return measurement === MEASUREMENT.sessionHist ? SESSION_BUCKET_FIELDS : BUCKET_FIELDS;
}

/**
 * What to read: `buckets` (every bucket field, summed), `count`, `sum` (sum_ms), `min` (min_ms),
 * `max` (max_ms), `synRetrans` (syn_retrans, summed).
 */
export const HIST_METRICS = ['buckets', 'count', 'sum', 'min', 'max', 'synRetrans'] as const;
export type HistMetric = (typeof HIST_METRICS)[number];

export interface HistQuery {
  /** Exact-match filters: a series matches when its tag equals any listed value. Absent or empty: no filter. */
  filters?: Partial<Record<HistQueryTag, readonly string[]>>;
  /** Inclusive start, epoch ms. */
  fromMs: number;
  /** Exclusive end, epoch ms. */
  toMs: number;
  /** Width of a time bin, ms (a positive integer). */
  windowMs: number;
  metrics: readonly HistMetric[];
  /** Tags to keep apart (one row per bin per combination); absent: everything summed together. */
  groupBy?: readonly HistQueryTag[];
  /**
   * Read only these of the metrics' fields (e.g. the buckets that can be non-zero, or one half of them
   * for two queries in parallel); absent: all of them. Fields not read are absent from the rows.
   */
  fields?: readonly string[];
  /**
   * Read only these series: each entry is one series given by its tags (every tag named must equal its
   * value; "" matches a series without that tag), and a point counts when it matches any entry. ANDed with
   * `filters`. Used to read different bucket fields for different series (exact when the entries of
   * the queries that are added up never overlap). Absent: every series the filters allow.
   */
  series?: readonly Readonly<Partial<Record<HistQueryTag, string>>>[];
  /** What to read: the 10 s data or one rollup level, and where it lives. Absent: the 10 s data. */
  source?: HistSourceRef;
  /** Which histogram measurement (its rollups at a rollup level). Absent: tcp_connect_hist. */
  measurement?: HistMeasurement;
}

/** The finest level: the agent's own windows (`tcp_connect_hist`, 10 s by default). */
export const BASE_LEVEL = 'base';
/** A resolution a query can read: the 10 s data (`base`) or one rollup window. */
export type HistLevel = typeof BASE_LEVEL | RollupWindowName;
/** Every level, finest first. */
export const HIST_LEVELS: readonly HistLevel[] = [BASE_LEVEL, ...ROLLUP_WINDOWS.map((w) => w.name)];

/**
 * Where a query reads. `base`: tcp_connect_hist in the target's own retention policy / bucket (`rp` names
 * another one). A rollup level: `tcp_connect_hist_<window>` in the rollup retention policy (1.x, default
 * ROLLUP_RP, in the same database) or the rollup bucket (2.x, default `<bucket>` + ROLLUP_BUCKET_SUFFIX).
 */
export interface HistSourceRef {
  level: HistLevel;
  /** InfluxQL: the retention policy, put in the FROM clause ("rp"."measurement"). */
  rp?: string;
  /** Flux: the bucket. */
  bucket?: string;
  /** The fleet rollup of the level (summed over hosts, no host tag: FLEET_ROLLUP_WINDOWS only). */
  fleet?: boolean;
}

/**
 * The measurement a level is read from: `measurement` itself (default tcp_connect_hist) or its rollup
 * (`fleet`: its host-less fleet rollup).
 */
export function levelMeasurement(level: HistLevel, measurement: HistMeasurement = MEASUREMENT.connectHist, fleet = false): string {
  if (level === BASE_LEVEL) return measurement;
  return fleet ? fleetRollupMeasurement(measurement, level) : rollupMeasurement(measurement, level);
}

/** Window of a level in ms; `base` is the agent's flush window (baseMs). */
export function levelMs(level: HistLevel, baseMs: number = BASE_WINDOW_MS): number {
  if (level === BASE_LEVEL) return baseMs;
  const w = ROLLUP_WINDOWS.find((x) => x.name === level);
  if (!w) throw new QueryValueError(`unknown resolution ${JSON.stringify(level)}: use one of ${HIST_LEVELS.join(', ')}`);
  return w.ms;
}

/**
 * What a chart's subtitle or a Grafana notice says was read: "10 s data", "1 min rollups", "1 h rollups",
 * "1 h fleet rollups" (`fleet`: the host-less fleet rollups were read for the range).
 */
export function levelLabel(level: HistLevel, baseMs: number = BASE_WINDOW_MS, fleet = false): string {
  const ms = levelMs(level, baseMs);
  const text = ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : ms % 60_000 === 0 ? `${ms / 60_000} min` : `${ms / 1000} s`;
  return level === BASE_LEVEL ? `${text} data` : `${text} ${fleet ? 'fleet rollups' : 'rollups'}`;
}

/** The agent's default flush window: the width of a `tcp_connect_hist` window. */
export const BASE_WINDOW_MS = 10_000;

/**
 * Freshness: the agent recomputes the rollup windows that new points touched every 30 s, so a rollup can
 * be up to about a minute behind the 10 s data. A rollup window that ends after now - ROLLUP_LAG_MS is
 * read from the next finer level instead (down to the 10 s data), so the newest bins are as complete as
 * the 10 s data and nothing is counted twice (each part reads a different time range).
 */
export const ROLLUP_LAG_MS = 120_000;

export interface ResolutionRequest {
  fromMs: number;
  toMs: number;
  /** The widest bin that still gives one per pixel column / per Grafana interval, ms ... */
  intervalMs?: number;
  /** ... or the number of columns to fill over [fromMs, toMs). One of the two. */
  columns?: number;
  /** The rollup levels that may be read (default all); [] reads only the 10 s data. */
  levels?: readonly RollupWindowName[];
  /** The 10 s data's window (the agent's flush window; default 10 s). */
  baseMs?: number;
}

export interface Resolution {
  /** The level read for the range (finer levels only for the newest windows: see planHistParts). */
  level: HistLevel;
  /** That level's window, ms. */
  levelMs: number;
  /** Bin width: the asked interval rounded up to a whole number of the level's windows (never below one). */
  windowMs: number;
}

/**
 * The coarsest level whose window is no wider than the asked bin (so there is still at least one bin per
 * pixel column or Grafana interval), and the bin width rounded up to a whole number of that level's
 * windows, so that a bin never splits a rollup window (every window is stamped at its start, epoch-aligned).
 */
export function pickResolution(r: ResolutionRequest): Resolution {
  const baseMs = r.baseMs ?? BASE_WINDOW_MS;
  if (!Number.isSafeInteger(baseMs) || baseMs <= 0) throw new QueryValueError(`baseMs must be a positive integer, got ${baseMs}`);
  let interval: number;
  if (r.intervalMs !== undefined) interval = r.intervalMs;
  else if (r.columns !== undefined && r.columns >= 1) interval = (r.toMs - r.fromMs) / r.columns;
  else throw new QueryValueError('pickResolution needs intervalMs or columns (at least 1)');
  if (!Number.isFinite(interval) || interval <= 0) interval = baseMs;
  const allowed = new Set<string>(r.levels ?? ROLLUP_WINDOWS.map((w) => w.name));
  let level: HistLevel = BASE_LEVEL;
  let ms = baseMs;
  for (const w of ROLLUP_WINDOWS) {
    // A rollup finer than the base window (a 1 min flush) would be no gain.
    if (allowed.has(w.name) && w.ms <= interval && w.ms > ms) {
      level = w.name;
      ms = w.ms;
    }
  }
  return { level, levelMs: ms, windowMs: Math.max(1, Math.ceil(Math.max(interval, ms) / ms)) * ms };
}

/** One time range of a query and the level it is read from. */
export interface HistPart {
  level: HistLevel;
  fromMs: number;
  toMs: number;
  /** Read from the level's fleet rollup (summed over hosts). */
  fleet?: boolean;
}

/**
 * The parts to read [fromMs, toMs) at `level`: the level's whole windows that ended before nowMs - lagMs,
 * then each finer level (among `levels`, then the 10 s data) for the windows the coarser one may not have
 * caught up with yet. Past ranges are one part. Parts never overlap and cover the range exactly; each
 * part's bounds are whole windows of its own level (besides the range's own ends). Give a range of whole
 * windows of `level` (whole bins of pickResolution's windowMs are): a rollup point holds its whole window,
 * so a range that cut one would count the part of it outside the range, or miss the part inside.
 */
export function planHistParts(o: { fromMs: number; toMs: number; level: HistLevel; nowMs: number; lagMs?: number; levels?: readonly RollupWindowName[]; baseMs?: number }): HistPart[] {
  const lag = o.lagMs ?? ROLLUP_LAG_MS;
  const allowed = new Set<string>(o.levels ?? ROLLUP_WINDOWS.map((w) => w.name));
  // The picked level and every finer allowed one, coarsest first, then the 10 s data.
  const chain: HistLevel[] = [];
  for (const w of [...ROLLUP_WINDOWS].reverse()) {
    if (w.ms <= levelMs(o.level, o.baseMs) && allowed.has(w.name) && o.level !== BASE_LEVEL) chain.push(w.name);
  }
  if (o.level !== BASE_LEVEL && !chain.includes(o.level)) chain.unshift(o.level);
  chain.push(BASE_LEVEL);
  const parts: HistPart[] = [];
  let from = o.fromMs;
  for (const level of chain) {
    if (from >= o.toMs) break;
    const w = levelMs(level, o.baseMs);
    // The base level reads everything that is left.
    const to = level === BASE_LEVEL ? o.toMs : Math.min(o.toMs, Math.floor((o.nowMs - lag) / w) * w);
    if (to > from) {
      parts.push({ level, fromMs: from, toMs: to });
      from = to;
    }
  }
  return parts;
}

/** The field -> aggregation of every histogram field (for adding up rows of several parts). */
const FIELD_AGG: ReadonlyMap<string, HistAgg> = new Map(histColumns(HIST_METRICS).map((c) => [c.field, c.agg]));

/**
 * Rows of several parts (different time ranges, maybe different levels) as one answer with bins of
 * `windowMs`: each row's time snapped to its bin's start (Flux stamps a bin cut by the range's start with
 * that start), rows of the same bin and tags combined as the database would (sum, min, max per field).
 */
export function mergeHistParts(parts: readonly (readonly HistRow[])[], windowMs: number): HistRow[] {
  const byKey = new Map<string, HistRow>();
  for (const rows of parts) {
    for (const r of rows) {
      const timeMs = Math.floor(r.timeMs / windowMs) * windowMs;
      const k = JSON.stringify([timeMs, r.tags]);
      const have = byKey.get(k);
      if (!have) {
        byKey.set(k, { timeMs, tags: r.tags, values: { ...r.values } });
        continue;
      }
      for (const [f, v] of Object.entries(r.values)) {
        const old = have.values[f];
        const agg = FIELD_AGG.get(f) ?? 'sum';
        have.values[f] = old === undefined ? v : agg === 'min' ? Math.min(old, v) : agg === 'max' ? Math.max(old, v) : old + v;
      }
    }
  }
  return [...byKey.values()].sort((a, b) => a.timeMs - b.timeMs);
}

/** At most this many entries in HistQuery.series (each one adds a clause to the query text). */
export const MAX_SERIES_ENTRIES = 500;

export type HistAgg = 'sum' | 'min' | 'max';

export interface HistColumn {
  /** Field name in tcp_connect_hist, also the column name in the answer. */
  field: string;
  agg: HistAgg;
}

/** The fields a query reads and how each is aggregated, in a fixed order (buckets first). */
export function histColumns(metrics: readonly HistMetric[], measurement: HistMeasurement = MEASUREMENT.connectHist): HistColumn[] {
  const want = new Set(metrics);
  const out: HistColumn[] = [];
  if (want.has('buckets')) for (const f of bucketFieldsOf(measurement)) out.push({ field: f, agg: 'sum' });
  if (want.has('count')) out.push({ field: HIST_FIELD.count, agg: 'sum' });
  if (want.has('sum')) out.push({ field: HIST_FIELD.sumMs, agg: 'sum' });
  if (want.has('min')) out.push({ field: HIST_FIELD.minMs, agg: 'min' });
  if (want.has('max')) out.push({ field: HIST_FIELD.maxMs, agg: 'max' });
  if (want.has('synRetrans')) out.push({ field: HIST_FIELD.synRetrans, agg: 'sum' });
  return out;
}

function checkTagValue(what: string, v: unknown): void {
  if (typeof v !== 'string') throw new QueryValueError(`${what}: expected strings, got ${typeof v}`);
  // No tag value holds a control character (the line-protocol encoder writes them as `\n`, `\r`,
  // `\t`, `\xNN` text), and InfluxQL 1.x string literals cannot carry CR or TAB at all: refuse them.
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(v)) throw new QueryValueError(`${what}: tag values never contain control characters, got ${JSON.stringify(v.slice(0, 40))}`);
}

type SeriesEntry = [HistQueryTag, string][];

/** Validate a query's shape; throws QueryValueError naming the bad part. Returns normalised parts. */
function check(q: HistQuery): { filters: [HistQueryTag, string[]][]; groupBy: HistQueryTag[]; columns: HistColumn[]; series: SeriesEntry[] | null } {
  const int = (name: string, v: number, min: number, max: number) => {
    if (!Number.isSafeInteger(v) || v < min || v > max) throw new QueryValueError(`${name} must be an integer in ${min}..${max}, got ${v}`);
  };
  int('fromMs', q.fromMs, 0, MAX_TIME_MS);
  int('toMs', q.toMs, 0, MAX_TIME_MS);
  if (q.toMs <= q.fromMs) throw new QueryValueError(`toMs (${q.toMs}) must be after fromMs (${q.fromMs})`);
  int('windowMs', q.windowMs, 1, MAX_TIME_MS);
  for (const m of q.metrics) if (!(HIST_METRICS as readonly string[]).includes(m)) throw new QueryValueError(`unknown metric ${JSON.stringify(m)}`);
  const measurement = q.measurement ?? MEASUREMENT.connectHist;
  if (!(HIST_MEASUREMENTS as readonly string[]).includes(measurement)) throw new QueryValueError(`unknown histogram measurement ${JSON.stringify(measurement)}: use one of ${HIST_MEASUREMENTS.join(', ')}`);
  if (measurement === MEASUREMENT.sessionHist && q.metrics.includes('synRetrans')) throw new QueryValueError(`${measurement} has no syn_retrans field`);
  const tags = histTagsOf(measurement);
  const noTag = (where: string, k: string) => {
    if ((HIST_QUERY_TAGS as readonly string[]).includes(k) && !(tags as readonly string[]).includes(k)) throw new QueryValueError(`${where}: ${measurement} has no ${JSON.stringify(k)} tag (it has ${tags.join(', ')})`);
  };
  for (const [k, v] of Object.entries(q.filters ?? {})) if (v !== undefined && v.length > 0) noTag('filter', k);
  for (const g of q.groupBy ?? []) noTag('group by', g);
  for (const e of q.series ?? []) for (const k of Object.keys(e ?? {})) noTag('series', k);
  let columns = histColumns(q.metrics, measurement);
  if (columns.length === 0) throw new QueryValueError('a query needs at least one metric');
  if (q.fields !== undefined) {
    for (const f of q.fields) if (!columns.some((c) => c.field === f)) throw new QueryValueError(`field ${JSON.stringify(f)} is not one of the metrics' fields`);
    columns = columns.filter((c) => q.fields!.includes(c.field));
    if (columns.length === 0) throw new QueryValueError('fields: empty: a query needs at least one field');
  }
  const filters: [HistQueryTag, string[]][] = [];
  for (const tag of HIST_QUERY_TAGS) {
    const values = q.filters?.[tag];
    if (values === undefined || values.length === 0) continue;
    for (const v of values) checkTagValue(`filter ${tag}`, v);
    // Deduplicate and sort: the same filter always gives the same query text (cache keys, golden tests).
    filters.push([tag, [...new Set(values)].sort()]);
  }
  for (const k of Object.keys(q.filters ?? {})) {
    if (!(HIST_QUERY_TAGS as readonly string[]).includes(k)) throw new QueryValueError(`cannot filter on ${JSON.stringify(k)}: use one of ${HIST_QUERY_TAGS.join(', ')}`);
  }
  const groupBy: HistQueryTag[] = [];
  for (const g of q.groupBy ?? []) {
    if (!(HIST_QUERY_TAGS as readonly string[]).includes(g)) throw new QueryValueError(`cannot group by ${JSON.stringify(g)}: use one of ${HIST_QUERY_TAGS.join(', ')}`);
    if (!groupBy.includes(g)) groupBy.push(g);
  }
  let series: SeriesEntry[] | null = null;
  if (q.series !== undefined) {
    if (!Array.isArray(q.series) || q.series.length === 0) throw new QueryValueError('series: empty: a query needs at least one series');
    if (q.series.length > MAX_SERIES_ENTRIES) throw new QueryValueError(`series: at most ${MAX_SERIES_ENTRIES} entries, got ${q.series.length}`);
    series = q.series.map((entry) => {
      for (const k of Object.keys(entry ?? {})) {
        if (!(HIST_QUERY_TAGS as readonly string[]).includes(k)) throw new QueryValueError(`series: cannot match on ${JSON.stringify(k)}: use ${HIST_QUERY_TAGS.join(', ')}`);
      }
      const out: SeriesEntry = [];
      for (const tag of HIST_QUERY_TAGS) {
        const v = entry?.[tag];
        if (v === undefined) continue;
        checkTagValue(`series ${tag}`, v);
        out.push([tag, v]);
      }
      if (out.length === 0) throw new QueryValueError('series: an entry needs at least one tag');
      return out;
    });
  }
  return { filters, groupBy, columns, series };
}

function checkSource(src: HistSourceRef | undefined): void {
  if (src === undefined) return;
  if (!(HIST_LEVELS as readonly string[]).includes(src.level)) throw new QueryValueError(`unknown resolution ${JSON.stringify(src.level)}: use one of ${HIST_LEVELS.join(', ')}`);
  for (const k of ['rp', 'bucket'] as const) {
    const v = src[k];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '') throw new QueryValueError(`source ${k}: expected a non-empty name`);
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(v)) throw new QueryValueError(`source ${k}: names never contain control characters`);
  }
  if (src.fleet && (src.level === BASE_LEVEL || !FLEET_ROLLUP_WINDOWS.includes(src.level))) {
    throw new QueryValueError(`no fleet rollup at ${src.level}: fleet rollups are ${FLEET_ROLLUP_WINDOWS.join(', ')}`);
  }
}

/** The FROM of an InfluxQL query: the level's measurement, in the source's retention policy when it names one. */
export function influxQLFrom(src: HistSourceRef | undefined, measurement: HistMeasurement = MEASUREMENT.connectHist): string {
  checkSource(src);
  const id = (s: string) => quote('influxql-ident', s);
  const level = src?.level ?? BASE_LEVEL;
  const rp = src?.rp ?? (level === BASE_LEVEL ? undefined : ROLLUP_RP);
  // "rp"."measurement" reads the retention policy of the request's database (the `db` parameter).
  const m = id(levelMeasurement(level, measurement, src?.fleet === true));
  return rp === undefined ? m : `${id(rp)}.${m}`;
}

/** The bucket a Flux query reads: the source's, else the 10 s data's bucket or its rollup bucket. */
export function fluxBucket(src: HistSourceRef | undefined, bucket: string): string {
  checkSource(src);
  if (src?.bucket !== undefined) return src.bucket;
  return (src?.level ?? BASE_LEVEL) === BASE_LEVEL ? bucket : bucket + ROLLUP_BUCKET_SUFFIX;
}

/**
 * InfluxQL for InfluxDB 1.x. The database and retention policy are not part of the text: they go in the
 * request's `db`/`rp` parameters (queryInfluxQL does that). Long filter lists make long queries: send it
 * with POST.
 */
export function buildInfluxQLHistQuery(q: HistQuery): string {
  const { filters, groupBy, columns, series } = check(q);
  const id = (s: string) => quote('influxql-ident', s);
  const select = columns.map((c) => `${c.agg}(${id(c.field)}) AS ${id(c.field)}`).join(', ');
  const where = [`time >= ${q.fromMs}ms`, `time < ${q.toMs}ms`];
  for (const [tag, values] of filters) {
    const alts = values.map((v) => `${id(tag)} = ${quote('influxql-string', v)}`);
    where.push(alts.length === 1 ? alts[0] : `(${alts.join(' OR ')})`);
  }
  if (series) {
    // `tag = ''` also matches series without the tag in InfluxQL 1.x.
    const alts = series.map((entry) => {
      const conds = entry.map(([tag, v]) => `${id(tag)} = ${quote('influxql-string', v)}`);
      return conds.length === 1 ? conds[0] : `(${conds.join(' AND ')})`;
    });
    where.push(alts.length === 1 ? alts[0] : `(${alts.join(' OR ')})`);
  }
  const group = [`time(${q.windowMs}ms)`, ...groupBy.map(id)].join(', ');
  return `SELECT ${select} FROM ${influxQLFrom(q.source, q.measurement)} WHERE ${where.join(' AND ')} GROUP BY ${group} fill(none)`;
}

function fluxTime(ms: number): string {
  // RFC 3339 date-time literal, from a checked integer: never from user text.
  return new Date(ms).toISOString();
}

/**
 * Flux for InfluxDB 2.x. Two aggregation passes per function: first per series and bin (the shape that
 * the storage engine pushes down: range |> filter |> aggregateWindow), then across series after
 * regrouping by field (and the groupBy tags), so points of many hosts, results or late writes in one bin
 * add up. Then one pivot puts the fields side by side: one row per bin (per group), columns named as the
 * fields, like the InfluxQL answer.
 */
export function buildFluxHistQuery(q: HistQuery, opts: { bucket: string }): string {
  const { filters, groupBy, columns, series } = check(q);
  const s = (v: string) => quote('flux-string', v);
  const col = (tag: string) => `r[${s(tag)}]`;
  const every = `${q.windowMs}ms`;
  const lines: string[] = [];
  lines.push(`data = from(bucket: ${s(fluxBucket(q.source, opts.bucket))})`);
  lines.push(`  |> range(start: ${fluxTime(q.fromMs)}, stop: ${fluxTime(q.toMs)})`);
  lines.push(`  |> filter(fn: (r) => r._measurement == ${s(levelMeasurement(q.source?.level ?? BASE_LEVEL, q.measurement, q.source?.fleet === true))})`);
  // A series without the tag has no such column: "" matches it the way InfluxQL's `tag = ''` does.
  const cond = (tag: string, v: string) => (v === '' ? `(not exists ${col(tag)} or ${col(tag)} == ${s('')})` : `${col(tag)} == ${s(v)}`);
  for (const [tag, values] of filters) {
    lines.push(`  |> filter(fn: (r) => ${values.map((v) => cond(tag, v)).join(' or ')})`);
  }
  if (series) {
    const alts = series.map((entry) => (entry.length === 1 ? cond(...entry[0]) : `(${entry.map(([tag, v]) => cond(tag, v)).join(' and ')})`));
    lines.push(`  |> filter(fn: (r) => ${alts.join(' or ')})`);
  }
  const groupCols = `[${['_field', ...groupBy].map(s).join(', ')}]`;
  const streams: string[] = [];
  for (const agg of ['sum', 'min', 'max'] as const) {
    const fields = columns.filter((c) => c.agg === agg).map((c) => c.field);
    if (fields.length === 0) continue;
    const name = `${agg}s`;
    streams.push(name);
    const window = `aggregateWindow(every: ${every}, fn: ${agg}, createEmpty: false, timeSrc: "_start")`;
    lines.push('');
    lines.push(`${name} = data`);
    lines.push(`  |> filter(fn: (r) => ${fields.map((f) => `r._field == ${s(f)}`).join(' or ')})`);
    lines.push(`  |> ${window}`);
    lines.push(`  |> group(columns: ${groupCols})`);
    lines.push(`  |> ${window}`);
  }
  lines.push('');
  lines.push(streams.length === 1 ? streams[0] : `union(tables: [${streams.join(', ')}])`);
  lines.push(`  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`);
  lines.push(`  |> group(columns: [${groupBy.map(s).join(', ')}])`);
  lines.push(`  |> sort(columns: ["_time"])`);
  lines.push(`  |> yield(name: "hist")`);
  return lines.join('\n') + '\n';
}

/** One time bin (of one group) of a histogram query's answer, the same for both dialects. */
export interface HistRow {
  /** Bin start, epoch ms. */
  timeMs: number;
  /** Values of the groupBy tags ("" when a series has no such tag). */
  tags: Record<string, string>;
  /** Field name -> aggregated value; a missing value (no point had the field) is absent. */
  values: Record<string, number>;
}

/** The shape queryInfluxQL returns for one statement. */
export interface InfluxQLSeriesLike {
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

/** Rows from an InfluxQL answer (queried with epoch=ms). */
export function histRowsFromInfluxQL(series: readonly InfluxQLSeriesLike[], groupBy: readonly HistQueryTag[] = []): HistRow[] {
  const out: HistRow[] = [];
  for (const sr of series) {
    const tags: Record<string, string> = {};
    for (const g of groupBy) tags[g] = sr.tags?.[g] ?? '';
    const ti = sr.columns.indexOf('time');
    for (const v of sr.values) {
      const values: Record<string, number> = {};
      for (let i = 0; i < sr.columns.length; i++) {
        if (i === ti) continue;
        const x = v[i];
        if (typeof x === 'number' && Number.isFinite(x)) values[sr.columns[i]] = x;
      }
      out.push({ timeMs: Number(v[ti]), tags, values });
    }
  }
  return out.sort((a, b) => a.timeMs - b.timeMs);
}

export class FluxResultError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FluxResultError';
  }
}

/** Parse CSV text (RFC 4180: quoted fields, doubled quotes, CRLF or LF) into records of strings. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  let any = false;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      field += c;
      i++;
      continue;
    }
    if (c === '"') {
      quoted = true;
      any = true;
      i++;
    } else if (c === ',') {
      row.push(field);
      field = '';
      any = true;
      i++;
    } else if (c === '\r' || c === '\n') {
      if (any || field !== '') row.push(field);
      rows.push(row);
      row = [];
      field = '';
      any = false;
      i += c === '\r' && text[i + 1] === '\n' ? 2 : 1;
    } else {
      field += c;
      any = true;
      i++;
    }
  }
  if (any || field !== '') {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/**
 * The data records of a Flux answer in annotated CSV (`Accept: application/csv`, the /api/v2/query default
 * dialect), each with its table's header: tables are separated by blank lines, each with optional
 * `#datatype`/`#group`/`#default` annotation rows and a header row. Records of one table share one header
 * array (callers may key per-table work on it). An error table (`error,reference` header) throws
 * FluxResultError.
 */
export function* fluxRecords(text: string): Generator<{ header: string[]; rec: string[] }> {
  let header: string[] | null = null;
  for (const rec of parseCsv(text)) {
    if (rec.length === 0 || (rec.length === 1 && rec[0] === '') || rec[0].startsWith('#')) {
      header = null; // blank line or annotation: the next table brings its own header
      continue;
    }
    if (header === null) {
      header = rec;
      continue;
    }
    if (header.includes('error') && header.includes('reference')) {
      throw new FluxResultError(`Flux query failed: ${rec[header.indexOf('error')] ?? 'unknown error'}`);
    }
    yield { header, rec };
  }
}

/** Rows of a histogram query's Flux answer (fluxRecords), stamped and sorted by time. */
export function histRowsFromFluxCsv(text: string, groupBy: readonly HistQueryTag[] = []): HistRow[] {
  const out: HistRow[] = [];
  for (const { header, rec } of fluxRecords(text)) {
    const values: Record<string, number> = {};
    const tags: Record<string, string> = {};
    let timeMs = NaN;
    for (let i = 0; i < header.length; i++) {
      const name = header[i];
      const x = rec[i] ?? '';
      if (name === '_time') timeMs = Date.parse(x);
      else if ((groupBy as readonly string[]).includes(name)) tags[name] = x;
      else if (name === '' || name === 'result' || name === 'table' || name.startsWith('_')) continue;
      else if (x !== '') {
        const n = Number(x);
        if (Number.isFinite(n)) values[name] = n;
      }
    }
    if (!Number.isFinite(timeMs)) throw new FluxResultError(`Flux answer row without a valid _time: ${rec.join(',').slice(0, 200)}`);
    for (const g of groupBy) if (!(g in tags)) tags[g] = '';
    out.push({ timeMs, tags, values });
  }
  return out.sort((a, b) => a.timeMs - b.timeMs);
}

/** Where the rollups are and which levels may be read (the renderer's --rollups, --rollup-rp, --rollup-bucket). */
export interface RollupWhere {
  levels: readonly RollupWindowName[];
  rp: string;
  bucket?: string;
  /** Read the fleet rollups (FLEET_ROLLUP_WINDOWS) for queries over every host (coversAllHosts). Default: no. */
  fleet?: boolean;
}

/** A query over every host: no host filter, neither grouped nor matched by host (the fleet rollups have no host tag). */
export function coversAllHosts(q: HistQuery): boolean {
  if ((q.filters?.[TAG.host]?.length ?? 0) > 0) return false;
  if (q.groupBy?.includes(TAG.host)) return false;
  return !(q.series ?? []).some((e) => e[TAG.host] !== undefined);
}

export function sourceRef(level: HistLevel, where: RollupWhere): HistSourceRef {
  // The 10 s data: the target's own retention policy (the request's rp parameter) or bucket.
  if (level === BASE_LEVEL) return { level };
  return { level, rp: where.rp, ...(where.bucket !== undefined ? { bucket: where.bucket } : {}) };
}

/** Why a chart read the 10 s data where rollups were picked: the rollups' RP/bucket is missing, or holds nothing for the range. */
export type RollupFallback = 'missing' | 'empty' | 'partial';

export interface LevelRead {
  rows: HistRow[];
  /** The level picked for the range (the newest windows may come from finer levels: planHistParts). */
  level: HistLevel;
  /** The parts read, with the level each was read at. */
  parts: HistPart[];
  fallback?: RollupFallback;
  /** One line for the chart's subtitle when the read fell back to the 10 s data (or to per-host rollups). */
  note?: string;
  /** Most of the range was read from the level's fleet rollup (levelLabel's `fleet`). */
  fleet?: boolean;
}

/**
 * An error that says the rollups' retention policy (1.x: `retention policy not found: X`) or bucket (2.x:
 * HTTP 404 `could not find bucket "X"`) does not exist, by its message (InfluxError, or the datasource's
 * HttpFailure with the server's message).
 */
export function isMissingRollupStore(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const text = `${e.message} ${(e as { serverMessage?: string }).serverMessage ?? ''}`;
  return /retention policy not found|could not find bucket|bucket "[^"]*" not found|failed to find bucket/i.test(text);
}

function fmtUtc(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

/**
 * Read a query's rows at the picked level: the parts of planHistParts (the level for windows old enough,
 * finer levels for the newest), in parallel, added up per bin. When the level's rollups are not there the
 * chart is never silently empty:
 * - the retention policy / bucket does not exist: everything is read from the 10 s data (`missing`);
 * - the rollups hold no point in the range: the same range is read from the 10 s data, used if it has any
 *   (`empty`: the rollups were never made for this range);
 * - the rollups start later than the range: the bins before their first one are read from the 10 s data
 *   and added (`partial`: history older than the rollups, not backfilled).
 * Each sets `note`, which the chart shows; `tcplat rollup` backfills.
 */
export async function readHistLevels(
  run: (q: HistQuery) => Promise<HistRow[]>,
  dialect: 'influxql' | 'flux',
  q: HistQuery,
  level: HistLevel,
  where: RollupWhere,
  nowMs: number,
  baseMs: number = BASE_WINDOW_MS,
): Promise<LevelRead> {
  // A measurement without rollups (ROLLED_UP_MEASUREMENTS) reads its 10 s data, whatever was picked; only
  // FLEET_ROLLED_UP_MEASUREMENTS have fleet rollups.
  const measurement = q.measurement ?? MEASUREMENT.connectHist;
  const levels = rollupLevelsFor(measurement, where.levels);
  if (level !== BASE_LEVEL && !(levels as readonly string[]).includes(level)) level = BASE_LEVEL;
  where = { ...where, levels };
  if (where.fleet && FLEET_ROLLED_UP_MEASUREMENTS.includes(measurement) && level !== BASE_LEVEL && FLEET_ROLLUP_WINDOWS.includes(level) && coversAllHosts(q)) {
    const w = levelMs(level, baseMs);
    const fleetEnd = Math.min(q.toMs, Math.floor((nowMs - FLEET_LAG_MS) / w) * w);
    if (fleetEnd > q.fromMs) return readFleet(run, dialect, q, level, where, nowMs, baseMs, fleetEnd);
  }
  return readHostLevels(run, dialect, q, level, where, nowMs, baseMs);
}

/**
 * A query over every host at a level with a fleet rollup: [fromMs, fleetEnd) from the fleet rollup (one
 * series per service, dst, result instead of one per host), the newer windows from the per-host levels
 * (readHostLevels). Where the fleet rollup has no bins -- none made (no `tcplat rollup` yet), history
 * older than its first bin, or windows after its last one (`tcplat rollup --follow` not running) -- those
 * bins are read from the per-host levels, so the chart is never short of data; a bin at such an edge is
 * read per host whole, in place of the fleet's rows for it (it may hold only some of its windows).
 */
async function readFleet(
  run: (q: HistQuery) => Promise<HistRow[]>,
  dialect: 'influxql' | 'flux',
  q: HistQuery,
  level: HistLevel,
  where: RollupWhere,
  nowMs: number,
  baseMs: number,
  fleetEnd: number,
): Promise<LevelRead> {
  const perHost = (fromMs: number, toMs: number) => readHostLevels(run, dialect, { ...q, fromMs, toMs }, level, { ...where, fleet: false }, nowMs, baseMs);
  const [fleetRows, recent] = await Promise.all([
    run({ ...q, toMs: fleetEnd, source: { ...sourceRef(level, where), fleet: true } }).catch((e) => {
      if (isMissingRollupStore(e)) return [];
      throw e;
    }),
    fleetEnd < q.toMs ? perHost(fleetEnd, q.toMs) : null,
  ]);
  const tail = recent ? [recent] : [];
  const combine = (reads: LevelRead[], fleetPart: HistPart | null, keep: HistRow[], note?: string): LevelRead => {
    const parts = [...(fleetPart ? [fleetPart] : []), ...reads.flatMap((r) => r.parts)].sort((a, b) => a.fromMs - b.fromMs);
    const fallback = reads.find((r) => r.fallback)?.fallback;
    const notes = [...new Set([note, ...reads.map((r) => r.note)].filter((x): x is string => x !== undefined))];
    return {
      rows: mergeHistParts([keep, ...reads.map((r) => r.rows)], q.windowMs),
      level,
      parts,
      ...(fallback ? { fallback } : {}),
      ...(notes.length > 0 ? { note: notes.join('; ') } : {}),
      ...(fleetPart ? { fleet: true } : {}),
    };
  };
  if (fleetRows.length === 0) {
    // No fleet rollup in the range: read per host (as without fleet rollups; the subtitle says "rollups").
    return combine([await perHost(q.fromMs, fleetEnd), ...tail], null, []);
  }
  const bin = (t: number) => Math.floor(t / q.windowMs) * q.windowMs;
  const firstBin = bin(fleetRows[0].timeMs);
  const lastBin = bin(fleetRows[fleetRows.length - 1].timeMs);
  const headCut = firstBin > q.fromMs ? Math.min(fleetEnd, firstBin + q.windowMs) : q.fromMs;
  const tailStart = lastBin + q.windowMs < fleetEnd ? Math.max(headCut, lastBin) : fleetEnd;
  const [head, after] = await Promise.all([headCut > q.fromMs ? perHost(q.fromMs, headCut) : null, tailStart < fleetEnd ? perHost(tailStart, fleetEnd) : null]);
  // A note only where the hosts had data the fleet rollups lack (a quiet service's first or last bins are
  // read per host too, silently: they hold nothing the fleet rollups miss).
  const notes: string[] = [];
  if (head && head.rows.some((r) => r.timeMs < firstBin)) notes.push(`before ${fmtUtc(headCut)}: per-host data (no fleet rollups there; run tcplat rollup)`);
  if (after && after.rows.some((r) => r.timeMs > lastBin)) notes.push(`after ${fmtUtc(tailStart)}: per-host data (fleet rollups end there: is tcplat rollup --follow running?)`);
  const keep = fleetRows.filter((r) => bin(r.timeMs) >= headCut && bin(r.timeMs) < tailStart);
  const fleetPart: HistPart | null = tailStart > headCut ? { level, fromMs: headCut, toMs: tailStart, fleet: true } : null;
  const gaps = [head, after].filter((x): x is LevelRead => x !== null);
  return combine([...gaps, ...tail], fleetPart, keep, notes.length > 0 ? notes.join('; ') : undefined);
}

/** readHistLevels from the per-host levels only. */
async function readHostLevels(
  run: (q: HistQuery) => Promise<HistRow[]>,
  dialect: 'influxql' | 'flux',
  q: HistQuery,
  level: HistLevel,
  where: RollupWhere,
  nowMs: number,
  baseMs: number,
): Promise<LevelRead> {
  const parts = planHistParts({ fromMs: q.fromMs, toMs: q.toMs, level, nowMs, levels: where.levels, baseMs });
  const readPart = (p: HistPart) => run({ ...q, fromMs: p.fromMs, toMs: p.toMs, source: sourceRef(p.level, where) });
  const answers = await Promise.all(
    parts.map((p) =>
      readPart(p).catch((e) => {
        if (p.level !== BASE_LEVEL && isMissingRollupStore(e)) return null;
        throw e;
      }),
    ),
  );
  const label = levelLabel(level, baseMs);
  const store = dialect === 'influxql' ? `retention policy ${where.rp}` : `bucket ${where.bucket ?? 'of the rollups'}`;
  const rollupParts = parts.map((p, i) => ({ p, rows: answers[i] })).filter((x) => x.p.level !== BASE_LEVEL);
  if (rollupParts.length > 0) {
    const end = rollupParts.at(-1)!.p.toMs;
    const baseTail = parts.flatMap((p, i) => (p.level === BASE_LEVEL ? (answers[i] ?? []) : []));
    if (rollupParts.some((x) => x.rows === null)) {
      const rows = await readPart({ level: BASE_LEVEL, fromMs: q.fromMs, toMs: end });
      return { rows: mergeHistParts([rows, baseTail], q.windowMs), level: BASE_LEVEL, parts: [{ level: BASE_LEVEL, fromMs: q.fromMs, toMs: q.toMs }], fallback: 'missing', note: `no rollups (${store} not found): read the 10 s data; run tcplat rollup` };
    }
    if (rollupParts.every((x) => x.rows!.length === 0)) {
      const rows = await readPart({ level: BASE_LEVEL, fromMs: q.fromMs, toMs: end });
      if (rows.length > 0) {
        return { rows: mergeHistParts([rows, baseTail], q.windowMs), level: BASE_LEVEL, parts: [{ level: BASE_LEVEL, fromMs: q.fromMs, toMs: q.toMs }], fallback: 'empty', note: `no ${label} in this range: read the 10 s data; run tcplat rollup` };
      }
    }
    // Rollups that start after the range does: history from before they were made (no backfill yet).
    const first = rollupParts[0];
    const firstBin = first.rows!.length > 0 ? Math.floor(first.rows![0].timeMs / q.windowMs) * q.windowMs : null;
    if (firstBin !== null && firstBin > first.p.fromMs) {
      // Cheap when there is nothing before the first rollup bin (a younger service, expired 10 s data).
      const head = await readPart({ level: BASE_LEVEL, fromMs: first.p.fromMs, toMs: firstBin });
      if (head.length > 0) {
        // The first rollup bin may hold rollups of only its last windows (made from when the rollups
        // started): that bin is read from the 10 s data too, in place of its rollup rows.
        const cut = Math.min(first.p.toMs, firstBin + q.windowMs);
        const firstBinRows = await readPart({ level: BASE_LEVEL, fromMs: firstBin, toMs: cut });
        const rest = first.rows!.filter((r) => r.timeMs >= cut);
        return {
          rows: mergeHistParts([head, firstBinRows, rest, ...answers.slice(1).map((a) => a ?? [])], q.windowMs),
          level,
          parts: [{ level: BASE_LEVEL, fromMs: first.p.fromMs, toMs: cut }, ...(cut < first.p.toMs ? [{ ...first.p, fromMs: cut }] : []), ...parts.slice(1)],
          fallback: 'partial',
          note: `before ${fmtUtc(firstBin)}: 10 s data (no ${label} there; run tcplat rollup)`,
        };
      }
    }
  }
  return { rows: mergeHistParts(answers.map((a) => a ?? []), q.windowMs), level, parts };
}
