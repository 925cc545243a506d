/**
 * The probe's `--mode hist` lines (bpf/README.md; spec in the probe's own words): one line per key per
 * window, an exact histogram of the attempts that completed in that window.
 *
 * ```
 * {"type":"hist","ts_ns":1764100010000000000,"window_ns":10000000000,"cgroup_id":5678,"pid":1234,
 *  "comm":"ruby","family":"ipv4","daddr":"10.0.0.9","dport":5432,"result":"ok","errno":0,"count":12,
 *  "sum_ns":12345678,"min_ns":81000,"max_ns":1043000000,"syn_retrans":1,"buckets":[0,0,3,9,...]}
 * ```
 * `ts_ns` is when the window closed, `window_ns` its length; `buckets` are exactly pkg/core's BUCKET_COUNT
 * non-cumulative counts in BUCKET_BOUNDS_MS order (the kernel compares integer ns with the same bounds), and
 * they sum to `count`. A few lines per key and window: read with JSON.parse, not on the per-event hot path.
 */
import { BUCKET_COUNT, FAMILIES, Histogram, RESULTS, type ConnectResult, type Family } from '@tcplat/core';
import type { HistEvent } from '../types';

export type HistParse = { ok: true; value: HistEvent } | { ok: false; reason: 'json' | 'field'; message: string };

const RESULT_SET = new Set<string>(RESULTS);
const FAMILY_SET = new Set<string>(FAMILIES);

/** Cheap test before JSON.parse: the probe writes `"type":"hist"` first. */
export function isHistLine(text: string): boolean {
  return text.startsWith('{"type":"hist"');
}

/** The exact digits of an integer key (ts_ns, cgroup_id are u64: JSON.parse would round them). */
function exactDigits(text: string, key: string): string | undefined {
  const m = new RegExp(`"${key}"\\s*:\\s*(\\d{1,20})(?![\\d.eE])`).exec(text);
  return m?.[1];
}

function uint(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

export function parseHistLine(text: string): HistParse {
  let o: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, reason: 'json', message: 'hist line: not a JSON object' };
    o = v as Record<string, unknown>;
  } catch (e) {
    return { ok: false, reason: 'json', message: `hist line: not JSON: ${(e as Error).message}` };
  }
  const bad = (field: string, want: string): HistParse => ({ ok: false, reason: 'field', message: `hist line: field ${field} must be ${want}, got ${JSON.stringify(o[field])?.slice(0, 80)}` });
  const ts = exactDigits(text, 'ts_ns');
  if (!uint(o.ts_ns, Infinity) || ts === undefined || BigInt(ts) >= 1n << 64n) return bad('ts_ns', 'an unsigned integer (Unix ns)');
  if (!uint(o.window_ns) || o.window_ns === 0) return bad('window_ns', 'a positive integer (ns)');
  let cgroupId = '0';
  if (o.cgroup_id !== undefined) {
    const cg = exactDigits(text, 'cgroup_id');
    if (!uint(o.cgroup_id, Infinity) || cg === undefined || BigInt(cg) >= 1n << 64n) return bad('cgroup_id', 'an unsigned integer');
    cgroupId = cg;
  }
  for (const k of ['pid', 'dport', 'errno', 'count', 'syn_retrans'] as const) if (!uint(o[k], k === 'dport' ? 65535 : k === 'errno' ? 4095 : k === 'pid' ? 4294967295 : undefined)) return bad(k, 'an unsigned integer');
  for (const k of ['sum_ns', 'min_ns', 'max_ns'] as const) if (!uint(o[k], Infinity)) return bad(k, 'an unsigned integer (ns)');
  if (typeof o.comm !== 'string') return bad('comm', 'a string');
  if (typeof o.daddr !== 'string' || o.daddr === '') return bad('daddr', 'an address');
  if (typeof o.family !== 'string' || !FAMILY_SET.has(o.family)) return bad('family', 'ipv4 or ipv6');
  if (typeof o.result !== 'string' || !RESULT_SET.has(o.result)) return bad('result', `one of ${RESULTS.join(', ')}`);
  const b = o.buckets;
  if (!Array.isArray(b) || b.length !== BUCKET_COUNT || !b.every((x) => uint(x))) return bad('buckets', `${BUCKET_COUNT} unsigned integers`);
  const count = o.count as number;
  const total = (b as number[]).reduce((a, x) => a + x, 0);
  if (total !== count) return { ok: false, reason: 'field', message: `hist line: buckets sum to ${total}, count says ${count}` };
  if (count === 0) return bad('count', 'at least 1 (the probe prints only keys that saw an attempt)');
  const minNs = o.min_ns as number;
  const maxNs = o.max_ns as number;
  if (minNs > maxNs) return { ok: false, reason: 'field', message: `hist line: min_ns ${minNs} > max_ns ${maxNs}` };
  const hist = new Histogram();
  for (let i = 0; i < BUCKET_COUNT; i++) hist.buckets[i] = (b as number[])[i];
  hist.count = count;
  hist.sumMs = (o.sum_ns as number) / 1e6;
  hist.minMs = minNs / 1e6;
  hist.maxMs = maxNs / 1e6;
  const endNs = BigInt(ts);
  const windowNs = BigInt(o.window_ns as number);
  return {
    ok: true,
    value: {
      type: 'hist',
      // The window's start: the histogram stands for attempts that completed within [start, end).
      tsNs: endNs > windowNs ? endNs - windowNs : 0n,
      endNs,
      pid: o.pid as number,
      comm: o.comm,
      cgroupId,
      family: o.family as Family,
      daddr: o.daddr,
      dport: o.dport as number,
      result: o.result as ConnectResult,
      errno: o.errno as number,
      synRetrans: o.syn_retrans as number,
      hist,
    },
  };
}
