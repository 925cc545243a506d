/**
 * The datasource's saved shapes: datasource settings (jsonData + secureJsonData) and queries, with their
 * defaults. Saved queries change shape only through migrate.ts.
 */
import type { DataQuery, DataSourceJsonData } from '@grafana/data';
import { HIST_QUERY_TAGS, type HistQueryTag } from '@tcplat/core';

export const PLUGIN_ID = 'tcplat-connect-datasource';

/** flux: InfluxDB 2.x (org + bucket + token); influxql: InfluxDB 1.x (database + retention policy + user/password). */
export type Dialect = 'flux' | 'influxql';

export interface TcplatOptions extends DataSourceJsonData {
  influxUrl?: string;
  dialect?: Dialect;
  /** 2.x */
  org?: string;
  bucket?: string;
  /** 1.x */
  database?: string;
  retentionPolicy?: string;
  influxUser?: string;
  /** The tcplat renderer (heatmap images, signed links). */
  rendererUrl?: string;
  /** Read rollups for long ranges (default true); false reads only the 10 s data. */
  rollups?: boolean;
  /**
   * Read the fleet rollups (made by `tcplat rollup`, summed over hosts) for queries over every host
   * (default true; needs `rollups`); false reads one series per host.
   */
  fleetRollups?: boolean;
  /** 1.x: retention policy of the rollups, in `database` (default ROLLUP_RP of pkg/core). */
  rollupRetentionPolicy?: string;
  /** 2.x: bucket of the rollups (default `<bucket>` + ROLLUP_BUCKET_SUFFIX of pkg/core). */
  rollupBucket?: string;
}

/** Never sent to the browser: Grafana injects them through the routes of plugin.json. */
export interface TcplatSecureOptions {
  influxToken?: string;
  influxPassword?: string;
  rendererToken?: string;
}

export const DEFAULT_OPTIONS: Required<Pick<TcplatOptions, 'dialect' | 'retentionPolicy'>> = { dialect: 'flux', retentionPolicy: '' };

/**
 * What a query shows. Connect latency (tcp_connect_hist): quantiles and max/mean in ms, `rate` in
 * connects/s, `errorRate` 0..1, `buckets` for Grafana's heatmap. Churn (issue 15; tcp_connect_hist and
 * tcp_session_hist, which the agent writes only with --probe-close): `newConnRate` (successful connects/s),
 * `openMean` (connections open at once, mean over each bin), `lifespanP50`/`lifespanP99` (ms),
 * `shortShare` (0..1, lived under 1 s). TLS (issue 16; tls_handshake_hist): `tlsP50`/`tlsP99` (ms),
 * `tlsFailureRate` (0..1), `tlsRate` (handshakes/s). Formulas: pkg/core churn.ts.
 */
export const METRICS = [
  'p50',
  'p90',
  'p99',
  'max',
  'mean',
  'rate',
  'errorRate',
  'buckets',
  'newConnRate',
  'openMean',
  'lifespanP50',
  'lifespanP99',
  'shortShare',
  'tlsP50',
  'tlsP99',
  'tlsFailureRate',
  'tlsRate',
] as const;
export type Metric = (typeof METRICS)[number];

export const METRIC_LABELS: Record<Metric, string> = {
  p50: 'p50 latency',
  p90: 'p90 latency',
  p99: 'p99 latency',
  max: 'max latency',
  mean: 'mean latency',
  rate: 'connects/s',
  errorRate: 'error rate',
  buckets: 'histogram buckets (heatmap)',
  newConnRate: 'churn: new connections/s',
  openMean: 'churn: concurrently open (mean)',
  lifespanP50: 'churn: lifespan p50',
  lifespanP99: 'churn: lifespan p99',
  shortShare: 'churn: short-lived share (< 1 s)',
  tlsP50: 'TLS handshake p50',
  tlsP99: 'TLS handshake p99',
  tlsFailureRate: 'TLS failure rate',
  tlsRate: 'TLS handshakes/s',
};

const CHURN_NOTE = 'Needs the agent run with --probe-close.';

/** One line per metric for the query editor: what it is, where it comes from. */
export const METRIC_DESCRIPTIONS: Record<Metric, string> = {
  p50: 'Median TCP connect latency (ms), from the exact histograms.',
  p90: '90th percentile TCP connect latency (ms).',
  p99: '99th percentile TCP connect latency (ms).',
  max: 'Slowest TCP connect (ms).',
  mean: 'Mean TCP connect latency (ms).',
  rate: 'Connection attempts per second, every result.',
  errorRate: 'Share of attempts that failed (refused, timeout, unreachable, aborted, error).',
  buckets: "Connect latency histogram buckets for Grafana's heatmap panel.",
  newConnRate: 'Successful connects per second: near the request rate when a pool does not reuse connections.',
  openMean: `Connections open at once, mean over each interval (Little's law: summed lifespans / interval; exact when the interval is long against the lifespans). ${CHURN_NOTE}`,
  lifespanP50: `Median lifespan (ms) of the connections that closed in each interval. ${CHURN_NOTE}`,
  lifespanP99: `99th percentile lifespan (ms) of the connections that closed in each interval. ${CHURN_NOTE}`,
  shortShare: `Share of the connections closed in each interval that lived under 1 s: high means churn. ${CHURN_NOTE}`,
  tlsP50: 'Median TLS handshake latency (ms) of OpenSSL clients (shared libssl, node), after the TCP connect.',
  tlsP99: '99th percentile TLS handshake latency (ms).',
  tlsFailureRate: 'Share of TLS handshakes that failed (untrusted certificate, handshake error).',
  tlsRate: 'TLS handshakes per second, ok and failed.',
};

/** The tags a query filters and groups by: the schema's, in its order (service, dst, host, result). */
export const FILTER_TAGS: readonly HistQueryTag[] = HIST_QUERY_TAGS;

export interface TcplatQuery extends DataQuery {
  /** Saved-shape version, see migrate.ts. */
  version?: number;
  /** Exact tag values or template variables ($service); empty: every value. */
  service?: string[];
  dst?: string[];
  host?: string[];
  result?: string[];
  metric: Metric;
  groupBy?: HistQueryTag[];
}

export const QUERY_VERSION = 1;

export const DEFAULT_QUERY: Partial<TcplatQuery> = {
  version: QUERY_VERSION,
  metric: 'p99',
  groupBy: ['service'],
};

/** Variable queries: list services, destinations or hosts, optionally of some services (variables allowed). */
export type VariableKind = 'services' | 'destinations' | 'hosts';
export const VARIABLE_TAG: Record<VariableKind, HistQueryTag> = { services: 'service', destinations: 'dst', hosts: 'host' };

export interface TcplatVariableQuery extends DataQuery {
  kind: VariableKind;
  service?: string;
}
