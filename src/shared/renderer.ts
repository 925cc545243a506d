/**
 * The tcplat renderer's HTTP API as the plugins use it, through the datasource's `renderer/...` routes
 * (`<datasource proxy URL>/renderer/...`): the route adds the bearer token, so it never reaches the browser.
 */
import type { BackendSrvRequest } from '@grafana/runtime';

export const RENDER_PATHS = { heatmap: '/render/heatmap.png', percentiles: '/render/percentiles.png', lifespan: '/render/lifespan.png' } as const;
export type RenderKind = keyof typeof RENDER_PATHS;
export const RENDER_KINDS = Object.keys(RENDER_PATHS) as RenderKind[];
/** What heatmap.png and percentiles.png draw: TCP connect latency or TLS handshake latency (renderer/src/params.ts METRICS). */
export const RENDER_METRICS = ['connect', 'tls'] as const;
export type RenderMetric = (typeof RENDER_METRICS)[number];
export const OVERLAYS = ['p50', 'p90', 'p99', 'max'] as const;
export type Overlay = (typeof OVERLAYS)[number];
export const COLOUR_SCALES = ['log', 'linear'] as const;
export type ColourScale = (typeof COLOUR_SCALES)[number];
/** Set by the renderer on the no-data image (a 200 PNG). */
export const NO_DATA_HEADER = 'x-tcplat-no-data';

export interface RenderParams {
  service?: string[];
  dst?: string[];
  host?: string[];
  result?: string[];
  overlay?: Overlay[];
  /** Epoch ms or Grafana-style `now-1h`. */
  from: string | number;
  to: string | number;
  width: number;
  height: number;
  theme: 'light' | 'dark';
  tz?: string;
  title?: string;
  /** Heatmap colour scale; absent: the renderer's default (log). */
  scale?: ColourScale;
  /** heatmap/percentiles only; absent: the renderer's default (connect). lifespan.png refuses it. */
  metric?: RenderMetric;
}

const LISTS = ['service', 'dst', 'host', 'result', 'overlay'] as const;

/** The query string of a render request: lists as repeated parameters, in a stable order. */
export function renderQuery(p: RenderParams): URLSearchParams {
  const q = new URLSearchParams();
  for (const k of LISTS) for (const v of p[k] ?? []) q.append(k, v);
  q.set('from', String(p.from));
  q.set('to', String(p.to));
  q.set('width', String(Math.round(p.width)));
  q.set('height', String(Math.round(p.height)));
  q.set('theme', p.theme);
  if (p.tz) q.set('tz', p.tz);
  if (p.title) q.set('title', p.title);
  if (p.scale) q.set('scale', p.scale);
  if (p.metric) q.set('metric', p.metric);
  return q;
}

/** `<proxy>/renderer/render/heatmap.png?...` */
export function renderUrl(datasourceUrl: string, kind: RenderKind, p: RenderParams): string {
  return `${datasourceUrl}/renderer${RENDER_PATHS[kind]}?${renderQuery(p).toString()}`;
}

/** The body of POST /links for the same chart; `path` + `params` so the renderer signs what it will render. */
export function linkRequest(datasourceUrl: string, kind: RenderKind, p: RenderParams, ttl?: string): BackendSrvRequest {
  const params: Record<string, string | string[]> = {};
  for (const [k, v] of renderQuery(p)) {
    const prev = params[k];
    params[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  for (const k of LISTS) if (Array.isArray(p[k]) && p[k]!.length > 0) params[k] = [...p[k]!];
  return {
    url: `${datasourceUrl}/renderer/links`,
    method: 'POST',
    data: { path: RENDER_PATHS[kind], params, ...(ttl ? { ttl } : {}) },
    headers: { 'Content-Type': 'application/json' },
  };
}

export interface MintedLink {
  url: string;
  expires: string;
}
