/**
 * What the datasource sends and how it reads the answers, as pure functions (datasource.ts does the HTTP):
 * template-variable expansion, the HistQuery of a panel query, the tag-value queries of variables and
 * editors, and data frames from histogram rows. Query text comes only from @tcplat/core's builders and
 * quote(): no user or variable value is ever pasted into a query.
 */
import { DataFrameType, FieldType, createDataFrame, type DataFrame, type Field, type Labels } from '@grafana/data';
import {
  BUCKET_BOUNDS_MS,
  BUCKET_FIELDS,
  bucketFieldsOf,
  FAILURE_RESULTS,
  HIST_FIELD,
  HIST_QUERY_TAGS,
  histTagsOf,
  levelLabel,
  lifespanQuantile,
  MAX_TIME_MS,
  meanOpenConnections,
  MEASUREMENT,
  newConnectionsPerS,
  QueryValueError,
  rollupLevelsFor,
  SESSION_HIST_FIELD,
  shortLivedShare,
  TAG,
  TLS_RESULTS,
  parseCsv,
  pickResolution,
  quantileFromBuckets,
  quote,
  type HistLevel,
  type HistMeasurement,
  type LevelRead,
  type RollupWindowName,
  type HistMetric,
  type HistQuery,
  type HistQueryTag,
  type HistRow,
} from '@tcplat/core';
import { expandValues, type Replace } from '../shared/variables';
import { METRIC_LABELS, type Metric, type TcplatQuery } from './types';

export { expandValues, type Replace };

/** The agent's flush window: finer bins would show its windows as gaps. */
export const MIN_WINDOW_MS = 10_000;

export type Filters = Partial<Record<HistQueryTag, string[]>>;

/** The filters of a query, variables expanded. */
export function queryFilters(q: Pick<TcplatQuery, HistQueryTag>, replace: Replace): Filters {
  const f: Filters = {};
  for (const tag of HIST_QUERY_TAGS) {
    const values = expandValues(q[tag], replace);
    if (values.length > 0) f[tag] = values;
  }
  return f;
}

/** The histogram fields a metric needs. */
export function metricsFor(metric: Metric): HistMetric[] {
  switch (metric) {
    case 'p50':
    case 'p90':
    case 'p99':
    case 'tlsP50':
    case 'tlsP99':
    case 'lifespanP50':
    case 'lifespanP99':
      // min and max clamp the estimate inside the first and the overflow bucket.
      return ['buckets', 'min', 'max'];
    case 'max':
      return ['max'];
    case 'mean':
      return ['count', 'sum'];
    case 'rate':
    case 'errorRate':
    case 'newConnRate':
    case 'tlsRate':
    case 'tlsFailureRate':
      return ['count'];
    case 'openMean':
      return ['sum'];
    case 'shortShare':
      return ['buckets', 'count'];
    case 'buckets':
      return ['buckets'];
    default:
      throw new QueryValueError(`unknown metric ${JSON.stringify(metric)}`);
  }
}

/** The histogram measurement a metric reads (churn: pkg/core churn.ts says which). */
export function measurementOf(metric: Metric): HistMeasurement {
  switch (metric) {
    case 'openMean':
    case 'lifespanP50':
    case 'lifespanP99':
    case 'shortShare':
      return MEASUREMENT.sessionHist;
    case 'tlsP50':
    case 'tlsP99':
    case 'tlsFailureRate':
    case 'tlsRate':
      return MEASUREMENT.tlsHist;
    default:
      // newConnRate too: successful connects of tcp_connect_hist.
      return MEASUREMENT.connectHist;
  }
}

/** Metrics that split counts by `result` to divide failures by all attempts. */
const FAILURE_SHARE: Partial<Record<Metric, readonly string[]>> = {
  errorRate: FAILURE_RESULTS,
  tlsFailureRate: TLS_RESULTS.filter((r) => r !== 'ok'),
};

/** Bin width for a panel interval: whole seconds, at least the agent's flush window. */
export function windowFor(intervalMs: number | undefined): number {
  const ms = Number.isFinite(intervalMs) ? Number(intervalMs) : MIN_WINDOW_MS;
  return Math.max(MIN_WINDOW_MS, Math.ceil(ms / 1000) * 1000);
}

export interface PlannedQuery {
  hist: HistQuery;
  /** Tags the user groups by (what the frames are labelled with). */
  groupBy: HistQueryTag[];
  /** Tags the database groups by (errorRate adds `result`). */
  queryGroupBy: HistQueryTag[];
  metric: Metric;
  /** The resolution picked for the range (pkg/core pickResolution); hist.windowMs is whole windows of it. */
  level: HistLevel;
  /** The histogram measurement read (hist.measurement). */
  measurement: HistMeasurement;
}

/**
 * The query for a panel: the coarsest resolution whose windows fit Grafana's interval (rollup levels in
 * `levels`, default all; [] reads only the 10 s data), the bin width rounded up to whole windows of it.
 */
export function planQuery(q: TcplatQuery, filters: Filters, range: { fromMs: number; toMs: number }, intervalMs?: number, levels?: readonly RollupWindowName[]): PlannedQuery {
  const measurement = measurementOf(q.metric);
  // tcp_session_hist has no result tag: a result filter or group-by of the query does not apply to it.
  const tags = histTagsOf(measurement);
  const groupBy = [...new Set((q.groupBy ?? []).filter((g) => (tags as readonly string[]).includes(g)))];
  const f: Filters = {};
  for (const t of tags) if (filters[t]) f[t] = filters[t];
  // New connections are the successful connects, whatever results the query lists.
  if (q.metric === 'newConnRate') f.result = ['ok'];
  // Grafana's heatmap draws one heatmap-rows frame (the last one it sees), so buckets are summed over every
  // matching series: the database adds them up, and framesFromRows says so when a group-by was asked for.
  const queryGroupBy = q.metric === 'buckets' ? [] : FAILURE_SHARE[q.metric] && !groupBy.includes('result') ? [...groupBy, TAG.result] : groupBy;
  const fromMs = Math.max(0, Math.floor(range.fromMs));
  const toMs = Math.min(MAX_TIME_MS, Math.max(fromMs + 1, Math.ceil(range.toMs)));
  // Only measurements with rollups (pkg/core ROLLED_UP_MEASUREMENTS) may pick a rollup level.
  const res = pickResolution({ fromMs, toMs, intervalMs: windowFor(intervalMs), levels: rollupLevelsFor(measurement, levels), baseMs: MIN_WINDOW_MS });
  // Whole bins (epoch-aligned, as both dialects bin): the first and last bins hold every window they
  // stand for (a rate divides by the bin width), and a rollup window is never cut by the range's edge.
  const binFrom = Math.floor(fromMs / res.windowMs) * res.windowMs;
  const binTo = Math.min(MAX_TIME_MS, Math.ceil(toMs / res.windowMs) * res.windowMs);
  return {
    hist: { filters: f, fromMs: binFrom, toMs: binTo, windowMs: res.windowMs, metrics: metricsFor(q.metric), groupBy: queryGroupBy, ...(measurement !== MEASUREMENT.connectHist ? { measurement } : {}) },
    groupBy,
    queryGroupBy,
    metric: q.metric,
    level: res.level,
    measurement,
  };
}

/** Why a churn or TLS query can find nothing: the data is written only when the agent collects it. */
export const NO_DATA_HINT: Partial<Record<HistMeasurement, string>> = {
  [MEASUREMENT.sessionHist]: `No ${MEASUREMENT.sessionHist} in this range: lifespans and churn need the tcplat agent run with --probe-close (close events are off by default).`,
  [MEASUREMENT.tlsHist]: `No ${MEASUREMENT.tlsHist} in this range: no TLS handshake was seen (OpenSSL clients through shared libssl or node; see bpf/README.md for what is covered).`,
};

const QUANTILE: Partial<Record<Metric, number>> = { p50: 0.5, p90: 0.9, p99: 0.99, tlsP50: 0.5, tlsP99: 0.99 };
const LIFESPAN_QUANTILE: Partial<Record<Metric, number>> = { lifespanP50: 0.5, lifespanP99: 0.99 };
const PER_SECOND: readonly Metric[] = ['rate', 'newConnRate', 'tlsRate'];

function labelsOf(tags: Record<string, string>, groupBy: readonly HistQueryTag[]): Labels {
  const l: Labels = {};
  for (const g of groupBy) l[g] = tags[g] ?? '';
  return l;
}

function groupRows(rows: readonly HistRow[], groupBy: readonly HistQueryTag[]): Map<string, { labels: Labels; rows: HistRow[] }> {
  const groups = new Map<string, { labels: Labels; rows: HistRow[] }>();
  for (const r of rows) {
    const labels = labelsOf(r.tags, groupBy);
    const key = JSON.stringify(groupBy.map((g) => labels[g]));
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { labels, rows: [] }));
    g.rows.push(r);
  }
  return new Map([...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Name of a heatmap row: its upper bound in ms, `+Inf` for overflow (Prometheus' `le` convention). */
export const BUCKET_NAMES: readonly string[] = BUCKET_FIELDS.map((_, i) => (i < BUCKET_BOUNDS_MS.length ? String(BUCKET_BOUNDS_MS[i]) : '+Inf'));

function timeField(times: number[]): Field {
  return { name: 'Time', type: FieldType.time, values: times, config: {} };
}

/** Why a buckets query ignores its group-by, shown by Grafana above the panel. */
export function bucketsGroupByNotice(groupBy: readonly HistQueryTag[]): string {
  return (
    `Histogram buckets are summed over every ${groupBy.join(', ')}: Grafana's heatmap draws one set of buckets. ` +
    `For one heatmap per ${groupBy[0]}, filter on a variable ($${groupBy[0]}) and repeat the panel by it.`
  );
}

/**
 * Data frames from the rows of a planned query: one time series per group, labelled with the group's tags.
 * `buckets` gives ONE `heatmap-rows` frame (Grafana's heatmap keeps only the last such frame: prepareHeatmapData
 * in grafana/grafana public/app/plugins/panel/heatmap/fields.ts): non-cumulative counts (as stored) summed over
 * every series, one field per bucket named by its upper bound, ordered numerically, each labelled with `le`
 * alone. rowsToCellsHeatmap (public/app/features/transformers/calculateHeatmap/heatmap.ts) takes the first
 * label key of the first bucket as the one to match: with `le` it lays cells out by upper bound (yMax) and
 * starts the axis at 0, so the lowest bucket reads 0..0.01 ms.
 */
export function framesFromRows(rows: readonly HistRow[], plan: PlannedQuery, refId: string, read?: Pick<LevelRead, 'level' | 'note' | 'fallback' | 'fleet'>): DataFrame[] {
  const frames = framesOf(rows, plan, refId);
  const why = rows.length === 0 ? NO_DATA_HINT[plan.measurement] : undefined;
  // An empty churn or TLS panel says what it needs rather than just "No data".
  if (why) frames.push(createDataFrame({ refId, name: METRIC_LABELS[plan.metric], meta: { notices: [{ severity: 'info', text: why }] }, fields: [] }));
  // Which resolution was read: in meta.custom for tools, and as a notice Grafana shows on the panel when
  // it is not the 10 s data (info), or when the picked rollups were not there (warning, naming tcplat rollup).
  const level = read?.level ?? plan.level;
  const label = levelLabel(level, MIN_WINDOW_MS, read?.fleet === true);
  const notice = read?.note
    ? { severity: 'warning' as const, text: read.fleet && !read.fallback ? `Read ${label} where there are some: ${read.note}.` : `Read the 10 s data: ${read.note}.` }
    : level !== 'base'
      ? { severity: 'info' as const, text: `Read ${label} (${plan.hist.windowMs / 1000} s bins): the coarsest resolution with one point per interval.` }
      : null;
  for (const f of frames) {
    f.meta = { ...f.meta, custom: { ...f.meta?.custom, resolution: level, resolutionLabel: label, ...(read?.fleet ? { fleetRollups: true } : {}), ...(read?.fallback ? { rollupFallback: read.fallback } : {}) } };
    if (notice) f.meta.notices = [...(f.meta.notices ?? []), notice];
  }
  return frames;
}

function framesOf(rows: readonly HistRow[], plan: PlannedQuery, refId: string): DataFrame[] {
  const { metric, groupBy } = plan;
  const windowS = plan.hist.windowMs / 1000;
  const frames: DataFrame[] = [];
  if (metric === 'buckets') {
    if (rows.length === 0) return frames;
    const byTime = new Map<number, number[]>();
    for (const r of rows) {
      let sums = byTime.get(r.timeMs);
      if (!sums) byTime.set(r.timeMs, (sums = BUCKET_FIELDS.map(() => 0)));
      BUCKET_FIELDS.forEach((f, i) => (sums![i] += r.values[f] ?? 0));
    }
    const times = [...byTime.keys()].sort((a, b) => a - b);
    const fields: Field[] = [timeField(times)];
    BUCKET_FIELDS.forEach((_, i) => {
      fields.push({
        name: BUCKET_NAMES[i],
        type: FieldType.number,
        values: times.map((t) => byTime.get(t)![i]),
        labels: { le: BUCKET_NAMES[i] },
        config: { unit: 'short', displayNameFromDS: BUCKET_NAMES[i] },
      });
    });
    const notices = groupBy.length > 0 ? [{ severity: 'info' as const, text: bucketsGroupByNotice(groupBy) }] : undefined;
    frames.push(createDataFrame({ refId, name: 'latency', meta: { type: DataFrameType.HeatmapRows, ...(notices ? { notices } : {}) }, fields }));
    return frames;
  }
  const failures = FAILURE_SHARE[metric];
  if (failures) {
    // Totals per user group and bin over every result; failures are the results that are not `ok`.
    const byResult = groupBy.includes('result');
    const outer = groupBy.filter((g) => g !== 'result');
    const totals = new Map<string, number>();
    const tkey = (r: HistRow) => JSON.stringify([outer.map((g) => r.tags[g] ?? ''), r.timeMs]);
    for (const r of rows) totals.set(tkey(r), (totals.get(tkey(r)) ?? 0) + (r.values[HIST_FIELD.count] ?? 0));
    const failing = rows.filter((r) => failures.includes(r.tags[TAG.result] ?? ''));
    const keyed = byResult ? failing : rows;
    const series = new Map<string, { labels: Labels; points: Map<number, number> }>();
    for (const r of keyed) {
      const labels = labelsOf(r.tags, groupBy);
      const key = JSON.stringify(groupBy.map((g) => labels[g]));
      let s = series.get(key);
      if (!s) series.set(key, (s = { labels, points: new Map() }));
      const fail = failures.includes(r.tags[TAG.result] ?? '') ? (r.values[HIST_FIELD.count] ?? 0) : 0;
      s.points.set(r.timeMs, (s.points.get(r.timeMs) ?? 0) + fail);
    }
    for (const [, s] of [...series.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      const times = [...s.points.keys()].sort((a, b) => a - b);
      const values = times.map((t) => {
        const total = totals.get(JSON.stringify([outer.map((g) => s.labels[g] ?? ''), t])) ?? 0;
        return total > 0 ? s.points.get(t)! / total : null;
      });
      frames.push(seriesFrame(refId, metric, s.labels, times, values, 'percentunit'));
    }
    return frames;
  }
  for (const { labels, rows: rs } of groupRows(rows, groupBy).values()) {
    const times = rs.map((r) => r.timeMs);
    let values: Array<number | null>;
    let unit = 'ms';
    const q = QUANTILE[metric];
    const lq = LIFESPAN_QUANTILE[metric];
    const finite = (v: number) => (Number.isFinite(v) ? v : null);
    const buckets = (r: HistRow) => bucketFieldsOf(plan.measurement).map((f) => r.values[f] ?? 0);
    if (q !== undefined) {
      values = rs.map((r) => finite(quantileFromBuckets(buckets(r), q, r.values[HIST_FIELD.minMs] ?? NaN, r.values[HIST_FIELD.maxMs] ?? NaN)));
    } else if (lq !== undefined) {
      values = rs.map((r) => finite(lifespanQuantile(buckets(r), lq, r.values[SESSION_HIST_FIELD.minMs] ?? NaN, r.values[SESSION_HIST_FIELD.maxMs] ?? NaN)));
    } else if (metric === 'openMean') {
      unit = 'short';
      values = rs.map((r) => meanOpenConnections(r.values[SESSION_HIST_FIELD.sumMs] ?? 0, windowS));
    } else if (metric === 'shortShare') {
      unit = 'percentunit';
      values = rs.map((r) => finite(shortLivedShare(buckets(r), r.values[SESSION_HIST_FIELD.count])));
    } else if (metric === 'max') {
      values = rs.map((r) => r.values[HIST_FIELD.maxMs] ?? null);
    } else if (metric === 'mean') {
      values = rs.map((r) => {
        const c = r.values[HIST_FIELD.count] ?? 0;
        return c > 0 ? (r.values[HIST_FIELD.sumMs] ?? 0) / c : null;
      });
    } else if (PER_SECOND.includes(metric)) {
      unit = 'cps';
      const count = (r: HistRow) => r.values[HIST_FIELD.count] ?? 0;
      values = rs.map((r) => (metric === 'newConnRate' ? newConnectionsPerS(count(r), windowS) : count(r) / windowS));
    } else {
      throw new QueryValueError(`unknown metric ${JSON.stringify(metric)}`);
    }
    frames.push(seriesFrame(refId, metric, labels, times, values, unit));
  }
  return frames;
}

function seriesFrame(refId: string, metric: Metric, labels: Labels, times: number[], values: Array<number | null>, unit: string): DataFrame {
  return createDataFrame({
    refId,
    name: Object.values(labels).join(' ') || METRIC_LABELS[metric],
    meta: { type: DataFrameType.TimeSeriesMulti },
    fields: [timeField(times), { name: METRIC_LABELS[metric], type: FieldType.number, values, labels, config: { unit } }],
  });
}

// ---- tag values (variables and the query editor's option lists) ----

function checkValue(tag: string, v: string): void {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(v)) throw new QueryValueError(`filter ${tag}: tag values never contain control characters, got ${JSON.stringify(v.slice(0, 40))}`);
}

/** InfluxQL (1.x): the values of one tag of tcp_connect_hist, optionally among series matching filters. */
export function tagValuesInfluxQL(tag: HistQueryTag, filters: Filters = {}): string {
  const id = (s: string) => quote('influxql-ident', s);
  const where: string[] = [];
  for (const t of HIST_QUERY_TAGS) {
    const values = [...new Set(filters[t] ?? [])].sort();
    if (values.length === 0) continue;
    values.forEach((v) => checkValue(t, v));
    const alts = values.map((v) => `${id(t)} = ${quote('influxql-string', v)}`);
    where.push(alts.length === 1 ? alts[0] : `(${alts.join(' OR ')})`);
  }
  return `SHOW TAG VALUES FROM ${id(MEASUREMENT.connectHist)} WITH KEY = ${id(tag)}${where.length ? ` WHERE ${where.join(' AND ')}` : ''}`;
}

/** Flux (2.x): the same with schema.tagValues over [startMs, now]. */
export function tagValuesFlux(bucket: string, tag: HistQueryTag, filters: Filters = {}, startMs: number): string {
  if (!Number.isSafeInteger(startMs) || startMs < 0 || startMs > MAX_TIME_MS) throw new QueryValueError(`startMs must be an epoch ms integer, got ${startMs}`);
  const s = (v: string) => quote('flux-string', v);
  const conds = [`r._measurement == ${s(MEASUREMENT.connectHist)}`];
  for (const t of HIST_QUERY_TAGS) {
    const values = [...new Set(filters[t] ?? [])].sort();
    if (values.length === 0) continue;
    values.forEach((v) => checkValue(t, v));
    conds.push(`(${values.map((v) => `r[${s(t)}] == ${s(v)}`).join(' or ')})`);
  }
  return [
    'import "influxdata/influxdb/schema"',
    '',
    `schema.tagValues(bucket: ${s(bucket)}, tag: ${s(tag)}, predicate: (r) => ${conds.join(' and ')}, start: ${new Date(startMs).toISOString()})`,
    '',
  ].join('\n');
}

/** Tag values from an InfluxQL SHOW TAG VALUES answer (columns key, value). */
export function tagValuesFromInfluxQL(series: ReadonlyArray<{ columns: string[]; values: unknown[][] }>): string[] {
  const out = new Set<string>();
  for (const s of series) {
    const i = s.columns.indexOf('value');
    for (const v of s.values) if (typeof v[i] === 'string') out.add(v[i] as string);
  }
  return [...out].sort();
}

/** Tag values from a Flux annotated-CSV answer (the `_value` column). */
export function tagValuesFromFluxCsv(text: string): string[] {
  const out = new Set<string>();
  let header: string[] | null = null;
  for (const rec of parseCsv(text)) {
    if (rec.length === 0 || (rec.length === 1 && rec[0] === '') || rec[0].startsWith('#')) {
      header = null;
      continue;
    }
    if (header === null) {
      header = rec;
      continue;
    }
    if (header.includes('error') && header.includes('reference')) throw new Error(`Flux query failed: ${rec[header.indexOf('error')]}`);
    const i = header.indexOf('_value');
    if (i >= 0 && rec[i] !== undefined) out.add(rec[i]);
  }
  return [...out].sort();
}
