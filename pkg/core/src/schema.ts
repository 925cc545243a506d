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

export const FAMILIES = ['ipv4', 'ipv6'] as const;
export type Family = (typeof FAMILIES)[number];
