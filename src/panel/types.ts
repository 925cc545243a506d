/** The heatmap panel's options and their defaults. */
import type { DataSourceRef } from '@grafana/schema';
import type { ColourScale, Overlay, RenderKind, RenderMetric } from '../shared/renderer';

export const PANEL_ID = 'tcplat-heatmap-panel';

export interface PanelOptions {
  /** A tcplat datasource (its renderer route draws the image); absent: the first tcplat datasource. */
  datasource?: DataSourceRef | null;
  /**
   * heatmap and percentiles: latency over time; lifespan: how long connections lived (tcp_session_hist,
   * recorded by agents run with --probe-close), new connections/s below it.
   */
  chart: RenderKind;
  /** heatmap and percentiles: TCP connect (tcp_connect_hist) or TLS handshake (tls_handshake_hist) latency; unused by lifespan. */
  metric: RenderMetric;
  /**
   * Comma-separated exact values; template variables allowed ($service). Empty: all. A variable the
   * dashboard does not have filters nothing (see optionValues).
   */
  service: string;
  dst: string;
  host: string;
  /** Unused by lifespan (only established connections have a lifespan: the renderer refuses a result filter). */
  result: string;
  /** Quantile lines drawn over the heatmap. */
  overlays: Overlay[];
  /** Heatmap cell colours: log (default) or linear in connects per cell. */
  colourScale: ColourScale;
  /** Chart title inside the image; empty: none. */
  title: string;
  /** Lifetime of links minted for alerts, e.g. 7d. */
  linkTtl: string;
}

export const DEFAULT_PANEL_OPTIONS: PanelOptions = {
  datasource: null,
  chart: 'heatmap',
  // Panels saved before the option existed read connect latency, as they did.
  metric: 'connect',
  // Empty: every service. A `$service` default showed "No data" on dashboards without that variable.
  service: '',
  dst: '',
  host: '',
  result: '',
  overlays: ['p50', 'p99'],
  colourScale: 'log',
  title: '',
  linkTtl: '7d',
};

/** Pixel limits of the renderer (its defaults): requests are clamped inside them. */
export const IMAGE_LIMITS = { minWidth: 200, maxWidth: 4000, minHeight: 150, maxHeight: 3000 };
