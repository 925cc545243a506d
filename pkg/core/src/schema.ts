/**
 * The InfluxDB schema: the one place where measurement, tag and field names are spelled.
 * Every component (agent, renderer, datasource, provisioning checks) imports these names.
 */

export const MEASUREMENT = {
  /** One point per connection attempt (raw events, possibly sampled). */
  connect: 'tcp_connect',
  /** Exact pre-aggregated histograms per flush window. */
  connectHist: 'tcp_connect_hist',
  /** Sessions from BCC/libbpf-tools tcplife: lifespan, never connect latency. */
  session: 'tcp_session',
  /** One point per client TLS handshake through OpenSSL (the probe's tls lines; issue 16). */
  tls: 'tls_handshake',
  /** Exact TLS handshake latency histograms per flush window, in the connect buckets (issue 16). */
  tlsHist: 'tls_handshake_hist',
} as const;

/** Tag keys. Bounded cardinality only: never pid, source port or client addresses. */
export const TAG = {
  host: 'host',
  service: 'service',
  comm: 'comm',
  dst: 'dst',
  result: 'result',
  family: 'family',
} as const;

export type TagKey = (typeof TAG)[keyof typeof TAG];

/** Tags written on tcp_connect points. */
export const CONNECT_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.comm, TAG.dst, TAG.result, TAG.family];
/** Tags written on tcp_connect_hist points. */
export const HIST_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.dst, TAG.result];
/** Tags written on tcp_session points. */
export const SESSION_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.comm, TAG.dst, TAG.family];

export const CONNECT_FIELD = {
  latencyMs: 'latency_ms',
  synRetrans: 'syn_retrans',
  pid: 'pid',
  sport: 'sport',
  container: 'container',
  /** The connecting thread's name (probe v2): a field, never a tag (pools name workers without bound). */
  thread: 'thread',
  /** errno of a failed attempt (0 when ok). */
  errno: 'errno',
  /** How many events this point stands for when raw points were sampled (1 when not sampled). */
  sampleWeight: 'sample_weight',
} as const;

export const HIST_FIELD = {
  count: 'count',
  sumMs: 'sum_ms',
  minMs: 'min_ms',
  maxMs: 'max_ms',
  /** SYN retransmissions summed over the window: explains the 1 s / 3 s / 7 s steps. */
  synRetrans: 'syn_retrans',
} as const;

export const SESSION_FIELD = {
  lifespanMs: 'lifespan_ms',
  txKb: 'tx_kb',
  rxKb: 'rx_kb',
  pid: 'pid',
  sport: 'sport',
} as const;

/** Outcomes of a connection attempt, as the probe classifies them. */
export const RESULTS = ['ok', 'refused', 'timeout', 'unreachable', 'aborted', 'error'] as const;
export type ConnectResult = (typeof RESULTS)[number];
/** Every result but `ok` counts as a failure in error rates. */
export const FAILURE_RESULTS: readonly ConnectResult[] = RESULTS.filter((r) => r !== 'ok');

/** Outcomes of a TLS handshake (the probe's tls lines): the final return of the handshake was 1, or not. */
export const TLS_RESULTS = ['ok', 'failed'] as const;
export type TlsResult = (typeof TLS_RESULTS)[number];

export const FAMILIES = ['ipv4', 'ipv6'] as const;
export type Family = (typeof FAMILIES)[number];

/**
 * Rollups (issue 14): exact sums of a histogram measurement (`tcp_connect_hist`, later `tcp_session_hist`
 * and `tls_handshake_hist`) over coarser windows, for long ranges and fleets. A rollup has the same tags
 * and fields as its source; it holds ONE point per series per window, stamped at the window's start, so
 * writing it again overwrites it (idempotent). Its measurement is `<source>_<window>` (for example
 * `tcp_connect_hist_1h`). Each window is a whole multiple of the previous one and of the agent's 10 s
 * flush window, all aligned to the Unix epoch, so a coarser rollup is the sum of the finer one.
 * Where they live: InfluxDB 1.x, the retention policy ROLLUP_RP in the same database; 2.x, the bucket
 * named `<bucket>` + ROLLUP_BUCKET_SUFFIX (both configurable where a target is configured).
 */
export const ROLLUP_WINDOWS = [
  { name: '1m', ms: 60_000 },
  { name: '10m', ms: 600_000 },
  { name: '1h', ms: 3_600_000 },
] as const;
export type RollupWindowName = (typeof ROLLUP_WINDOWS)[number]['name'];

/** The measurement holding the `window` rollup of histogram measurement `source`. */
export function rollupMeasurement(source: string, window: RollupWindowName): string {
  return `${source}_${window}`;
}

/** Default InfluxDB 1.x retention policy of the rollups (in the database of the 10 s data). */
export const ROLLUP_RP = 'tcplat_rollups';
/** Default InfluxDB 2.x rollup bucket: the 10 s data's bucket name plus this suffix. */
export const ROLLUP_BUCKET_SUFFIX = '_rollups';
