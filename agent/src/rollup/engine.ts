/**
 * The rollup engine (issue 14): exact sums of the histogram measurements of ROLLUP_SCHEMAS (pkg/core:
 * tcp_connect_hist, tls_handshake_hist, tcp_session_hist, each with its own tags and fields) over coarser
 * windows, made by tcplat FROM
 * THE DATABASE, the same way for the agent's live catch-up and for `tcplat rollup`'s backfill, on any
 * InfluxDB that answers queries and takes writes (1.x InfluxQL, 2.x Flux; no continuous queries or tasks).
 *
 * For a time range (and optionally one host), per rollup window w of ROLLUP_WINDOWS in order (1m from the
 * 10 s data, then 10m from the 1m rollup, then 1h from the 10m one: a cascade, each level read from the
 * level below), it gets the sums (every bucket field, count, sum_ms, syn_retrans summed; min_ms min;
 * max_ms max; tcp_session_hist's retrans, resets and zero windows summed) per window and per series (every
 * tag of the measurement) -- made by Flux on 2.x, added up from
 * the points InfluxQL returns on 1.x (faster there, see influxQLPoints) -- and writes one point per
 * series per window, stamped at the window's start, into `rollupMeasurement(source, w)` in the rollup
 * retention policy (1.x) or bucket (2.x). A point written again overwrites the old one, so re-running is
 * idempotent, and a late point is handled by recomputing its window. Each level's range is widened to
 * whole windows of that level (aligned to the epoch), so a window is always recomputed whole.
 *
 * A window whose source points are gone (deleted, or expired with a short retention) yields no row and
 * writes nothing: the rollup made while they existed is kept, never overwritten with less.
 */
import {
  describeTarget,
  fetchFailure,
  v2ErrorMessage,
  encodePoint,
  int,
  MEASUREMENT,
  fluxRecords,
  queryFlux,
  queryInfluxQL,
  quote,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  rollupMeasurement,
  TAG,
  writeLines,
  FluxResultError,
  FLEET_ROLLUP_WINDOWS,
  fleetRollupMeasurement,
  HIST_FIELD,
  InfluxError,
  rollupSchemaOf,
  type RollupSchema,
  type Fields,
  type HistColumn,
  type InfluxTarget,
  type InfluxV1Target,
  type InfluxV2Target,
  type RollupWindowName,
} from '@tcplat/core';

/** The tags a per-host rollup of tcp_connect_hist keeps apart (each measurement's: ROLLUP_SCHEMAS in pkg/core). */
export const ROLLUP_TAGS: readonly string[] = rollupSchemaOf(MEASUREMENT.connectHist).tags;

/** Every field of a tcp_connect_hist point and how it adds up over a window (each measurement's: ROLLUP_SCHEMAS). */
export const ROLLUP_COLUMNS: readonly HistColumn[] = rollupSchemaOf(MEASUREMENT.connectHist).columns;

/** The fleet rollups' tags of a measurement: its tags but the host. */
function fleetTagsOf(schema: RollupSchema): readonly string[] {
  return schema.tags.filter((t) => t !== TAG.host);
}

/** Lines per write request. */
const WRITE_BATCH_LINES = 5000;

export interface RollupStore {
  /** Where the 10 s data is (the agent's target). */
  source: InfluxTarget;
  /** Where the rollups are: the same database with the rollup RP (1.x) or the rollup bucket (2.x). */
  rollup: InfluxTarget;
}

/** The rollup store for a target: 1.x the RP `rp` (default ROLLUP_RP), 2.x the bucket `bucket` (default `<bucket>_rollups`). */
export function rollupStore(source: InfluxTarget, where: { rp?: string; bucket?: string } = {}): RollupStore {
  const rollup: InfluxTarget = source.version === 1 ? { ...source, rp: where.rp ?? ROLLUP_RP } : { ...source, bucket: where.bucket ?? source.bucket + ROLLUP_BUCKET_SUFFIX };
  return { source, rollup };
}

export function floorTo(ms: number, w: number): number {
  return Math.floor(ms / w) * w;
}

export function ceilTo(ms: number, w: number): number {
  return Math.ceil(ms / w) * w;
}

/** The finest and coarsest rollup windows, ms. */
export const FINEST_WINDOW_MS: number = ROLLUP_WINDOWS[0].ms;
export const COARSEST_WINDOW_MS: number = ROLLUP_WINDOWS[ROLLUP_WINDOWS.length - 1].ms;

/** One series' sums over one window. */
export interface RollupRow {
  timeMs: number;
  tags: Record<string, string>;
  values: Record<string, number>;
}

export interface LevelResult {
  window: RollupWindowName;
  fromMs: number;
  toMs: number;
  /** Points written (one per series per window that had data). */
  points: number;
}

export interface RangeResult {
  fromMs: number;
  toMs: number;
  levels: LevelResult[];
  points: number;
}

export interface RollupRangeOptions {
  store: RollupStore;
  fromMs: number;
  toMs: number;
  /** Only this host's series (the live agent); absent: every host, each still rolled up on its own. */
  host?: string;
  /** The histogram measurement (default tcp_connect_hist). */
  measurement?: string;
  signal?: AbortSignal;
}

/**
 * Recompute every rollup level over [fromMs, toMs), widened per level to whole windows. Throws
 * InfluxError (or FluxResultError) naming what failed; what was written before stays (and is correct).
 */
export async function rollupRange(o: RollupRangeOptions): Promise<RangeResult> {
  const source = o.measurement ?? MEASUREMENT.connectHist;
  const schema = rollupSchemaOf(source);
  let from = o.fromMs;
  let to = o.toMs;
  const levels: LevelResult[] = [];
  let prev: RollupWindowName | null = null;
  for (const w of ROLLUP_WINDOWS) {
    from = floorTo(from, w.ms);
    to = ceilTo(to, w.ms);
    const readFrom = prev === null ? { target: o.store.source, measurement: source } : { target: o.store.rollup, measurement: rollupMeasurement(source, prev) };
    const rows = await readSums({ ...readFrom, schema, fromMs: from, toMs: to, windowMs: w.ms, host: o.host, signal: o.signal });
    const points = await writeRollup(o.store.rollup, rollupMeasurement(source, w.name), rows, o.signal, schema);
    levels.push({ window: w.name, fromMs: from, toMs: to, points });
    prev = w.name;
  }
  return { fromMs: levels[0].fromMs, toMs: to, levels, points: levels.reduce((a, l) => a + l.points, 0) };
}

export interface FleetRangeResult {
  fromMs: number;
  toMs: number;
  /** Fleet points written per fleet window (one per service, dst, result per window that had data). */
  levels: LevelResult[];
  points: number;
}

/**
 * Recompute the fleet rollups (FLEET_ROLLUP_WINDOWS, no host tag) over [fromMs, toMs), widened per level to
 * whole windows: each fleet window is the sum over hosts of the per-host rollup of the same window (counts
 * and buckets added, min of mins, max of maxes), so it is exact whenever the per-host rollups are. Made
 * centrally (`tcplat rollup`), never by an agent: one writer per fleet series. `hosts`: read the per-host
 * rollups host by host (memory holds one host's rows and the fleet sums); absent: all in one query.
 * Re-running it overwrites each fleet point with the current sum, so late events that reached the per-host
 * rollups reach the fleet ones at the next run over their window.
 */
export async function rollupFleetRange(o: { store: RollupStore; fromMs: number; toMs: number; hosts?: readonly string[]; measurement?: string; signal?: AbortSignal }): Promise<FleetRangeResult> {
  const source = o.measurement ?? MEASUREMENT.connectHist;
  const schema = rollupSchemaOf(source);
  const levels: LevelResult[] = [];
  for (const name of FLEET_ROLLUP_WINDOWS) {
    const w = ROLLUP_WINDOWS.find((x) => x.name === name)!;
    const from = floorTo(o.fromMs, w.ms);
    const to = ceilTo(o.toMs, w.ms);
    const sums = new Map<string, RollupRow>();
    for (const host of o.hosts ?? [undefined]) {
      const rows = await readSums({ target: o.store.rollup, schema, measurement: rollupMeasurement(source, name), fromMs: from, toMs: to, windowMs: w.ms, host, signal: o.signal });
      foldHosts(sums, rows, schema);
    }
    const points = await writeRollup(o.store.rollup, fleetRollupMeasurement(source, name), [...sums.values()], o.signal, schema);
    levels.push({ window: name, fromMs: from, toMs: to, points });
  }
  return { fromMs: Math.min(...levels.map((l) => l.fromMs)), toMs: Math.max(...levels.map((l) => l.toMs)), levels, points: levels.reduce((a, l) => a + l.points, 0) };
}

/** Add per-host rows into fleet rows (keyed by window and the tags but host): counts summed, min_ms min, max_ms max. */
export function foldHosts(into: Map<string, RollupRow>, rows: readonly RollupRow[], schema: RollupSchema = rollupSchemaOf(MEASUREMENT.connectHist)): void {
  const aggOf = new Map<string, 'sum' | 'min' | 'max'>(schema.columns.map((c) => [c.field, c.agg]));
  const FLEET_TAGS = fleetTagsOf(schema);
  for (const r of rows) {
    const tags: Record<string, string> = {};
    for (const t of FLEET_TAGS) tags[t] = r.tags[t] ?? '';
    const k = JSON.stringify([r.timeMs, ...FLEET_TAGS.map((t) => tags[t])]);
    const have = into.get(k);
    if (!have) {
      into.set(k, { timeMs: r.timeMs, tags, values: { ...r.values } });
      continue;
    }
    for (const [f, x] of Object.entries(r.values)) {
      const had = have.values[f];
      const agg = aggOf.get(f) ?? 'sum';
      have.values[f] = had === undefined ? x : agg === 'sum' ? had + x : agg === 'min' ? Math.min(had, x) : Math.max(had, x);
    }
  }
}

export interface ReadSumsOptions {
  target: InfluxTarget;
  /** The tags and fields of what is read (default tcp_connect_hist's). */
  schema?: RollupSchema;
  measurement: string;
  fromMs: number;
  toMs: number;
  windowMs: number;
  host?: string;
  signal?: AbortSignal;
}

/** The sums of every series over each window of [fromMs, toMs) (windows with no point are absent). */
export async function readSums(o: ReadSumsOptions): Promise<RollupRow[]> {
  if (o.target.version === 1) {
    const series = (await queryInfluxQL(o.target, influxQLPoints(o.target, o), { method: 'POST', epoch: 'ms', signal: o.signal }))[0] ?? [];
    return sumPoints(series, o.windowMs, o.schema);
  }
  return fluxReadSums({ ...o, target: o.target });
}

/**
 * InfluxQL: the source level's points themselves, per series. On 1.x the sums are made here, not by the
 * database: 36 aggregate calls per window took InfluxDB 1.6 3-4x as long as returning the points
 * (measured: 6-11 s against 2-3 s for 6 h of 72 series), and adding them up is exact either way.
 */
export function influxQLPoints(t: InfluxV1Target, o: Omit<ReadSumsOptions, 'target'>): string {
  const id = (s: string) => quote('influxql-ident', s);
  // Fully qualified: the source level in the target's RP (or the database's default), rollups in theirs.
  const from = t.rp ? `${id(t.db)}.${id(t.rp)}.${id(o.measurement)}` : `${id(t.db)}..${id(o.measurement)}`;
  const where = [`time >= ${checkedMs(o.fromMs)}ms`, `time < ${checkedMs(o.toMs)}ms`];
  if (o.host !== undefined) where.push(`${id(TAG.host)} = ${quote('influxql-string', o.host)}`);
  const schema = o.schema ?? rollupSchemaOf(MEASUREMENT.connectHist);
  return `SELECT ${schema.columns.map((c) => id(c.field)).join(', ')} FROM ${from} WHERE ${where.join(' AND ')} GROUP BY ${schema.tags.map(id).join(', ')}`;
}

/** Add up points per series and epoch-aligned window: counts summed, min_ms min, max_ms max. */
export function sumPoints(series: readonly { tags?: Record<string, string>; columns: string[]; values: unknown[][] }[], windowMs: number, schema: RollupSchema = rollupSchemaOf(MEASUREMENT.connectHist)): RollupRow[] {
  const out = new Map<string, RollupRow>();
  const aggOf = new Map<string, 'sum' | 'min' | 'max'>(schema.columns.map((c) => [c.field, c.agg]));
  const ROLLUP_TAGS = schema.tags;
  for (const s of series) {
    const tags: Record<string, string> = {};
    for (const t of ROLLUP_TAGS) tags[t] = s.tags?.[t] ?? '';
    const seriesKey = JSON.stringify(ROLLUP_TAGS.map((t) => tags[t]));
    const ti = s.columns.indexOf('time');
    const cols = s.columns.map((c, i) => {
      const agg = aggOf.get(c);
      return i === ti || agg === undefined ? null : { field: c, agg };
    });
    for (const v of s.values) {
      const w = floorTo(Number(v[ti]), windowMs);
      const k = seriesKey + w;
      let row = out.get(k);
      if (!row) {
        row = { timeMs: w, tags, values: {} };
        out.set(k, row);
      }
      const values = row.values;
      for (let i = 0; i < cols.length; i++) {
        const c = cols[i];
        const x = v[i];
        if (c === null || typeof x !== 'number' || !Number.isFinite(x)) continue;
        const had = values[c.field];
        values[c.field] = had === undefined ? x : c.agg === 'sum' ? had + x : c.agg === 'min' ? Math.min(had, x) : Math.max(had, x);
      }
    }
  }
  return [...out.values()];
}

/**
 * Flux, one query per aggregate (sum, min, max): per series and window an aggregateWindow, then a pivot so
 * each row is one series' window with that aggregate's fields side by side. Three queries rather than one
 * union: on 2.7 the union of the three streams before the pivot took 6-8x as long as the three queries
 * (measured: 1.3-2.3 s against 0.18-0.26 s for an hour of 3 hosts). A stream holds either the integer
 * counts or the floats of one field per table, which the pivot joins per series.
 */
export function fluxSums(t: InfluxV2Target, o: Omit<ReadSumsOptions, 'target'>, agg: 'sum' | 'min' | 'max'): string {
  const s = (v: string) => quote('flux-string', v);
  const every = `${checkedMs(o.windowMs)}ms`;
  const fields = (o.schema ?? rollupSchemaOf(MEASUREMENT.connectHist)).columns.filter((c) => c.agg === agg).map((c) => c.field);
  const lines: string[] = [];
  lines.push(`from(bucket: ${s(t.bucket)})`);
  lines.push(`  |> range(start: ${new Date(checkedMs(o.fromMs)).toISOString()}, stop: ${new Date(checkedMs(o.toMs)).toISOString()})`);
  lines.push(`  |> filter(fn: (r) => r._measurement == ${s(o.measurement)})`);
  if (o.host !== undefined) lines.push(`  |> filter(fn: (r) => r[${s(TAG.host)}] == ${s(o.host)})`);
  lines.push(`  |> filter(fn: (r) => ${fields.map((f) => `r._field == ${s(f)}`).join(' or ')})`);
  lines.push(`  |> aggregateWindow(every: ${every}, fn: ${agg}, createEmpty: false, timeSrc: "_start")`);
  lines.push(`  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`);
  lines.push(`  |> drop(columns: ["_start", "_stop", "_measurement"])`);
  return lines.join('\n') + '\n';
}

/** Rows of the three aggregates' answers joined per series and window (a schema without min or max fields asks nothing for them). */
async function fluxReadSums(o: ReadSumsOptions & { target: InfluxV2Target }): Promise<RollupRow[]> {
  const byKey = new Map<string, RollupRow>();
  const schema = o.schema ?? rollupSchemaOf(MEASUREMENT.connectHist);
  for (const agg of ['sum', 'min', 'max'] as const) {
    for (const r of rowsFromFluxCsv(await queryFlux(o.target, fluxSums(o.target, o, agg), o.signal), schema)) {
      const k = JSON.stringify([r.timeMs, ...schema.tags.map((t) => r.tags[t])]);
      const had = byKey.get(k);
      if (had) Object.assign(had.values, r.values);
      else byKey.set(k, r);
    }
  }
  return [...byKey.values()];
}

function checkedMs(ms: number): number {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`expected a time in whole ms >= 0, got ${ms}`);
  return ms;
}

/**
 * Rows of the pivoted Flux answer. The annotated CSV has a column `result` of its own (the yield's name)
 * before the table's columns, and our tag `result` comes later: tags are read from their LAST column.
 */
export function rowsFromFluxCsv(text: string, schema: RollupSchema = rollupSchemaOf(MEASUREMENT.connectHist)): RollupRow[] {
  const out: RollupRow[] = [];
  const fields = new Set(schema.columns.map((c) => c.field));
  const ROLLUP_TAGS = schema.tags;
  let header: string[] | null = null;
  let tagIdx: [string, number][] = [];
  let fieldIdx: [string, number][] = [];
  let timeIdx = -1;
  for (const r of fluxRecords(text)) {
    const rec = r.rec;
    if (r.header !== header) {
      // A new table: where its tags, fields and time are.
      header = r.header;
      tagIdx = ROLLUP_TAGS.map((t) => [t, r.header.lastIndexOf(t)] as [string, number]).filter(([, i]) => i > 0);
      fieldIdx = header.map((h, i) => [h, i] as [string, number]).filter(([h]) => fields.has(h));
      timeIdx = header.indexOf('_time');
    }
    const timeMs = Date.parse(rec[timeIdx] ?? '');
    if (!Number.isFinite(timeMs)) throw new FluxResultError(`Flux answer row without a valid _time: ${rec.join(',').slice(0, 200)}`);
    const tags: Record<string, string> = {};
    for (const t of ROLLUP_TAGS) tags[t] = '';
    for (const [t, i] of tagIdx) tags[t] = rec[i] ?? '';
    const values: Record<string, number> = {};
    for (const [f, i] of fieldIdx) {
      const x = rec[i];
      if (x === undefined || x === '') continue;
      const n = Number(x);
      if (Number.isFinite(n)) values[f] = n;
    }
    out.push({ timeMs, tags, values });
  }
  return out;
}

/** The line of one rollup point: the source's tags and fields (integer counts stay integers). */
export function rollupLine(measurement: string, r: RollupRow, schema: RollupSchema = rollupSchemaOf(MEASUREMENT.connectHist)): string | null {
  const fields: Fields = {};
  let any = false;
  for (const c of schema.columns) {
    const v = r.values[c.field];
    if (v === undefined) continue;
    fields[c.field] = schema.floatFields.includes(c.field) ? v : int(Math.round(v));
    any = true;
  }
  if (!any) return null;
  return encodePoint({ measurement, tags: { ...r.tags }, fields, timeNs: BigInt(r.timeMs) * 1_000_000n });
}

/** Write rows as rollup points, in batches; returns the points written. */
export async function writeRollup(t: InfluxTarget, measurement: string, rows: readonly RollupRow[], signal?: AbortSignal, schema: RollupSchema = rollupSchemaOf(MEASUREMENT.connectHist)): Promise<number> {
  let n = 0;
  let batch: string[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await writeLines(t, batch.join('\n') + '\n', { signal });
    n += batch.length;
    batch = [];
  };
  for (const r of rows) {
    const line = rollupLine(measurement, r, schema);
    if (line === null) continue;
    batch.push(line);
    if (batch.length >= WRITE_BATCH_LINES) await flush();
  }
  await flush();
  return n;
}

/** Split [fromMs, toMs) into chunks of `chunkMs` aligned to the epoch (chunkMs a multiple of the coarsest window). */
export function chunks(fromMs: number, toMs: number, chunkMs: number): [number, number][] {
  if (chunkMs % COARSEST_WINDOW_MS !== 0) throw new RangeError(`the chunk (${chunkMs} ms) must be a whole number of ${COARSEST_WINDOW_MS} ms windows`);
  const out: [number, number][] = [];
  const start = floorTo(fromMs, COARSEST_WINDOW_MS);
  const end = ceilTo(toMs, COARSEST_WINDOW_MS);
  for (let a = start; a < end; ) {
    const b = Math.min(end, floorTo(a, chunkMs) + chunkMs);
    out.push([a, b]);
    a = b;
  }
  return out;
}

/**
 * Make sure the rollup store exists. 1.x: creates the retention policy (DURATION `rollupRetention`, not
 * the default RP) when missing; an existing one is altered only when `alter` is set. 2.x: creates the
 * bucket with that retention when missing (the token needs write access to buckets; the compose and k8s
 * init scripts create it for the agent's least-privilege token), alters it only when `alter` is set.
 * Returns what was done, for the log.
 */
export async function ensureRollupStore(store: RollupStore, opts: { retention: string; alter?: boolean; signal?: AbortSignal }): Promise<string> {
  const r = store.rollup;
  if (r.version === 1) {
    const { exists, duration } = await retentionPolicy(r, r.rp!, opts.signal);
    const dur = influxQLDuration(opts.retention);
    if (!exists) {
      await queryInfluxQL(r, `CREATE RETENTION POLICY ${quote('influxql-ident', r.rp!)} ON ${quote('influxql-ident', r.db)} DURATION ${dur} REPLICATION 1`, { method: 'POST', signal: opts.signal });
      return `created retention policy ${r.rp} on ${r.db} (duration ${opts.retention})`;
    }
    if (opts.alter) {
      await queryInfluxQL(r, `ALTER RETENTION POLICY ${quote('influxql-ident', r.rp!)} ON ${quote('influxql-ident', r.db)} DURATION ${dur}`, { method: 'POST', signal: opts.signal });
      return `set retention policy ${r.rp} on ${r.db} to ${opts.retention} (was ${duration})`;
    }
    return `retention policy ${r.rp} on ${r.db} exists (duration ${duration})`;
  }
  const b = await findBucket(r, r.bucket, opts.signal);
  const seconds = Math.round(durationMs(opts.retention) / 1000);
  if (!b) {
    await v2Api(r, 'POST', '/api/v2/buckets', { orgID: await orgId(r, opts.signal), name: r.bucket, retentionRules: seconds > 0 ? [{ type: 'expire', everySeconds: seconds }] : [] }, opts.signal);
    return `created bucket ${r.bucket} (retention ${opts.retention})`;
  }
  if (opts.alter) {
    await v2Api(r, 'PATCH', `/api/v2/buckets/${encodeURIComponent(b.id)}`, { retentionRules: seconds > 0 ? [{ type: 'expire', everySeconds: seconds }] : [] }, opts.signal);
    return `set bucket ${r.bucket} retention to ${opts.retention}`;
  }
  return `bucket ${r.bucket} exists`;
}

/**
 * Shorten (or set) the retention of the 10 s and raw data: 1.x the target's RP (or the database's default
 * RP), 2.x its bucket. Only ever called when the user asks (`tcplat rollup --retention-raw`).
 */
export async function setSourceRetention(t: InfluxTarget, retention: string, signal?: AbortSignal): Promise<string> {
  if (t.version === 1) {
    const rp = t.rp ?? (await defaultRetentionPolicy(t));
    const before = (await retentionPolicy(t, rp)).duration;
    await queryInfluxQL(t, `ALTER RETENTION POLICY ${quote('influxql-ident', rp)} ON ${quote('influxql-ident', t.db)} DURATION ${influxQLDuration(retention)}`, { method: 'POST', signal });
    return `set retention policy ${rp} on ${t.db} to ${retention} (was ${before})`;
  }
  const b = await findBucket(t, t.bucket, signal);
  if (!b) throw new InfluxError(`bucket ${t.bucket} not found in org ${t.org}`, 404);
  const seconds = Math.round(durationMs(retention) / 1000);
  await v2Api(t, 'PATCH', `/api/v2/buckets/${encodeURIComponent(b.id)}`, { retentionRules: seconds > 0 ? [{ type: 'expire', everySeconds: seconds }] : [] }, signal);
  return `set bucket ${t.bucket} retention to ${retention}`;
}

async function retentionPolicy(t: InfluxV1Target, rp: string, signal?: AbortSignal): Promise<{ exists: boolean; duration: string | null; isDefault: boolean }> {
  const [series] = await queryInfluxQL({ ...t, rp: undefined }, `SHOW RETENTION POLICIES ON ${quote('influxql-ident', t.db)}`, { signal });
  for (const s of series ?? []) {
    const ni = s.columns.indexOf('name');
    const di = s.columns.indexOf('duration');
    const dfi = s.columns.indexOf('default');
    for (const v of s.values) if (v[ni] === rp) return { exists: true, duration: String(v[di]), isDefault: v[dfi] === true };
  }
  return { exists: false, duration: null, isDefault: false };
}

async function defaultRetentionPolicy(t: InfluxV1Target): Promise<string> {
  const [series] = await queryInfluxQL({ ...t, rp: undefined }, `SHOW RETENTION POLICIES ON ${quote('influxql-ident', t.db)}`);
  for (const s of series ?? []) {
    const ni = s.columns.indexOf('name');
    const dfi = s.columns.indexOf('default');
    for (const v of s.values) if (v[dfi] === true) return String(v[ni]);
  }
  throw new InfluxError(`database ${t.db} has no default retention policy: give --influx-rp`, 404);
}

/** A duration flag value (e.g. 14d, 400d, 0 = forever) as InfluxQL duration text (whole hours at least 1h). */
export function influxQLDuration(d: string): string {
  const ms = durationMs(d);
  if (ms === 0) return 'INF';
  if (ms < 3_600_000 || ms % 3_600_000 !== 0) throw new RangeError(`retention ${JSON.stringify(d)}: use whole hours, at least 1h (InfluxDB's minimum), or 0 for forever`);
  return `${ms / 3_600_000}h`;
}

function durationMs(d: string): number {
  const m = /^(\d+)([hdw])$/.exec(d.trim());
  if (d.trim() === '0') return 0;
  if (!m) throw new RangeError(`retention ${JSON.stringify(d)}: use a number of hours, days or weeks (e.g. 14d, 400d, 2w) or 0 for forever`);
  return Number(m[1]) * { h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 'h' | 'd' | 'w'];
}

async function v2Api(t: InfluxV2Target, method: string, path: string, body: unknown, signal?: AbortSignal): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(t.url.replace(/\/+$/, '') + path, {
      method,
      headers: { Authorization: `Token ${t.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    throw new InfluxError(`cannot reach ${describeTarget(t)}: ${fetchFailure(e)}`, 0);
  }
  const text = await res.text();
  if (!res.ok) throw new InfluxError(`${method} ${path.split('?')[0]} on ${describeTarget(t)}: HTTP ${res.status}: ${v2ErrorMessage(text)}`, res.status, text);
  return text ? JSON.parse(text) : null;
}

async function findBucket(t: InfluxV2Target, name: string, signal?: AbortSignal): Promise<{ id: string } | null> {
  const q = new URLSearchParams({ org: t.org, name });
  try {
    const r = (await v2Api(t, 'GET', `/api/v2/buckets?${q}`, undefined, signal)) as { buckets?: { id: string; name: string }[] };
    return r.buckets?.find((b) => b.name === name) ?? null;
  } catch (e) {
    if (e instanceof InfluxError && e.status === 404) return null;
    throw e;
  }
}

async function orgId(t: InfluxV2Target, signal?: AbortSignal): Promise<string> {
  const r = (await v2Api(t, 'GET', `/api/v2/orgs?${new URLSearchParams({ org: t.org })}`, undefined, signal)) as { orgs?: { id: string }[] };
  const id = r.orgs?.[0]?.id;
  if (!id) throw new InfluxError(`organisation ${t.org} not found`, 404);
  return id;
}

/** The time of the first point of the histogram measurement (optionally one host's), or null when there is none. */
export async function firstPointMs(t: InfluxTarget, host?: string, measurement: string = MEASUREMENT.connectHist, signal?: AbortSignal): Promise<number | null> {
  if (t.version === 1) {
    const id = (s: string) => quote('influxql-ident', s);
    const from = t.rp ? `${id(t.db)}.${id(t.rp)}.${id(measurement)}` : `${id(t.db)}..${id(measurement)}`;
    const where = host !== undefined ? ` WHERE ${id(TAG.host)} = ${quote('influxql-string', host)}` : '';
    const [series] = await queryInfluxQL(t, `SELECT first(${id(HIST_FIELD.count)}) FROM ${from}${where}`, { epoch: 'ms', signal });
    const v = series?.[0]?.values?.[0]?.[0];
    return typeof v === 'number' ? v : null;
  }
  const s = (v: string) => quote('flux-string', v);
  const flux = [
    `from(bucket: ${s(t.bucket)})`,
    `  |> range(start: 1970-01-01T00:00:00Z)`,
    `  |> filter(fn: (r) => r._measurement == ${s(measurement)} and r._field == ${s(HIST_FIELD.count)})`,
    ...(host !== undefined ? [`  |> filter(fn: (r) => r[${s(TAG.host)}] == ${s(host)})`] : []),
    `  |> first()`,
    `  |> group()`,
    `  |> min(column: "_time")`,
    `  |> keep(columns: ["_time"])`,
  ].join('\n');
  let min: number | null = null;
  for (const { header, rec } of fluxRecords(await queryFlux(t, flux, signal))) {
    const i = header.indexOf('_time');
    const ms = Date.parse(rec[i] ?? '');
    if (Number.isFinite(ms) && (min === null || ms < min)) min = ms;
  }
  return min;
}

/** The hosts of the histogram measurement (1.x: all the database's; 2.x: those with points since `fromMs`), sorted. */
export async function listHosts(t: InfluxTarget, fromMs: number, measurement: string = MEASUREMENT.connectHist, signal?: AbortSignal): Promise<string[]> {
  const out = new Set<string>();
  if (t.version === 1) {
    const [series] = await queryInfluxQL(t, `SHOW TAG VALUES FROM ${quote('influxql-ident', measurement)} WITH KEY = ${quote('influxql-ident', TAG.host)}`, { signal });
    for (const s of series ?? []) {
      const vi = s.columns.indexOf('value');
      for (const v of s.values) if (typeof v[vi] === 'string') out.add(v[vi] as string);
    }
  } else {
    const s = (v: string) => quote('flux-string', v);
    const flux = [
      'import "influxdata/influxdb/schema"',
      `schema.tagValues(bucket: ${s(t.bucket)}, tag: ${s(TAG.host)}, predicate: (r) => r._measurement == ${s(measurement)}, start: ${new Date(checkedMs(fromMs)).toISOString()})`,
    ].join('\n');
    for (const { header, rec } of fluxRecords(await queryFlux(t, flux, signal))) {
      const v = rec[header.indexOf('_value')];
      if (v) out.add(v);
    }
  }
  return [...out].sort();
}

/**
 * For the agent (live and --once): make sure the rollup RP/bucket exists with DEFAULT retention, without
 * failing. 1.x creates the RP when missing; 2.x creates the bucket when the token may (an operator token;
 * the least-privilege agent token may not: the compose/k8s init creates it). Returns what happened, for
 * the log; an error is returned as text (the rollup's own write then says what is wrong).
 */
export async function tryEnsureRollupStore(store: RollupStore, retention: string, signal?: AbortSignal): Promise<{ ok: boolean; message: string }> {
  try {
    return { ok: true, message: await ensureRollupStore(store, { retention, signal }) };
  } catch (e) {
    const where = store.rollup.version === 1 ? `retention policy ${store.rollup.rp}` : `bucket ${store.rollup.bucket}`;
    return { ok: false, message: `cannot check or create the rollup ${where}: ${(e as Error).message}` };
  }
}
