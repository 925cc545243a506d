/**
 * The InfluxDB schema: the one place where measurement, tag and field names are spelled.
 * Every component (agent, renderer, datasource, provisioning checks) imports these names.
 */

export const MEASUREMENT = {
  /** One point per connection attempt (raw events, possibly sampled). */
  connect: 'tcp_connect',
  /** Exact pre-aggregated histograms per flush window. */
  connectHist: 'tcp_connect_hist',
  /**
   * One point per finished outbound connection: from the probe's close events (stamped at the SYN, the
   * same ts_ns as its tcp_connect point: the join key) or from BCC/libbpf-tools tcplife rows (stamped at
   * their end). Lifespan, never connect latency.
   */
  session: 'tcp_session',
  /**
   * Exact lifespan histograms of the probe's close events per flush window (by close time) per host,
   * service, dst: SESSION_BUCKET_FIELDS (buckets.ts, 1 ms to a day) plus SESSION_HIST_FIELD. Like
   * tcp_connect_hist, a window's histogram is the SUM of its points (deltas).
   */
  sessionHist: 'tcp_session_hist',
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
  /** tcp_session from the probe: who ended the connection (CLOSED_BY). */
  closedBy: 'closed_by',
} as const;

export type TagKey = (typeof TAG)[keyof typeof TAG];

/** Tags written on tcp_connect points. */
export const CONNECT_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.comm, TAG.dst, TAG.result, TAG.family];
/** Tags written on tcp_connect_hist points. */
export const HIST_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.dst, TAG.result];
/** Tags written on tls_handshake points (family absent when the probe did not see the handshake's socket). */
export const TLS_TAGS: readonly TagKey[] = CONNECT_TAGS;
/** Tags written on tls_handshake_hist points: those of tcp_connect_hist (the same schema, another name). */
export const TLS_HIST_TAGS: readonly TagKey[] = HIST_TAGS;
/** Tags written on tcp_session points (closed_by: probe close events only; tcplife does not say). */
export const SESSION_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.comm, TAG.dst, TAG.family, TAG.closedBy];
/** Tags written on tcp_session_hist points. */
export const SESSION_HIST_TAGS: readonly TagKey[] = [TAG.host, TAG.service, TAG.dst];

/** Who ended a connection, as the probe tells it (bpf/README.md). */
export const CLOSED_BY = ['local', 'peer', 'reset_in', 'reset_out'] as const;
export type ClosedBy = (typeof CLOSED_BY)[number];

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

/** Fields of tls_handshake points (one per handshake). */
export const TLS_FIELD = {
  /** From the first handshake call on the SSL* to its final return, ms (float). */
  latencyMs: 'latency_ms',
  pid: 'pid',
  thread: 'thread',
  container: 'container',
  /** The TLS library the probe hooked (`openssl`). */
  lib: 'lib',
  /** How many handshakes this point stands for when raw points were sampled (1 when not sampled). */
  sampleWeight: 'sample_weight',
} as const;

/**
 * Fields of tcp_connect_hist, and of tls_handshake_hist (the same fields and connect buckets, so every reader
 * of one reads the other with only the measurement changed; syn_retrans is always 0 there).
 */
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
  /** tcplife rows: KB as the tool prints them. */
  txKb: 'tx_kb',
  rxKb: 'rx_kb',
  pid: 'pid',
  sport: 'sport',
  /** Probe close events: payload bytes the peer acknowledged / this end received (int). */
  bytesSent: 'bytes_sent',
  bytesReceived: 'bytes_received',
  /** Probe close events: segments retransmitted over the connection's life, SYNs included (int). */
  retrans: 'retrans',
  /** Probe close events: smoothed RTT at close, ms (float). */
  srttMs: 'srtt_ms',
  /** Probe close events with --zero-windows: times the peer's window went to zero (int). */
  zeroWindows: 'zero_windows',
  thread: 'thread',
  container: 'container',
  /** How many close events this point stands for when raw points were sampled (1 when not sampled). */
  sampleWeight: 'sample_weight',
} as const;

/** Fields of tcp_session_hist besides the bucket fields (SESSION_BUCKET_FIELDS). */
export const SESSION_HIST_FIELD = {
  count: 'count',
  sumMs: 'sum_ms',
  minMs: 'min_ms',
  maxMs: 'max_ms',
  /** Segments retransmitted, summed over the window's connections. */
  retrans: 'retrans',
  /** Connections of the window that the peer reset / this end reset. */
  resetsIn: 'resets_in',
  resetsOut: 'resets_out',
  /** Zero-window episodes summed (only when the probe counted them: --zero-windows). */
  zeroWindows: 'zero_windows',
} as const;

/** Outcomes of a connection attempt, as the probe classifies them. */
export const RESULTS = ['ok', 'refused', 'timeout', 'unreachable', 'aborted', 'error'] as const;
export type ConnectResult = (typeof RESULTS)[number];
/** Every result but `ok` counts as a failure in error rates. */
export const FAILURE_RESULTS: readonly ConnectResult[] = RESULTS.filter((r) => r !== 'ok');

/** Outcomes of a TLS handshake (the probe's tls lines): the final return of the handshake was 1, or not. */
export const TLS_RESULTS = ['ok', 'failed'] as const;
export type TlsResult = (typeof TLS_RESULTS)[number];

/**
 * The dst of a TLS handshake whose socket the probe did not see (its line has family ""): the handshake
 * still counts, under this destination, with no family tag.
 */
export const TLS_DST_UNSEEN = 'unknown';

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
 * Who makes them: agent/src/rollup (the agent live, for its own host, and `tcplat rollup` for history).
 * These rollups keep the host tag: an agent cannot write a host-less one (agents would overwrite each
 * other's sums at the same series and time); the fleet rollups below are made centrally instead. Every
 * field of the source is written in every point (zeros included), with the source's types (counts integer).
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

/**
 * Fleet rollups (issue 14): the per-host rollup of a window summed over every host, without the host tag
 * (tags service, dst, result), so a fleet-wide chart reads one series per (service, dst, result) instead
 * of one per host. Made centrally by `tcplat rollup` (backfill, and `--follow` to keep them current,
 * re-summing the recent windows from the per-host rollups so late events end up in them), never by an
 * agent. Same store (RP/bucket), stamping and fields as the per-host rollups; one point per series per
 * window, so writing it again overwrites it.
 */
export const FLEET_ROLLUP_WINDOWS: readonly RollupWindowName[] = ['10m', '1h'];

/** The tags a fleet rollup keeps (every histogram tag but host). */
export const FLEET_TAGS: readonly TagKey[] = [TAG.service, TAG.dst, TAG.result];

/** The measurement holding the fleet-wide (host-less) `window` rollup of histogram measurement `source`. */
export function fleetRollupMeasurement(source: string, window: RollupWindowName): string {
  return `${source}_fleet_${window}`;
}

/**
 * A fleet rollup window is read once it ended this long ago: the per-host rollups are up to ROLLUP_LAG_MS
 * (query.ts, 2 min) behind, and `tcplat rollup --follow` re-sums the recent windows every 2 min by default,
 * so by then the fleet window has been re-summed from complete per-host ones. Newer windows are read from
 * the per-host levels.
 */
export const FLEET_LAG_MS = 10 * 60_000;
