/**
 * Helpers for the rollup tests: seeded tcp_connect_hist points in the agent's schema (several hosts,
 * services, destinations, results; late points stamped window start + k ns as the agent writes them), the
 * sums every rollup level must hold (computed here from the points written, not by the database), and the
 * rollup points read back from InfluxDB 1.x or 2.x exactly as stored.
 */
import {
  BUCKET_COUNT,
  BUCKET_FIELDS,
  encodePoint,
  fleetRollupMeasurement,
  Histogram,
  histPoint,
  HIST_FIELD,
  rollupSchemaOf,
  MEASUREMENT,
  queryFlux,
  queryInfluxQL,
  quote,
  ROLLUP_WINDOWS,
  rollupMeasurement,
  writeLines,
  type ConnectResult,
  type InfluxTarget,
  type RollupWindowName,
  type SeriesTags,
} from '@tcplat/core';
import { fluxRows } from './support/flux';

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SeedPoint {
  tags: SeriesTags;
  timeNs: bigint;
  h: Histogram;
  synRetrans: number;
}

const RESULTS: ConnectResult[] = ['ok', 'refused', 'timeout'];

/**
 * Points for [fromMs, toMs): per 10 s window, each series has a point with probability `density`; some
 * get a second (late) point at window start + 1..3 ns, as the agent stamps late events.
 */
export function seedPoints(o: { fromMs: number; toMs: number; hosts: string[]; seed: number; density?: number; services?: string[]; dsts?: string[] }): SeedPoint[] {
  const r = rng(o.seed);
  const services = o.services ?? ['api', 'rails'];
  const dsts = o.dsts ?? ['pg:5432', '10.0.0.9:6379'];
  const out: SeedPoint[] = [];
  for (let t = Math.ceil(o.fromMs / 10_000) * 10_000; t < o.toMs; t += 10_000) {
    for (const host of o.hosts)
      for (const service of services)
        for (const dst of dsts)
          for (const result of RESULTS) {
            if (r() > (o.density ?? 0.3)) continue;
            const copies = r() < 0.1 ? 2 : 1;
            for (let k = 0; k < copies; k++) {
              const h = new Histogram();
              const n = 1 + Math.floor(r() * 20);
              for (let i = 0; i < n; i++) h.add(result === 'timeout' ? 1000 + r() * 6000 : r() ** 3 * 50);
              out.push({ tags: { host, service, dst, result }, timeNs: BigInt(t) * 1_000_000n + BigInt(k), h, synRetrans: Math.floor(r() * 3) });
            }
          }
  }
  return out;
}

export async function writeSeed(t: InfluxTarget, pts: readonly SeedPoint[]): Promise<void> {
  for (let i = 0; i < pts.length; i += 5000) {
    const body = pts
      .slice(i, i + 5000)
      .map((p) => encodePoint(histPoint(p.tags, p.h, p.timeNs, p.synRetrans)))
      .join('\n');
    await writeLines(t, body + '\n');
  }
}

/** One rollup point: its window start and fields, keyed by series and time. */
export interface Sums {
  fields: Record<string, number>;
}

function key(tags: Record<string, string>, timeMs: number): string {
  return `${tags.host ?? '(fleet)'}|${tags.service}|${tags.dst}|${tags.result}|${timeMs}`;
}

/**
 * What the rollup at window `w` must hold for these points (optionally one host's); `fleet`: what the
 * fleet rollup must hold (the points of every host added up per service, dst, result).
 */
export function expectedSums(pts: readonly SeedPoint[], windowMs: number, host?: string, fleet = false): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const p of pts) {
    if (host !== undefined && p.tags.host !== host) continue;
    const ms = Number(p.timeNs / 1_000_000n);
    const w = Math.floor(ms / windowMs) * windowMs;
    const tags = { ...(p.tags as unknown as Record<string, string>) };
    if (fleet) delete tags.host;
    const k = key(tags, w);
    let s = out.get(k);
    if (!s) {
      s = { [HIST_FIELD.count]: 0, [HIST_FIELD.sumMs]: 0, [HIST_FIELD.minMs]: Infinity, [HIST_FIELD.maxMs]: -Infinity, [HIST_FIELD.synRetrans]: 0 };
      for (const f of BUCKET_FIELDS) s[f] = 0;
      out.set(k, s);
    }
    s[HIST_FIELD.count] += p.h.count;
    s[HIST_FIELD.sumMs] += p.h.sumMs;
    s[HIST_FIELD.minMs] = Math.min(s[HIST_FIELD.minMs], p.h.minMs);
    s[HIST_FIELD.maxMs] = Math.max(s[HIST_FIELD.maxMs], p.h.maxMs);
    s[HIST_FIELD.synRetrans] += p.synRetrans;
    for (let i = 0; i < BUCKET_COUNT; i++) s[BUCKET_FIELDS[i]] += p.h.buckets[i];
  }
  return out;
}

/**
 * Every point of one rollup level (`fleet`: its fleet rollup) of `measurement` (default tcp_connect_hist) as
 * stored (1.x: in `rp`; 2.x: in `bucket`), keyed by `keyOf` (default: like expectedSums).
 */
export async function storedRollup(
  t: InfluxTarget,
  window: RollupWindowName,
  fromMs: number,
  toMs: number,
  fleet = false,
  measurement: string = MEASUREMENT.connectHist,
  keyOf: (tags: Record<string, string>, timeMs: number) => string = key,
): Promise<Map<string, Record<string, number>>> {
  const m = fleet ? fleetRollupMeasurement(measurement, window) : rollupMeasurement(measurement, window);
  const out = new Map<string, Record<string, number>>();
  const add = (tags: Record<string, string>, timeMs: number, fields: Record<string, number>) => {
    const k = keyOf(tags, timeMs);
    if (out.has(k)) throw new Error(`two rollup points for ${k}`);
    out.set(k, fields);
  };
  if (t.version === 1) {
    for (const p of await storedPoints(t, m, `WHERE time >= ${fromMs}ms AND time < ${toMs}ms`)) add(p.tags, p.timeMs, p.fields);
    return out;
  }
  const s = (v: string) => quote('flux-string', v);
  const csv = await queryFlux(
    t,
    `from(bucket: ${s(t.bucket)}) |> range(start: ${new Date(fromMs).toISOString()}, stop: ${new Date(toMs).toISOString()}) |> filter(fn: (r) => r._measurement == ${s(m)}) |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`,
  );
  const schema = rollupSchemaOf(measurement);
  const fieldNames = new Set(schema.columns.map((c) => c.field));
  for (const row of fluxRows(csv)) {
    const fields: Record<string, number> = {};
    for (const [k, v] of Object.entries(row)) if (fieldNames.has(k) && v !== '') fields[k] = Number(v);
    const tags: Record<string, string> = {};
    for (const tg of schema.tags) if (row[tg] !== undefined) tags[tg] = row[tg]; // a fleet rollup has no host
    add(tags, Date.parse(row._time), fields);
  }
  return out;
}

/**
 * Compare stored rollups with the expected sums: the same series and windows; counts, buckets and
 * syn_retrans exactly; sum_ms within float rounding; min/max exactly. Returns the differences (empty: equal).
 */
export function diffSums(
  expected: Map<string, Record<string, number>>,
  stored: Map<string, Record<string, number>>,
  opts: { extraFields?: boolean } = {},
): string[] {
  const diffs: string[] = [];
  for (const [k, e] of expected) {
    const s = stored.get(k);
    if (!s) {
      diffs.push(`missing ${k}`);
      continue;
    }
    for (const [f, v] of Object.entries(e)) {
      const got = s[f];
      const ok = f === HIST_FIELD.sumMs ? Math.abs(got - v) <= 1e-9 * Math.max(1, Math.abs(v)) : got === v;
      if (!ok) diffs.push(`${k} ${f}: expected ${v}, stored ${got}`);
    }
    if (opts.extraFields) for (const f of Object.keys(s)) if (!(f in e)) diffs.push(`${k} ${f}: stored, not in the 10 s data`);
  }
  for (const k of stored.keys()) if (!expected.has(k)) diffs.push(`unexpected ${k}`);
  return diffs.slice(0, 20);
}

export const LEVELS = ROLLUP_WINDOWS;

/** A point as InfluxQL returns it: its tags, time and numeric fields. */
export interface StoredPoint {
  tags: Record<string, string>;
  timeMs: number;
  fields: Record<string, number>;
}

/** Every point of `measurement` (1.x: in `t.rp` if set, else the default retention policy), optionally `where`. */
export async function storedPoints(t: InfluxTarget & { version: 1 }, measurement: string, where = ''): Promise<StoredPoint[]> {
  const id = (x: string) => quote('influxql-ident', x);
  const from = t.rp ? `${id(t.db)}.${id(t.rp)}.${id(measurement)}` : id(measurement);
  const [series] = await queryInfluxQL(t, `SELECT * FROM ${from} ${where} GROUP BY *`, { epoch: 'ms' });
  const out: StoredPoint[] = [];
  for (const s of series ?? []) {
    const ti = s.columns.indexOf('time');
    for (const v of s.values) {
      const fields: Record<string, number> = {};
      s.columns.forEach((c, i) => {
        if (i !== ti && typeof v[i] === 'number') fields[c] = v[i] as number;
      });
      out.push({ tags: s.tags ?? {}, timeMs: Number(v[ti]), fields });
    }
  }
  return out;
}

/** The 10 s points as stored (1.x, default retention policy), for comparing rollups with what the agent really wrote. */
export function stored10s(t: InfluxTarget & { version: 1 }, measurement: string = MEASUREMENT.connectHist): Promise<StoredPoint[]> {
  return storedPoints({ ...t, rp: undefined }, measurement);
}

/** expectedSums for stored points (fields by name). */
export function expectedFromStored(
  pts: readonly StoredPoint[],
  windowMs: number,
  keyOf: (tags: Record<string, string>, timeMs: number) => string = key,
): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (const p of pts) {
    const k = keyOf(p.tags, Math.floor(p.timeMs / windowMs) * windowMs);
    const s = out.get(k);
    if (!s) {
      out.set(k, { ...p.fields });
      continue;
    }
    for (const [f, v] of Object.entries(p.fields)) {
      if (f === HIST_FIELD.minMs) s[f] = Math.min(s[f], v);
      else if (f === HIST_FIELD.maxMs) s[f] = Math.max(s[f], v);
      else s[f] = (s[f] ?? 0) + v;
    }
  }
  return out;
}
