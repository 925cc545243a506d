/**
 * From the panel's options and the dashboard's state (time range, variables, theme, size, pixel ratio) to
 * the renderer request, as a pure function the panel and its tests share.
 */
import type { InterpolateFunction, TimeRange } from '@grafana/data';
import { expandValues } from '../shared/variables';
import type { RenderParams } from '../shared/renderer';
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
  return {
    service: optionValues(options.service, ctx.replaceVariables),
    dst: optionValues(options.dst, ctx.replaceVariables),
    host: optionValues(options.host, ctx.replaceVariables),
    result: optionValues(options.result, ctx.replaceVariables),
    overlay: options.chart === 'heatmap' ? [...(options.overlays ?? [])] : [],
    ...(options.chart === 'heatmap' && options.colourScale === 'linear' ? { scale: 'linear' as const } : {}),
    from,
    to,
    width: size.width,
    height: size.height,
    theme: ctx.isDark ? 'dark' : 'light',
    tz: rendererTimeZone(ctx.timeZone),
    ...(title ? { title } : {}),
  };
}
