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

/** What a query shows. Latencies in ms; `rate` in connects/s; `errorRate` 0..1; `buckets` for Grafana's heatmap. */
export const METRICS = ['p50', 'p90', 'p99', 'max', 'mean', 'rate', 'errorRate', 'buckets'] as const;
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
