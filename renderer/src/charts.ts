/**
 * From rows to what a Python worker draws. All numbers are prepared here with pkg/core (bucket bounds,
 * quantiles), so the workers only draw and the datasource computes the same values.
 */
import {
  BUCKET_BOUNDS_MS,
  bucketFieldsOf,
  FAILURE_RESULTS,
  HIST_FIELD,
  levelLabel,
  lifespanQuantile,
  meanOpenConnections,
  MEASUREMENT,
  newConnectionsPerS,
  quantileFromBuckets,
  SESSION_BUCKET_BOUNDS_MS,
  SESSION_HIST_FIELD,
  TLS_RESULTS,
  type HistLevel,
  type HistMeasurement,
  type HistQuery,
  type HistRow,
} from '@tcplat/core';
import type { Metric, Overlay, RenderParams } from './params';

/** The histogram each metric reads. */
const MEASUREMENT_OF: Record<Metric, HistMeasurement> = { connect: MEASUREMENT.connectHist, tls: MEASUREMENT.tlsHist };

/** Drawn y edges: a measurement's bucket bounds (default the connect buckets) plus one R5 step below the first and above the last (overflow). */
export function yEdgesMs(measurement: HistMeasurement = MEASUREMENT.connectHist): number[] {
  const b = measurement === MEASUREMENT.sessionHist ? SESSION_BUCKET_BOUNDS_MS : BUCKET_BOUNDS_MS;
  const below = (b[0] * b[0]) / b[1];
  const above = (b[b.length - 1] * b[b.length - 1]) / b[b.length - 2];
  return [below, ...b, above];
}

export const QUANTILES: Record<Overlay, number> = { p50: 0.5, p90: 0.9, p99: 0.99, max: 1 };

/** What each metric's charts say, and which results count as failures. */
const METRIC_TEXT: Record<Metric, { what: string; unit: string; y: string; failures: readonly string[]; none: string }> = {
  connect: { what: 'TCP connect latency', unit: 'connects', y: 'connect latency', failures: FAILURE_RESULTS, none: 'no TCP connects recorded for these filters in this time range' },
  tls: { what: 'TLS handshake latency', unit: 'handshakes', y: 'TLS handshake latency', failures: TLS_RESULTS.filter((r) => r !== 'ok'), none: 'no TLS handshakes recorded for these filters in this time range (the agent stores them from the probe\'s tls lines)' },
};

/** The one query a chart needs (min/max per bin only where they clamp quantiles: overlays, percentiles, lifespans). */
export function chartQuery(p: RenderParams): HistQuery {
  if (p.kind === 'lifespan') {
    const { result: _none, ...filters } = p.filters;
    return { measurement: MEASUREMENT.sessionHist, filters, fromMs: p.binFromMs, toMs: p.binToMs, windowMs: p.windowMs, metrics: ['buckets', 'count', 'sum', 'min', 'max'], groupBy: [] };
  }
  return {
    // tcp_connect_hist queries stay as they were (no measurement named): the same text, the same cache.
    ...(p.metric === 'tls' ? { measurement: MEASUREMENT.tlsHist } : {}),
    filters: p.filters,
    fromMs: p.binFromMs,
    toMs: p.binToMs,
    windowMs: p.windowMs,
    metrics: p.kind === 'heatmap' && p.overlays.length === 0 ? ['buckets', 'count'] : ['buckets', 'count', 'min', 'max'],
    groupBy: p.kind === 'percentiles' ? ['dst', 'result'] : [],
  };
}

function fmtDuration(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ];
  for (const [u, name] of units) if (ms >= u && ms % u === 0) return `${ms / u} ${name}`;
  return `${ms} ms`;
}

function fmtRange(p: RenderParams): string {
  const f = new Intl.DateTimeFormat('en-CA', { timeZone: p.tz, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  const parts = (ms: number) => {
    const o: Record<string, string> = {};
    for (const x of f.formatToParts(ms)) o[x.type] = x.value;
    return { day: `${o.year}-${o.month}-${o.day}`, time: `${o.hour}:${o.minute}` };
  };
  const a = parts(p.binFromMs);
  const b = parts(p.binToMs);
  return `${a.day} ${a.time} – ${b.day === a.day ? '' : b.day + ' '}${b.time} ${p.tz}`;
}

function shortList(values: string[], all: string): string {
  if (values.length === 0) return all;
  const shown = values.slice(0, 3).map((v) => (v.length > 40 ? v.slice(0, 39) + '…' : v));
  return shown.join(', ') + (values.length > 3 ? ` +${values.length - 3}` : '');
}

/** What was read for a chart: its level, and a note when it fell back to the 10 s data (readLevels). */
export interface ReadInfo {
  level: HistLevel;
  /** The 10 s data's window (--min-bin). */
  baseMs: number;
  note?: string;
  /** The range was read from the fleet rollups (summed over hosts): the subtitle says "1 h fleet rollups". */
  fleet?: boolean;
}

/**
 * The second query of a lifespan chart: connections opened per bin (tcp_connect_hist count, result ok), the
 * churn contract's "new connections/s" (schema-note: sum(count where result=ok) / interval).
 */
export function newConnectsQuery(p: RenderParams): HistQuery {
  return { filters: { ...p.filters, result: ['ok'] }, fromMs: p.binFromMs, toMs: p.binToMs, windowMs: p.windowMs, metrics: ['count'], groupBy: [] };
}

function titles(p: RenderParams, what: string, extra: string[], read?: ReadInfo): { title: string; subtitle: string } {
  const scope = `${shortList(p.filters.service, 'all services')} → ${shortList(p.filters.dst, 'all destinations')}`;
  const sub = [fmtRange(p), `${fmtDuration(p.windowMs)} bins of ${levelLabel(read?.level ?? p.level, read?.baseMs, read?.fleet === true)}`];
  if (read?.note) sub.push(read.note);
  if (p.filters.host.length) sub.push(`host ${shortList(p.filters.host, '')}`);
  if (p.filters.result.length) sub.push(`result ${shortList(p.filters.result, '')}`);
  sub.push(...extra);
  return p.title ? { title: p.title, subtitle: `${what}: ${scope} · ${sub.join(' · ')}` } : { title: `${what}: ${scope}`, subtitle: sub.join(' · ') };
}

function base(p: RenderParams) {
  return { width: p.width, height: p.height, theme: p.theme, tz: p.tz, from_ms: p.binFromMs, to_ms: p.binToMs, window_ms: p.windowMs };
}

export interface Chart {
  /** What a worker draws. */
  request: Record<string, unknown>;
  /** Connections in the chart (0: the image says there is no data). */
  total: number;
}

function noData(p: RenderParams, what: string, read?: ReadInfo, detail = METRIC_TEXT.connect.none): Chart {
  const t = titles(p, what, [], read);
  return {
    total: 0,
    request: { kind: 'message', ...base(p), ...t, message: 'No data', detail },
  };
}

const fmtCount = (n: number) => n.toLocaleString('en-US');

export function heatmapChart(p: RenderParams, rows: HistRow[], read?: ReadInfo): Chart {
  const text = METRIC_TEXT[p.metric ?? 'connect'];
  const BUCKET_FIELDS = bucketFieldsOf(MEASUREMENT_OF[p.metric ?? 'connect']);
  const BUCKET_COUNT = BUCKET_FIELDS.length;
  const bins = Math.round((p.binToMs - p.binFromMs) / p.windowMs);
  const counts = new Float64Array(bins * BUCKET_COUNT);
  const mins = new Float64Array(bins).fill(Infinity);
  const maxs = new Float64Array(bins).fill(-Infinity);
  let total = 0;
  for (const r of rows) {
    const i = Math.floor((r.timeMs - p.binFromMs) / p.windowMs);
    if (i < 0 || i >= bins) continue;
    for (let k = 0; k < BUCKET_COUNT; k++) {
      const c = r.values[BUCKET_FIELDS[k]] ?? 0;
      counts[i * BUCKET_COUNT + k] += c;
      total += c;
    }
    const lo = r.values[HIST_FIELD.minMs];
    const hi = r.values[HIST_FIELD.maxMs];
    if (lo !== undefined && lo < mins[i]) mins[i] = lo;
    if (hi !== undefined && hi > maxs[i]) maxs[i] = hi;
  }
  if (total <= 0) return noData(p, text.what, read, text.none);
  const overlays: Record<string, (number | null)[]> = {};
  for (const o of p.overlays) {
    const line: (number | null)[] = [];
    for (let i = 0; i < bins; i++) {
      const v = quantileFromBuckets(counts.subarray(i * BUCKET_COUNT, (i + 1) * BUCKET_COUNT) as unknown as number[], QUANTILES[o], mins[i], maxs[i]);
      line.push(Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : null);
    }
    overlays[o] = line;
  }
  const t = titles(p, text.what, [`${fmtCount(total)} ${text.unit}`], read);
  return {
    total,
    request: {
      kind: 'heatmap',
      ...base(p),
      ...t,
      bins,
      y_edges_ms: yEdgesMs(MEASUREMENT_OF[p.metric ?? 'connect']),
      y_label: text.y,
      counts: Array.from(counts),
      overlays,
      scale: p.scale,
      colour_label: `${text.unit} per cell (${fmtDuration(p.windowMs)} × bucket)`,
      colour_unit: text.unit, // the label of a short chart (under 360 px)
    },
  };
}

interface DstAcc {
  ok: Float64Array; // latency histogram per bin (bins × buckets)
  mins: Float64Array;
  maxs: Float64Array;
  total: Float64Array;
  failed: Float64Array;
  sum: number;
}

/** At most this many destinations get their own lines (the busiest); the subtitle says how many more. */
export const MAX_PERCENTILE_SERIES = 8;

export function percentilesChart(p: RenderParams, rows: HistRow[], read?: ReadInfo): Chart {
  const text = METRIC_TEXT[p.metric ?? 'connect'];
  const BUCKET_FIELDS = bucketFieldsOf(MEASUREMENT_OF[p.metric ?? 'connect']);
  const BUCKET_COUNT = BUCKET_FIELDS.length;
  const bins = Math.round((p.binToMs - p.binFromMs) / p.windowMs);
  // Latency lines use successful handshakes unless the result filter names only failures: a refused
  // connect returns in microseconds and would hide a slow handshake in the percentiles.
  const latencyResults = p.filters.result.length > 0 && !p.filters.result.includes('ok') ? new Set(p.filters.result) : new Set(['ok']);
  const failures = new Set<string>(text.failures);
  const byDst = new Map<string, DstAcc>();
  let total = 0;
  for (const r of rows) {
    const i = Math.floor((r.timeMs - p.binFromMs) / p.windowMs);
    if (i < 0 || i >= bins) continue;
    const dst = r.tags.dst ?? '';
    let a = byDst.get(dst);
    if (!a) {
      a = { ok: new Float64Array(bins * BUCKET_COUNT), mins: new Float64Array(bins).fill(Infinity), maxs: new Float64Array(bins).fill(-Infinity), total: new Float64Array(bins), failed: new Float64Array(bins), sum: 0 };
      byDst.set(dst, a);
    }
    const n = r.values[HIST_FIELD.count] ?? 0;
    a.total[i] += n;
    a.sum += n;
    total += n;
    if (failures.has(r.tags.result ?? '')) a.failed[i] += n;
    if (latencyResults.has(r.tags.result ?? '')) {
      for (let k = 0; k < BUCKET_COUNT; k++) a.ok[i * BUCKET_COUNT + k] += r.values[BUCKET_FIELDS[k]] ?? 0;
      const lo = r.values[HIST_FIELD.minMs];
      const hi = r.values[HIST_FIELD.maxMs];
      if (lo !== undefined && lo < a.mins[i]) a.mins[i] = lo;
      if (hi !== undefined && hi > a.maxs[i]) a.maxs[i] = hi;
    }
  }
  const what = p.metric === 'tls' ? 'TLS handshake percentiles' : 'TCP connect percentiles';
  if (total <= 0) return noData(p, what, read, text.none);
  const ranked = [...byDst.entries()].sort((x, y) => y[1].sum - x[1].sum || (x[0] < y[0] ? -1 : 1));
  const shown = ranked.slice(0, MAX_PERCENTILE_SERIES);
  const round = (v: number) => (Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : null);
  const series = shown.map(([dst, a]) => {
    const s: Record<string, unknown> = { name: (dst || '(no dst)').slice(0, 48) };
    for (const q of ['p50', 'p90', 'p99', 'max'] as const) {
      const line: (number | null)[] = [];
      for (let i = 0; i < bins; i++) {
        const h = a.ok.subarray(i * BUCKET_COUNT, (i + 1) * BUCKET_COUNT) as unknown as number[];
        line.push(q === 'max' ? round(a.maxs[i]) : round(quantileFromBuckets(h, QUANTILES[q], a.mins[i], a.maxs[i])));
      }
      s[q] = line;
    }
    s.error_pct = Array.from(a.total, (t, i) => (t > 0 ? Math.round((a.failed[i] / t) * 1e6) / 1e4 : null));
    return s;
  });
  const extra = [`${fmtCount(total)} ${text.unit}`];
  if (ranked.length > shown.length) extra.push(`top ${shown.length} of ${ranked.length} destinations`);
  const t = titles(p, what, extra, read);
  return {
    total,
    request: {
      kind: 'percentiles',
      ...base(p),
      ...t,
      times_ms: Array.from({ length: bins }, (_, i) => p.binFromMs + i * p.windowMs),
      y_edges_ms: yEdgesMs(MEASUREMENT_OF[p.metric ?? 'connect']),
      y_label: text.y,
      quantiles: ['p50', 'p90', 'p99', 'max'],
      series,
    },
  };
}

/** Rounded for the worker and the tests: 4 decimals. */
const round4 = (v: number) => (Number.isFinite(v) ? Math.round(v * 1e4) / 1e4 : null);

/**
 * The lifespan chart (issue 15): a heatmap of the lifespans of the connections that CLOSED in each bin
 * (tcp_session_hist, 1 ms to a day), lifespan p50 and p99 over it, and below it the new connections/s of the
 * same service -> destination (tcp_connect_hist, result ok: `connects`). A pool that reuses its connections
 * shows long lifespans and few connects/s; a churning one, lifespans near its request time and connects/s
 * near its requests/s. The subtitle names the resolution read (of the lifespans).
 */
export function lifespanChart(p: RenderParams, rows: HistRow[], connects: HistRow[], read?: ReadInfo): Chart {
  const bucketFields = bucketFieldsOf(MEASUREMENT.sessionHist);
  const nb = bucketFields.length;
  const bins = Math.round((p.binToMs - p.binFromMs) / p.windowMs);
  const counts = new Float64Array(bins * nb);
  const mins = new Float64Array(bins).fill(Infinity);
  const maxs = new Float64Array(bins).fill(-Infinity);
  const rate = new Float64Array(bins);
  const all = new Float64Array(nb);
  let total = 0;
  let sumMs = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of rows) {
    const i = Math.floor((r.timeMs - p.binFromMs) / p.windowMs);
    if (i < 0 || i >= bins) continue;
    for (let k = 0; k < nb; k++) {
      const c = r.values[bucketFields[k]] ?? 0;
      counts[i * nb + k] += c;
      all[k] += c;
      total += c;
    }
    sumMs += r.values[SESSION_HIST_FIELD.sumMs] ?? 0;
    const a = r.values[SESSION_HIST_FIELD.minMs];
    const b = r.values[SESSION_HIST_FIELD.maxMs];
    if (a !== undefined && a < mins[i]) mins[i] = a;
    if (b !== undefined && b > maxs[i]) maxs[i] = b;
    if (a !== undefined) lo = Math.min(lo, a);
    if (b !== undefined) hi = Math.max(hi, b);
  }
  let opened = 0;
  for (const r of connects) {
    const i = Math.floor((r.timeMs - p.binFromMs) / p.windowMs);
    if (i < 0 || i >= bins) continue;
    const n = r.values[HIST_FIELD.count] ?? 0;
    rate[i] += n / (p.windowMs / 1000);
    opened += n;
  }
  const what = 'TCP connection lifespans';
  if (total <= 0) {
    const detail = opened > 0 ? `${fmtCount(opened)} connects but no closed connections: run the agent with --probe-close to record lifespans` : 'no closed connections recorded for these filters in this time range (the agent records them with --probe-close)';
    return noData(p, what, read, detail);
  }
  const overlays: Record<string, (number | null)[]> = {};
  for (const o of ['p50', 'p99'] as const) {
    overlays[o] = Array.from({ length: bins }, (_, i) => round4(lifespanQuantile(counts.subarray(i * nb, (i + 1) * nb) as unknown as number[], QUANTILES[o], mins[i], maxs[i])));
  }
  // The range's totals by the formulas of pkg/core churn.ts (the datasource's too).
  const rangeS = (p.binToMs - p.binFromMs) / 1000;
  const p50 = lifespanQuantile(Array.from(all), 0.5, lo, hi);
  const p99 = lifespanQuantile(Array.from(all), 0.99, lo, hi);
  const extra = [
    `${fmtCount(total)} closed`,
    `${fmtRate(newConnectionsPerS(opened, rangeS))} new conns/s`,
    `lifespan p50 ${fmtMs(p50)}, p99 ${fmtMs(p99)}`,
    // Little's law over the connections that closed in the range: the mean, exact when the range is long against the lifespans.
    `mean open ${fmtRate(meanOpenConnections(sumMs, rangeS))}`,
  ];
  const t = titles(p, what, extra, read);
  return {
    total,
    request: {
      kind: 'lifespan',
      ...base(p),
      ...t,
      bins,
      y_edges_ms: yEdgesMs(MEASUREMENT.sessionHist),
      y_label: 'lifespan',
      counts: Array.from(counts),
      overlays,
      rate: Array.from(rate, (v) => Math.round(v * 1000) / 1000),
      rate_label: 'new conns/s',
      scale: p.scale,
      colour_label: `connections closed per cell (${fmtDuration(p.windowMs)} × bucket)`,
    },
  };
}

function fmtRate(v: number): string {
  return v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return '–';
  const units: [number, string][] = [
    [86_400_000, 'd'],
    [3_600_000, 'h'],
    [60_000, 'min'],
    [1000, 's'],
  ];
  for (const [u, name] of units) if (ms >= u) return `${Number((ms / u).toPrecision(2))} ${name}`;
  return `${Number(ms.toPrecision(2))} ms`;
}
