/**
 * Points of the tcplat schema, built from typed values: the agent writes them, tests and benchmarks use
 * them to seed InfluxDB exactly as the agent would.
 */
import { BUCKET_FIELDS, SESSION_BUCKET_FIELDS } from './buckets';
import type { Histogram } from './histogram';
import { checkedInt, escapeMeasurement, MAX_TAG_BYTES, escapeStringField, escapeTag, floatText, int, IntValue, nsAsMsText, timeText, type Fields, type FieldValue, type Point } from './lineprotocol';
import { CONNECT_FIELD, HIST_FIELD, MEASUREMENT, ROLLUP_WINDOWS, rollupMeasurement, SESSION_FIELD, SESSION_HIST_FIELD, TAG, TLS_FIELD, type ClosedBy, type ConnectResult, type Family, type RollupWindowName, type TlsResult } from './schema';

/** Tags of one histogram series: tcp_connect_hist (connect results) or tls_handshake_hist (TLS results). */
export interface SeriesTags<R extends string = ConnectResult> {
  host: string;
  service: string;
  dst: string;
  result: R;
}

export interface ConnectPointInput extends SeriesTags {
  comm: string;
  family: Family;
  latencyMs: number;
  synRetrans: number;
  pid: number;
  sport: number;
  errno?: number;
  container?: string;
  thread?: string;
  /** Events this point stands for when sampled; omitted when 1. */
  sampleWeight?: number;
  timeNs: bigint;
}

export function connectPoint(e: ConnectPointInput): Point {
  const fields: Fields = {
    [CONNECT_FIELD.latencyMs]: e.latencyMs,
    [CONNECT_FIELD.synRetrans]: int(e.synRetrans),
    [CONNECT_FIELD.pid]: int(e.pid),
    [CONNECT_FIELD.sport]: int(e.sport),
  };
  if (e.errno) fields[CONNECT_FIELD.errno] = int(e.errno);
  if (e.container) fields[CONNECT_FIELD.container] = e.container;
  if (e.thread) fields[CONNECT_FIELD.thread] = e.thread;
  if (e.sampleWeight !== undefined && e.sampleWeight !== 1) fields[CONNECT_FIELD.sampleWeight] = e.sampleWeight;
  return {
    measurement: MEASUREMENT.connect,
    // Sorted by key, as line protocol wants them (saves the encoder a sort per point).
    tags: { [TAG.comm]: e.comm, [TAG.dst]: e.dst, [TAG.family]: e.family, [TAG.host]: e.host, [TAG.result]: e.result, [TAG.service]: e.service },
    fields,
    timeNs: e.timeNs,
  };
}

const CONNECT_MEASUREMENT = escapeMeasurement(MEASUREMENT.connect);

/** A tag `,key=value` (keys are the schema's plain names), nothing when the value is empty. */
function tagText(key: string, value: string): string {
  return value === '' ? '' : ',' + key + '=' + escapeTag(value);
}

type Level = Map<string, unknown>;

/**
 * The measurement and tags of tcp_connect lines, remembered per (host, service, dst, result, comm, family):
 * a handful of combinations carry millions of points. Nested maps of the values themselves, so a hit
 * builds no key and allocates nothing. Bounded: cleared when full.
 */
class ConnectHeads {
  private root: Level = new Map();
  private size = 0;
  private static readonly MAX = 20_000;

  private static child(m: Level, k: string): Level {
    let c = m.get(k) as Level | undefined;
    if (c === undefined) {
      c = new Map();
      m.set(k, c);
    }
    return c;
  }

  private static build(e: ConnectLineInput): string {
    return [
      CONNECT_MEASUREMENT,
      tagText(TAG.comm, e.comm),
      tagText(TAG.dst, e.dst),
      tagText(TAG.family, e.family),
      tagText(TAG.host, e.host),
      tagText(TAG.result, e.result),
      tagText(TAG.service, e.service),
    ].join('');
  }

  get(e: ConnectLineInput): string {
    // Values beyond the tag cap are rare and may be huge: built each time, never kept.
    if (e.comm.length > MAX_TAG_BYTES || e.service.length > MAX_TAG_BYTES || e.dst.length > MAX_TAG_BYTES || e.host.length > MAX_TAG_BYTES) return ConnectHeads.build(e);
    const child = ConnectHeads.child;
    const last = child(child(child(child(child(this.root, e.host), e.service), e.dst), e.result), e.comm);
    let head = last.get(e.family) as string | undefined;
    if (head === undefined) {
      head = ConnectHeads.build(e);
      if (this.size >= ConnectHeads.MAX) {
        this.root = new Map();
        this.size = 0;
      } else {
        last.set(e.family, head);
        this.size++;
      }
    }
    return head;
  }
}

const HEADS = new ConnectHeads();

// The constant pieces between a raw line's values.
const F_LATENCY = ` ${CONNECT_FIELD.latencyMs}=`;
const F_SYN = `,${CONNECT_FIELD.synRetrans}=`;
const F_PID = `i,${CONNECT_FIELD.pid}=`;
const F_SPORT = `i,${CONNECT_FIELD.sport}=`;

export type ConnectLineInput = Omit<ConnectPointInput, 'latencyMs' | 'timeNs'> & {
  /** The latency in whole ns, as the probe reports it. */
  latencyNs: number;
  /** Integer ns, as a bigint or decimal string. */
  timeNs: bigint | string;
};

/**
 * The line of `connectPoint()` with latencyMs = latencyNs / 1e6, written directly: the same text as
 * `encodePoint(connectPoint(...))` (a test holds them equal on hostile values), without building the
 * point. The agent writes one per raw event, so this is its hot path: the tags come from a cache, and
 * one template builds the rest.
 */
export function connectLine(e: ConnectLineInput): string {
  const latency = nsAsMsText(CONNECT_FIELD.latencyMs, e.latencyNs);
  const syn = checkedInt(CONNECT_FIELD.synRetrans, e.synRetrans);
  const pid = checkedInt(CONNECT_FIELD.pid, e.pid);
  const sport = checkedInt(CONNECT_FIELD.sport, e.sport);
  let more = '';
  if (e.errno) more += `,${CONNECT_FIELD.errno}=${checkedInt(CONNECT_FIELD.errno, e.errno)}i`;
  if (e.container) more += `,${CONNECT_FIELD.container}=${escapeStringField(e.container)}`;
  if (e.thread) more += `,${CONNECT_FIELD.thread}=${escapeStringField(e.thread)}`;
  if (e.sampleWeight !== undefined && e.sampleWeight !== 1) more += `,${CONNECT_FIELD.sampleWeight}=${floatText(CONNECT_FIELD.sampleWeight, e.sampleWeight)}`;
  const time = timeText(e.timeNs);
  return `${HEADS.get(e)}${F_LATENCY}${latency}${F_SYN}${syn}${F_PID}${pid}${F_SPORT}${sport}i${more} ${time}`;
}

/** The histogram measurements in the connect buckets: tcp_connect_hist, and tls_handshake_hist (same schema). */
export type ConnectLikeHistMeasurement = typeof MEASUREMENT.connectHist | typeof MEASUREMENT.tlsHist;

/**
 * One tcp_connect_hist point (or, with `measurement`, tls_handshake_hist: the same tags and fields): the
 * exact histogram of one series over one window, stamped with the window's start. Every bucket field is
 * written (zeros included) so a window's point is complete on its own.
 */
export function histPoint(
  tags: SeriesTags<ConnectResult | TlsResult>,
  h: Histogram,
  windowStartNs: bigint,
  synRetrans = 0,
  measurement: ConnectLikeHistMeasurement = MEASUREMENT.connectHist,
): Point {
  const fields: Fields = {
    [HIST_FIELD.count]: int(h.count),
    [HIST_FIELD.sumMs]: h.sumMs,
    [HIST_FIELD.minMs]: h.count > 0 ? h.minMs : 0,
    [HIST_FIELD.maxMs]: h.count > 0 ? h.maxMs : 0,
    [HIST_FIELD.synRetrans]: int(synRetrans),
  };
  for (let i = 0; i < BUCKET_FIELDS.length; i++) fields[BUCKET_FIELDS[i]] = int(h.buckets[i]);
  return {
    measurement,
    tags: { [TAG.dst]: tags.dst, [TAG.host]: tags.host, [TAG.result]: tags.result, [TAG.service]: tags.service },
    fields,
    timeNs: windowStartNs,
  };
}

export interface TlsPointInput extends SeriesTags<TlsResult> {
  comm: string;
  /** '' when the probe did not see the handshake's socket: the point then has no family tag. */
  family: Family | '';
  latencyNs: number;
  pid: number;
  lib: string;
  container?: string;
  thread?: string;
  /** Handshakes this point stands for when sampled; omitted when 1. */
  sampleWeight?: number;
  /** Integer ns, as a bigint or decimal string. */
  timeNs: bigint | string;
}

/** One tls_handshake point (one client TLS handshake; the probe's `tls` line). Rare: no line template. */
export function tlsPoint(e: TlsPointInput): Point {
  const fields: Fields = { [TLS_FIELD.latencyMs]: e.latencyNs / 1e6, [TLS_FIELD.pid]: int(e.pid), [TLS_FIELD.lib]: e.lib };
  if (e.container) fields[TLS_FIELD.container] = e.container;
  if (e.thread) fields[TLS_FIELD.thread] = e.thread;
  if (e.sampleWeight !== undefined && e.sampleWeight !== 1) fields[TLS_FIELD.sampleWeight] = e.sampleWeight;
  return {
    measurement: MEASUREMENT.tls,
    tags: { [TAG.comm]: e.comm, [TAG.dst]: e.dst, [TAG.family]: e.family, [TAG.host]: e.host, [TAG.result]: e.result, [TAG.service]: e.service },
    fields,
    timeNs: e.timeNs,
  };
}

export interface SessionPointInput {
  host: string;
  service: string;
  comm: string;
  dst: string;
  family: Family;
  lifespanMs: number;
  /** tcplife rows. */
  txKb?: number;
  rxKb?: number;
  pid: number;
  sport: number;
  /** Probe close events: */
  closedBy?: ClosedBy;
  bytesSent?: number;
  bytesReceived?: number;
  retrans?: number;
  srttMs?: number;
  zeroWindows?: number;
  thread?: string;
  container?: string;
  /** Close events this point stands for when sampled; omitted when 1. */
  sampleWeight?: number;
  timeNs: bigint;
}

export function sessionPoint(s: SessionPointInput): Point {
  const tags: Record<string, string> = { [TAG.comm]: s.comm, [TAG.dst]: s.dst, [TAG.family]: s.family, [TAG.host]: s.host, [TAG.service]: s.service };
  if (s.closedBy !== undefined) tags[TAG.closedBy] = s.closedBy;
  const fields: Fields = { [SESSION_FIELD.lifespanMs]: s.lifespanMs };
  if (s.txKb !== undefined) fields[SESSION_FIELD.txKb] = s.txKb;
  if (s.rxKb !== undefined) fields[SESSION_FIELD.rxKb] = s.rxKb;
  fields[SESSION_FIELD.pid] = int(s.pid);
  fields[SESSION_FIELD.sport] = int(s.sport);
  if (s.bytesSent !== undefined) fields[SESSION_FIELD.bytesSent] = int(s.bytesSent);
  if (s.bytesReceived !== undefined) fields[SESSION_FIELD.bytesReceived] = int(s.bytesReceived);
  if (s.retrans !== undefined) fields[SESSION_FIELD.retrans] = int(s.retrans);
  if (s.srttMs !== undefined) fields[SESSION_FIELD.srttMs] = s.srttMs;
  if (s.zeroWindows !== undefined) fields[SESSION_FIELD.zeroWindows] = int(s.zeroWindows);
  if (s.thread !== undefined) fields[SESSION_FIELD.thread] = s.thread;
  if (s.container !== undefined) fields[SESSION_FIELD.container] = s.container;
  if (s.sampleWeight !== undefined && s.sampleWeight !== 1) fields[SESSION_FIELD.sampleWeight] = s.sampleWeight;
  return { measurement: MEASUREMENT.session, tags, fields, timeNs: s.timeNs };
}

/** Tags of one tcp_session_hist series. */
export interface SessionSeriesTags {
  host: string;
  service: string;
  dst: string;
}

/** One window's lifespan histogram (a delta) of one series, with its retransmit and reset counts. */
export interface SessionHistInput {
  count: number;
  sumMs: number;
  minMs: number;
  maxMs: number;
  /** Non-cumulative counts in SESSION_BUCKET_BOUNDS_MS order, overflow last. */
  buckets: readonly number[];
  retrans: number;
  resetsIn: number;
  resetsOut: number;
  /** Only when the connections carried zero-window counts (probe --zero-windows). */
  zeroWindows?: number;
}

export function sessionHistPoint(tags: SessionSeriesTags, h: SessionHistInput, timeNs: bigint): Point {
  const fields: Fields = {
    [SESSION_HIST_FIELD.count]: int(h.count),
    [SESSION_HIST_FIELD.sumMs]: h.sumMs,
    [SESSION_HIST_FIELD.minMs]: h.count > 0 ? h.minMs : 0,
    [SESSION_HIST_FIELD.maxMs]: h.count > 0 ? h.maxMs : 0,
    [SESSION_HIST_FIELD.retrans]: int(h.retrans),
    [SESSION_HIST_FIELD.resetsIn]: int(h.resetsIn),
    [SESSION_HIST_FIELD.resetsOut]: int(h.resetsOut),
  };
  if (h.zeroWindows !== undefined) fields[SESSION_HIST_FIELD.zeroWindows] = int(h.zeroWindows);
  for (let i = 0; i < SESSION_BUCKET_FIELDS.length; i++) fields[SESSION_BUCKET_FIELDS[i]] = int(h.buckets[i]);
  return {
    measurement: MEASUREMENT.sessionHist,
    tags: { [TAG.dst]: tags.dst, [TAG.host]: tags.host, [TAG.service]: tags.service },
    fields,
    timeNs,
  };
}

/**
 * The rollup of histogram points the caller holds in memory (test and benchmark generators, which write
 * the 10 s data and its rollups side by side): one point per series per `window`, stamped at the window's
 * start, in `rollupMeasurement(measurement, window)`, with the counts summed, min_ms the minimum and
 * max_ms the maximum (the schema's rule, ROLLUP_WINDOWS). The agent makes rollups from the database.
 */
export function rollupHistPoints(points: Iterable<Point>, window: RollupWindowName): Point[] {
  const w = ROLLUP_WINDOWS.find((x) => x.name === window);
  if (!w) throw new Error(`unknown rollup window ${JSON.stringify(window)}`);
  const windowNs = BigInt(w.ms) * 1_000_000n;
  const out = new Map<string, Point>();
  const num = (v: FieldValue | undefined): number => (v instanceof IntValue ? Number(v.value) : typeof v === 'number' ? v : NaN);
  for (const p of points) {
    if (p.timeNs === undefined) throw new Error('rollupHistPoints: a point without a time');
    const t = BigInt(p.timeNs);
    const start = t - (((t % windowNs) + windowNs) % windowNs);
    const tags = Object.entries(p.tags ?? {}).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : 1));
    const key = JSON.stringify([p.measurement, tags, String(start)]);
    const have = out.get(key);
    if (!have) {
      out.set(key, { measurement: rollupMeasurement(p.measurement, window), tags: { ...p.tags }, fields: { ...p.fields }, timeNs: start });
      continue;
    }
    for (const [f, v] of Object.entries(p.fields)) {
      if (v === undefined) continue;
      const old = have.fields[f];
      if (old === undefined) have.fields[f] = v;
      else if (f === HIST_FIELD.minMs) have.fields[f] = Math.min(num(old), num(v));
      else if (f === HIST_FIELD.maxMs) have.fields[f] = Math.max(num(old), num(v));
      else if (old instanceof IntValue) have.fields[f] = int(BigInt(old.value) + BigInt(v instanceof IntValue ? v.value : num(v)));
      else have.fields[f] = num(old) + num(v);
    }
  }
  return [...out.values()];
}
