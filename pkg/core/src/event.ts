/**
 * Probe events: the NDJSON lines `bpf/tcplat-probe` prints (see DESIGN.md), and a validating parser.
 * 64-bit integers that exceed JavaScript's exact range (ts_ns, cgroup_id) are read exactly, as bigint/string.
 */
import { FAMILIES, RESULTS, type ConnectResult, type Family } from './schema';

export interface ConnectEvent {
  type: 'connect';
  /** Unix time in ns when the SYN was sent. */
  tsNs: bigint;
  /** From the SYN to the handshake's end or failure, ns. */
  latencyNs: number;
  result: ConnectResult;
  errno: number;
  synRetrans: number;
  pid: number;
  tid: number;
  comm: string;
  /** cgroup v2 id, a u64 kept as a decimal string. */
  cgroupId: string;
  family: Family;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

export interface StatsEvent {
  type: 'stats';
  tsNs: bigint;
  events: number;
  dropped: number;
}

export type ProbeEvent = ConnectEvent | StatsEvent;

export type ProbeLineErrorReason = 'empty' | 'json' | 'type' | 'field';

/** A probe line that is not a valid event. `reason` is stable (used as a metrics label). */
export class ProbeLineError extends Error {
  constructor(
    readonly reason: ProbeLineErrorReason,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ProbeLineError';
  }
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: ProbeLineError };

// Quote the 64-bit integers before JSON.parse so they survive exactly. Inside JSON strings a quote is
// always escaped, so `"ts_ns":` can only match a real key.
const BIG_KEYS = /"(ts_ns|cgroup_id)"\s*:\s*(-?\d+)/g;
const RESULT_SET = new Set<string>(RESULTS);
const FAMILY_SET = new Set<string>(FAMILIES);
const U64_MAX = (1n << 64n) - 1n;

function excerpt(line: string): string {
  return line.length > 120 ? JSON.stringify(line.slice(0, 120)) + '...' : JSON.stringify(line);
}

function fail(reason: ProbeLineErrorReason, message: string, field?: string): { ok: false; error: ProbeLineError } {
  return { ok: false, error: new ProbeLineError(reason, message, field) };
}

type Raw = Record<string, unknown>;

function uint(o: Raw, key: string, max: number): number | string {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
    return `field ${key} must be an integer within 0..${max}, got ${JSON.stringify(v)}`;
  }
  return v;
}

function ts(o: Raw): bigint | string {
  const v = o.ts_ns;
  if (typeof v !== 'string' || !/^\d{1,20}$/.test(v)) return `field ts_ns must be an unsigned integer (ns), got ${JSON.stringify(v)}`;
  const b = BigInt(v);
  if (b > U64_MAX) return `field ts_ns ${v} exceeds 64 bits`;
  return b;
}

/** Parse one probe line. Never throws: malformed input yields `{ ok: false, error }`. */
export function parseProbeLine(line: string): ParseResult<ProbeEvent> {
  const text = line.trim();
  if (text === '') return fail('empty', 'empty line');
  let o: unknown;
  try {
    o = JSON.parse(text.replace(BIG_KEYS, '"$1":"$2"'));
  } catch (e) {
    return fail('json', `not JSON: ${(e as Error).message}: ${excerpt(text)}`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return fail('json', `not a JSON object: ${excerpt(text)}`);
  const r = o as Raw;
  const tsNs = ts(r);
  if (typeof tsNs === 'string') return fail('field', tsNs, 'ts_ns');

  if (r.type === 'stats') {
    const events = uint(r, 'events', Number.MAX_SAFE_INTEGER);
    if (typeof events === 'string') return fail('field', events, 'events');
    const dropped = uint(r, 'dropped', Number.MAX_SAFE_INTEGER);
    if (typeof dropped === 'string') return fail('field', dropped, 'dropped');
    return { ok: true, value: { type: 'stats', tsNs, events, dropped } };
  }
  if (r.type !== 'connect') return fail('type', `unknown event type ${JSON.stringify(r.type)} (expected connect or stats)`, 'type');

  const nums: Record<string, number> = {};
  for (const [k, max] of [
    ['latency_ns', Number.MAX_SAFE_INTEGER],
    ['errno', 4095],
    ['syn_retrans', 65535],
    ['pid', 4294967295],
    ['tid', 4294967295],
    ['sport', 65535],
    ['dport', 65535],
  ] as const) {
    const v = uint(r, k, max);
    if (typeof v === 'string') return fail('field', v, k);
    nums[k] = v;
  }
  const result = r.result;
  if (typeof result !== 'string' || !RESULT_SET.has(result)) {
    return fail('field', `field result must be one of ${RESULTS.join(', ')}, got ${JSON.stringify(result)}`, 'result');
  }
  const family = r.family;
  if (typeof family !== 'string' || !FAMILY_SET.has(family)) {
    return fail('field', `field family must be ipv4 or ipv6, got ${JSON.stringify(family)}`, 'family');
  }
  for (const k of ['comm', 'saddr', 'daddr'] as const) {
    if (typeof r[k] !== 'string') return fail('field', `field ${k} must be a string, got ${JSON.stringify(r[k])}`, k);
  }
  const cg = r.cgroup_id;
  if (cg !== undefined && (typeof cg !== 'string' || !/^\d{1,20}$/.test(cg))) {
    return fail('field', `field cgroup_id must be an unsigned integer, got ${JSON.stringify(cg)}`, 'cgroup_id');
  }
  return {
    ok: true,
    value: {
      type: 'connect',
      tsNs,
      latencyNs: nums.latency_ns,
      result: result as ConnectResult,
      errno: nums.errno,
      synRetrans: nums.syn_retrans,
      pid: nums.pid,
      tid: nums.tid,
      comm: r.comm as string,
      cgroupId: (cg as string | undefined) ?? '0',
      family: family as Family,
      saddr: r.saddr as string,
      sport: nums.sport,
      daddr: r.daddr as string,
      dport: nums.dport,
    },
  };
}

/** The destination label DESIGN.md uses when no mapping rule matches: `ip:port` or `[v6]:port`. */
export function defaultDst(family: Family, addr: string, port: number): string {
  return family === 'ipv6' ? `[${addr}]:${port}` : `${addr}:${port}`;
}
