/**
 * From the panel's options and the dashboard's state (time range, variables, theme, size, pixel ratio) to
 * the renderer request, as a pure function the panel and its tests share.
 */
import type { InterpolateFunction, TimeRange } from '@grafana/data';
import { expandValues } from '../shared/variables';
import { RENDER_KINDS, RENDER_METRICS, type RenderKind, type RenderMetric, type RenderParams } from '../shared/renderer';
import { IMAGE_LIMITS, type PanelOptions } from './types';

export interface RenderContext {
  width: number;
  height: number;
  devicePixelRatio: number;
  timeRange: TimeRange;
  timeZone: string;
  isDark: boolean;
  replaceVariables: InterpolateFunction;
}

/** Grafana's time zone setting as the renderer's `tz`: `browser` becomes the browser's own zone. */
export function rendererTimeZone(tz: string | undefined): string {
  if (!tz || tz === 'browser') {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    } catch {
      return 'UTC';
    }
  }
  return /^utc$/i.test(tz) ? 'UTC' : tz;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, Math.round(v)));
}

/** A whole value that is still a variable reference after expansion: the dashboard has no such variable. */
const UNRESOLVED = /^\$(\w+|\{[^}]*\})$/;

/**
 * Comma-separated option text with variables expanded (`$service` with several values gives several). A
 * variable the dashboard does not define filters nothing, so the panel shows data on any dashboard (a
 * panel copied from one with `$service` to one without) instead of asking for the literal text `$service`.
 */
export function optionValues(text: string, replace: InterpolateFunction): string[] {
  const raw = (text ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return expandValues(raw, (t, format) => replace(t, undefined, format)).filter((v) => !UNRESOLVED.test(v));
}

/** Image size in device pixels: the panel's CSS size times the pixel ratio, inside the renderer's limits. */
export function imageSize(width: number, height: number, dpr: number): { width: number; height: number } {
  const r = Number.isFinite(dpr) && dpr > 0 ? Math.min(dpr, 3) : 1;
  return { width: clamp(width * r, IMAGE_LIMITS.minWidth, IMAGE_LIMITS.maxWidth), height: clamp(height * r, IMAGE_LIMITS.minHeight, IMAGE_LIMITS.maxHeight) };
}

/**
 * What the options ask to draw. A panel saved before `metric` existed has none: connect latency, as then.
 * A value the panel does not know (a hand-edited or newer dashboard) is an error the panel shows, rather
 * than a request to a path the renderer does not have.
 */
export function chartOf(options: Pick<PanelOptions, 'chart' | 'metric'>): { kind: RenderKind; metric: RenderMetric } {
  const kind = options.chart ?? 'heatmap';
  if (!RENDER_KINDS.includes(kind)) throw new Error(`Unknown chart ${JSON.stringify(String(kind)).slice(0, 40)} in the panel options: pick ${RENDER_KINDS.join(', ')}.`);
  const metric = options.metric ?? 'connect';
  if (!(RENDER_METRICS as readonly string[]).includes(metric)) throw new Error(`Unknown metric ${JSON.stringify(String(metric)).slice(0, 40)} in the panel options: pick ${RENDER_METRICS.join(' or ')}.`);
  // Lifespans are of TCP connections: the metric is not asked (the renderer refuses metric on lifespan.png).
  return { kind, metric: kind === 'lifespan' ? 'connect' : metric };
}

/** The chart in words, for the image's alt text and the panel's messages. */
export function chartName(options: Pick<PanelOptions, 'chart' | 'metric'>): string {
  const { kind, metric } = chartOf(options);
  if (kind === 'lifespan') return 'connection lifespans';
  return `${metric === 'tls' ? 'TLS handshake' : 'connect'} latency ${kind}`;
}

/**
 * The image request. `relative`: keep Grafana's relative range (`now-6h`) as text, for links that follow
 * the clock (alerts); otherwise the dashboard's resolved range in epoch ms (what the panel shows now).
 */
export function renderParams(options: PanelOptions, ctx: RenderContext, relative = false): RenderParams {
  const size = imageSize(ctx.width, ctx.height, ctx.devicePixelRatio);
  const raw = ctx.timeRange.raw;
  const rel = (v: unknown) => typeof v === 'string' && /^now/.test(v);
  const from = relative && rel(raw.from) ? String(raw.from) : ctx.timeRange.from.valueOf();
  const to = relative && rel(raw.to) ? String(raw.to) : ctx.timeRange.to.valueOf();
  const title = options.title ? ctx.replaceVariables(options.title) : '';
  const { kind, metric } = chartOf(options);
  return {
    service: optionValues(options.service, ctx.replaceVariables),
    dst: optionValues(options.dst, ctx.replaceVariables),
    host: optionValues(options.host, ctx.replaceVariables),
    // Sessions have no result tag: a filter kept from a connect chart is dropped, not sent to a 400.
    result: kind === 'lifespan' ? [] : optionValues(options.result, ctx.replaceVariables),
    // The lifespan chart always draws its p50/p99 lines; `overlay` is the latency heatmap's.
    overlay: kind === 'heatmap' ? [...(options.overlays ?? [])] : [],
    ...(kind !== 'percentiles' && options.colourScale === 'linear' ? { scale: 'linear' as const } : {}),
    // Only when not the default: connect charts keep the URLs (and renderer cache keys) they had.
    ...(metric === 'tls' ? { metric } : {}),
    from,
    to,
    width: size.width,
    height: size.height,
    theme: ctx.isDark ? 'dark' : 'light',
    tz: rendererTimeZone(ctx.timeZone),
    ...(title ? { title } : {}),
  };
}
