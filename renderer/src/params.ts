/**
 * Render parameters: from the query string to one validated, canonical request. Every error is a
 * ParamError naming the parameter (the service answers 400 with it). The canonical form is the cache key
 * and the text that signed links cover.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DurationError, HIST_QUERY_TAGS, parseTime, pickResolution, ROLLUP_WINDOWS, type HistLevel, type HistQueryTag, type RollupWindowName } from '@tcplat/core';

export class ParamError extends Error {
  constructor(
    readonly parameter: string,
    message: string,
  ) {
    super(message);
    this.name = 'ParamError';
  }
}

/** heatmap/percentiles: connect (or TLS handshake: metric=tls) latency; lifespan: connection lifespans (tcp_session_hist). */
export type ChartKind = 'heatmap' | 'percentiles' | 'lifespan';
/** What heatmap.png and percentiles.png draw: TCP connect latency (tcp_connect_hist) or TLS handshake latency (tls_handshake_hist). */
export const METRICS = ['connect', 'tls'] as const;
export type Metric = (typeof METRICS)[number];
export const OVERLAYS = ['p50', 'p90', 'p99', 'max'] as const;
export type Overlay = (typeof OVERLAYS)[number];
/** Colour scale of the heatmap's cells: log (default: a burst never drowns the rest) or linear. */
export const SCALES = ['log', 'linear'] as const;
export type Scale = (typeof SCALES)[number];

export interface Limits {
  maxRangeMs: number;
  maxWidth: number;
  maxHeight: number;
  maxBins: number;
  /** Smallest time bin: the agent's flush window (finer bins would show its windows as gaps). */
  minBinMs: number;
  /** Most values in one filter list. */
  maxListValues: number;
  /** Rollup levels that may be read (--rollups); [] reads only the 10 s data. */
  rollupLevels: readonly RollupWindowName[];
}

export const DEFAULT_LIMITS: Limits = {
  maxRangeMs: 31 * 86_400_000,
  maxWidth: 4000,
  maxHeight: 3000,
  maxBins: 1500,
  minBinMs: 10_000,
  maxListValues: 50,
  rollupLevels: ROLLUP_WINDOWS.map((w) => w.name),
};

export interface RenderParams {
  kind: ChartKind;
  /** connect or tls (lifespan charts: always connect, their new-connections line reads tcp_connect_hist). */
  metric: Metric;
  filters: Record<HistQueryTag, string[]>;
  /** The requested range, resolved. */
  fromMs: number;
  toMs: number;
  /** Bin width and the range snapped outwards to whole bins: what is queried and drawn. */
  windowMs: number;
  /** The resolution read (pkg/core pickResolution): the 10 s data or a rollup level whose windows fill whole bins. */
  level: HistLevel;
  binFromMs: number;
  binToMs: number;
  width: number;
  height: number;
  theme: 'light' | 'dark';
  tz: string;
  title: string;
  overlays: Overlay[];
  scale: Scale;
}

const LIST = { type: 'array', items: { type: 'string', maxLength: 4096 }, maxItems: 200 };
const TEXT = { type: 'string', maxLength: 4096 };

/** The parameters of the render routes (and so of the links that point at them). */
export const RENDER_PARAMS = ['service', 'dst', 'host', 'result', 'from', 'to', 'width', 'height', 'theme', 'tz', 'title', 'overlay', 'scale', 'metric'] as const;

/**
 * The query-string schema of the render routes. POST /links validates what it would sign with this same
 * object, through the same fastify validator, so it never signs a query the route would refuse (an array
 * where one value is expected, a width that is not a number). Pixel limits are checked by
 * parseRenderParams against the configured limits.
 */
export const RENDER_QUERY_SCHEMA = {
  type: 'object',
  properties: {
    service: LIST,
    dst: LIST,
    host: LIST,
    result: LIST,
    overlay: LIST,
    from: TEXT,
    to: TEXT,
    width: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    height: { type: 'integer', minimum: 0, maximum: 1_000_000 },
    theme: { type: 'string', enum: ['light', 'dark'] },
    scale: { type: 'string', enum: ['log', 'linear'] },
    metric: { type: 'string', enum: [...METRICS] },
    tz: TEXT,
    title: TEXT,
    token: TEXT,
    exp: TEXT,
    sig: TEXT,
  },
} as const;

/** A UTF-16 surrogate without its pair: JSON may carry one, but no URL or UTF-8 text can. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Refuse text that cannot be put in a URL (a lone surrogate makes encodeURIComponent throw), in every
 * string, key and nested value of `v`; `where` names the parameter in the error.
 */
export function assertWellFormed(v: unknown, where: string): void {
  if (typeof v === 'string') {
    if (LONE_SURROGATE.test(v)) throw new ParamError(where, `${where}: not valid Unicode text (a lone UTF-16 surrogate)`);
  } else if (Array.isArray(v)) {
    for (const x of v) assertWellFormed(x, where);
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      assertWellFormed(k, where);
      assertWellFormed(x, where === 'body' || where === 'params' ? k : where);
    }
  }
}

/**
 * Bin widths, smallest first; beyond the last, whole days. Each is a whole number of the windows of the
 * level it reads (10 s data up to 30 s, 1 min rollups up to 5 min, 10 min up to 30 min, 1 h beyond), so
 * no bin holds part of a window (15 s and 15 min would be rounded up by pickResolution anyway).
 */
const NICE_BINS_MS = [10, 20, 30, 60, 120, 180, 300, 600, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

/** Plot pixels per time bin, at least: narrower cells are not told apart, and every bin costs query time. */
const PX_PER_BIN = 4;

export function chooseWindow(rangeMs: number, width: number, limits: Limits): number {
  const target = Math.max(10, Math.min(limits.maxBins - 1, Math.floor((width - 160) / PX_PER_BIN)));
  const want = Math.max(limits.minBinMs, rangeMs / target);
  for (const b of NICE_BINS_MS) if (b >= want && b >= limits.minBinMs) return b;
  return Math.ceil(want / 86_400_000) * 86_400_000;
}

type Raw = Record<string, unknown>;

function list(raw: Raw, name: string, limits: Limits): string[] {
  const v = raw[name];
  if (v === undefined) return [];
  const items = (Array.isArray(v) ? v : [v]).map((x) => {
    if (typeof x !== 'string') throw new ParamError(name, `${name}: expected text`);
    return x;
  });
  // A single value may be a comma-separated list (Grafana's ${var:csv}); repeated parameters are taken as
  // they are. Values are exact tag values, never patterns. `*` (or Grafana's $__all) means no filter.
  const values = items.length === 1 ? items[0].split(',') : items;
  const out = new Set<string>();
  for (const x of values) {
    if (x === '' || x === '*' || x === '$__all') continue;
    if (x.length > 256) throw new ParamError(name, `${name}: a value is longer than 256 characters`);
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(x)) throw new ParamError(name, `${name}: values cannot contain control characters (no tag value does: the agent writes them as \\n, \\r, \\t text)`);
    out.add(x);
  }
  if (values.includes('*') || values.includes('$__all')) return [];
  if (out.size > limits.maxListValues) throw new ParamError(name, `${name}: at most ${limits.maxListValues} values`);
  return [...out].sort();
}

function str(raw: Raw, name: string): string | undefined {
  const v = raw[name];
  if (v === undefined) return undefined;
  const s = Array.isArray(v) ? v.at(-1) : v;
  if (typeof s !== 'string' && typeof s !== 'number') throw new ParamError(name, `${name}: expected a single value`);
  return String(s);
}

function int(raw: Raw, name: string, dflt: number, min: number, max: number): number {
  const s = str(raw, name);
  if (s === undefined || s === '') return dflt;
  if (!/^\d{1,6}$/.test(s.trim())) throw new ParamError(name, `${name}: expected a whole number of pixels between ${min} and ${max}, got ${JSON.stringify(s.slice(0, 40))}`);
  const n = Number(s);
  if (n < min || n > max) throw new ParamError(name, `${name}: must be between ${min} and ${max}, got ${n}`);
  return n;
}

const ZONEINFO = '/usr/share/zoneinfo';

/** A time zone both Intl (labels here) and Python's zoneinfo (the axis) know; returns its canonical name. */
export function canonicalTimeZone(tz: string): string {
  if (tz === '' || tz === 'browser' || /^utc$/i.test(tz)) return 'UTC';
  if (!/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+){0,2}$/.test(tz) || tz.length > 64) {
    throw new ParamError('tz', `tz: expected an IANA time zone such as Europe/Berlin or UTC, got ${JSON.stringify(tz.slice(0, 64))}`);
  }
  let name: string;
  try {
    name = new Intl.DateTimeFormat('en', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    throw new ParamError('tz', `tz: unknown time zone ${JSON.stringify(tz)}`);
  }
  if (name === 'UTC' || name === 'Etc/UTC') return 'UTC';
  if (!fs.existsSync(path.join(ZONEINFO, name))) throw new ParamError('tz', `tz: time zone ${JSON.stringify(tz)} is not installed here (tzdata)`);
  return name;
}

function time(raw: Raw, name: 'from' | 'to', dflt: string, nowMs: number): number {
  const s = str(raw, name) ?? dflt;
  if (s.length > 64) throw new ParamError(name, `${name}: too long`);
  try {
    return parseTime(s, nowMs);
  } catch (e) {
    if (e instanceof DurationError) throw new ParamError(name, `${name}: ${e.message}`);
    throw e;
  }
}

export function parseRenderParams(kind: ChartKind, raw: Raw, limits: Limits, nowMs: number): RenderParams {
  const filters = {} as Record<HistQueryTag, string[]>;
  for (const tag of HIST_QUERY_TAGS) filters[tag] = list(raw, tag, limits);
  const metric = str(raw, 'metric') ?? 'connect';
  if (!(METRICS as readonly string[]).includes(metric)) throw new ParamError('metric', `metric: expected connect or tls, got ${JSON.stringify(metric.slice(0, 20))}`);
  if (kind === 'lifespan') {
    // tcp_session_hist has no result tag (only connections that were established have a lifespan).
    if (filters.result.length > 0) throw new ParamError('result', 'result: lifespan.png has no result filter (only established connections have a lifespan); leave it out');
    if (metric !== 'connect') throw new ParamError('metric', 'metric: lifespan.png draws connection lifespans; metric=tls is for heatmap.png and percentiles.png');
  }
  const fromMs = time(raw, 'from', 'now-1h', nowMs);
  const toMs = time(raw, 'to', 'now', nowMs);
  if (toMs <= fromMs) throw new ParamError('to', `to must be after from (got from=${new Date(fromMs).toISOString()}, to=${new Date(toMs).toISOString()})`);
  if (toMs - fromMs > limits.maxRangeMs) {
    throw new ParamError('from', `the time range is ${Math.round((toMs - fromMs) / 3_600_000)} h; at most ${Math.round(limits.maxRangeMs / 3_600_000)} h per chart`);
  }
  const width = int(raw, 'width', 1000, 200, limits.maxWidth);
  const height = int(raw, 'height', kind === 'heatmap' ? 400 : 500, 150, limits.maxHeight);
  const theme = str(raw, 'theme') ?? 'dark';
  if (theme !== 'dark' && theme !== 'light') throw new ParamError('theme', `theme: expected light or dark, got ${JSON.stringify(theme.slice(0, 20))}`);
  const tz = canonicalTimeZone(str(raw, 'tz') ?? 'UTC');
  // eslint-disable-next-line no-control-regex
  const title = (str(raw, 'title') ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim();
  if (title.length > 200) throw new ParamError('title', 'title: at most 200 characters');
  const overlays: Overlay[] = [];
  for (const o of list(raw, 'overlay', limits)) {
    if (o === 'none') continue;
    if (!(OVERLAYS as readonly string[]).includes(o)) throw new ParamError('overlay', `overlay: expected any of ${OVERLAYS.join(', ')} or none, got ${JSON.stringify(o.slice(0, 20))}`);
    overlays.push(o as Overlay);
  }
  const scale = str(raw, 'scale') ?? 'log';
  if (!(SCALES as readonly string[]).includes(scale)) throw new ParamError('scale', `scale: expected log or linear, got ${JSON.stringify(scale.slice(0, 20))}`);
  // The coarsest level that still gives one bin per PX_PER_BIN columns, and the bin rounded to its windows.
  const { level, windowMs } = pickResolution({ fromMs, toMs, intervalMs: chooseWindow(toMs - fromMs, width, limits), levels: limits.rollupLevels, baseMs: limits.minBinMs });
  const binFromMs = Math.floor(fromMs / windowMs) * windowMs;
  const binToMs = Math.ceil(toMs / windowMs) * windowMs;
  return { kind, metric: metric as Metric, filters, fromMs, toMs, windowMs, level, binFromMs, binToMs, width, height, theme, tz, title, overlays: OVERLAYS.filter((o) => overlays.includes(o)), scale: scale as Scale };
}

/**
 * The canonical query: every input that changes the picture, in a fixed order, with the range snapped to
 * whole bins (so `now-1h` asked twice within one bin is the same image). Cache key.
 */
export function canonicalKey(p: RenderParams): string {
  return JSON.stringify([p.kind, p.metric, p.filters.service, p.filters.dst, p.filters.host, p.filters.result, p.binFromMs, p.binToMs, p.windowMs, p.level, p.width, p.height, p.theme, p.tz, p.title, p.overlays, p.scale]);
}
