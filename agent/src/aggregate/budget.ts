/**
 * The cardinality budget (issue 14): at most `maxSeries` series per measurement on this host, where a
 * series is a distinct tag set written within the last `horizonS` seconds of event time. A series beyond
 * the budget is FOLDED, not dropped: its distinguishing tag values become `other`, so every event still
 * counts (in the `other` series) and sums over everything are unchanged.
 *
 * What folds, in order:
 *  1. `dst`: the usual explosion is a client that meets many peers (a crawler, rotating addresses, unmapped
 *     `ip:port` destinations). Keeping `service` keeps the folded point meaningful: `rails-api -> other` is
 *     still rails-api's latency to its long tail, and its dashboards keep adding up.
 *  2. every other tag but `host`, `result` and `family` (so `service` and `comm`): only when the level-1
 *     `other` series themselves pass a tenth of the budget (services named after many short-lived
 *     processes). `result` never folds (error rates stay exact), nor `family` (two values) nor `host` (the
 *     budget is per host). A measurement with new tags folds them at level 2 by construction.
 * So a host writes at most maxSeries + ceil(maxSeries / 10) + (results x families) series per measurement
 * in any horizon.
 *
 * Every point the aggregator emits passes `admit()` (raw points, sessions, histograms, and any measurement
 * added later): a tracker per measurement is made on its first point, from the point's own tag keys.
 * Histogram deltas (points with `count`, `min_ms`, `max_ms` fields) that fold into the same `other` series
 * at the same time in one flush are MERGED (counts and buckets summed, min/max kept), because two points
 * with one series and timestamp would overwrite each other in InfluxDB; other points have host-unique
 * timestamps already and are only relabelled.
 *
 * Decisions stick while a series is live: a folded series stays folded until it has been quiet for the
 * horizon. Memory is bounded: admitted series <= maxSeries, `other` series as above, and folded series are
 * remembered (for the sticky decision and the top contributors) up to 4 x maxSeries; beyond that they are
 * decided afresh each time (still folded). Expiry runs at flushes, at most every horizon / 60.
 *
 * Cost: one nested-map lookup per emitted point (the tag values are the strings the enricher shares; no key
 * is built), at flush time, not per event received.
 */
import { CONNECT_TAGS, HIST_FIELD, IntValue, MEASUREMENT, TAG, type Fields, type Point } from '@tcplat/core';
import type { Counter, Metrics } from '../metrics';
import { BurstLog } from '../write/burst-log';
import type { Logger } from '../types';
import type { Emitted, RawConnect } from './aggregator';

/** The value a folded tag gets. */
export const OTHER = 'other';
/** Tags that never fold (see the module comment). */
const NEVER_FOLD: readonly string[] = [TAG.host, TAG.result, TAG.family];
/** Tags that fold first. */
const FOLD_FIRST: readonly string[] = [TAG.dst];
/** Tag values listed per tag in /api/status's top contributors. */
const TOP_N = 5;
/** At most one log line per this long while folding goes on (the burst log's summaries). */
const BURST_LOG_INTERVAL_MS = 10_000;
const FOLDED_HELP = 'Points written into an `other` series by the cardinality budget (--max-series), per measurement and what was folded (dst; all: service, comm and dst)';
/** Raw points (RawConnect) carry their tags as properties named like the tags. */
const RAW_MEASUREMENT = MEASUREMENT.connect;
const RAW_TAGS: readonly string[] = CONNECT_TAGS;
/** The order admitRaw reads them in (result and family never fold; service, comm, dst are relabelled). */
const RAW_ORDER = [TAG.service, TAG.comm, TAG.dst, TAG.result, TAG.family];

export type FoldReason = 'dst' | 'all';

export interface BudgetOptions {
  /** Series per measurement on this host; 0 = no budget. */
  maxSeries: number;
  /** Seconds of event time after which a quiet series frees its slot. */
  horizonS: number;
}

const enum Kind {
  /** A series written under its own tags. */
  Own,
  /** A series holding folded ones (a tag value is `other`). */
  Other,
  /** A series over the budget: written as `out`. */
  Folded,
}

interface Entry {
  /** Tag values in the tracker's key order. */
  values: string[];
  kind: Kind;
  /** Newest event second of a flush that wrote it. */
  last: number;
  /** Folded: the `other` series it is written as, and at which level. */
  out: Entry | null;
  reason: FoldReason | null;
}

type Node = Map<string, Node | Entry>;

export interface TopValue {
  value: string;
  /** Live series with this value (own or folded). */
  series: number;
  /** Of those, folded. */
  folded: number;
}

export interface MeasurementBudgetStatus {
  budget: number;
  /** Live series written under their own tags. */
  live: number;
  /** Live `other` series holding folded ones. */
  other: number;
  /** Live series folded into `other` (remembered ones; see untracked). */
  folded_series: number;
  /** Points written folded, by what was folded. */
  folded_points: Record<FoldReason, number>;
  /** Folded series not remembered (past 4 x the budget): decided afresh at each point. */
  untracked_folds: number;
  /** Per foldable tag, the values with the most live series: what explodes. */
  top: Record<string, TopValue[]>;
}

class Tracker {
  private root: Node = new Map();
  /** Tag keys but host, in the points' order. */
  readonly keys: string[];
  private readonly firstIdx: number[];
  private readonly allIdx: number[];
  private readonly scratch: string[];
  own = 0;
  other = 0;
  folded = 0;
  untracked = 0;
  /** Histogram deltas merged into another of the same `other` series and time (written as one point). */
  merged = 0;
  readonly foldedPoints: Record<FoldReason, number> = { dst: 0, all: 0 };
  private readonly otherMax: number;
  private readonly foldedMax: number;
  /** Histogram deltas written as an `other` series this flush: merged by (series, time). */
  private pendingHist = new Map<Entry, Map<string, Point>>();

  constructor(
    readonly measurement: string,
    tagKeys: readonly string[],
    private readonly max: number,
    private readonly counters: Record<FoldReason, Counter> | null,
    private readonly onFold: (t: Tracker, reason: FoldReason, series: string[]) => void,
  ) {
    this.keys = tagKeys.filter((k) => k !== TAG.host);
    this.firstIdx = this.keys.flatMap((k, i) => (FOLD_FIRST.includes(k) ? [i] : []));
    this.allIdx = this.keys.flatMap((k, i) => (NEVER_FOLD.includes(k) ? [] : [i]));
    this.scratch = new Array<string>(this.keys.length).fill('');
    this.otherMax = Math.max(1, Math.ceil(max / 10));
    this.foldedMax = 4 * max;
  }

  /** The entry of `values` (the scratch array is copied when an entry is made), or a decision. */
  lookup(values: string[], now: number): Entry {
    let node = this.root;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      const next = node.get(values[i]) as Node | undefined;
      if (next === undefined) return this.decide(values, now);
      node = next;
    }
    const e = node.get(values[last]) as Entry | undefined;
    if (e === undefined) return this.decide(values, now);
    if (e.last < now) e.last = now;
    if (e.out !== null && e.out.last < now) e.out.last = now;
    return e;
  }

  private insert(values: string[], kind: Kind, now: number, out: Entry | null, reason: FoldReason | null): Entry {
    const e: Entry = { values: values.slice(), kind, last: now, out, reason };
    let node = this.root;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      let next = node.get(values[i]) as Node | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(values[i], next);
      }
      node = next;
    }
    node.set(values[last], e);
    if (kind === Kind.Own) this.own++;
    else if (kind === Kind.Other) this.other++;
    else this.folded++;
    return e;
  }

  private find(values: string[]): Entry | undefined {
    let node = this.root;
    for (let i = 0; i < values.length - 1; i++) {
      const next = node.get(values[i]) as Node | undefined;
      if (next === undefined) return undefined;
      node = next;
    }
    return node.get(values[values.length - 1]) as Entry | undefined;
  }

  /** An `other` series (existing, or made while there is room for level 1; level 2 always). */
  private otherEntry(values: string[], level2: boolean, now: number): Entry | null {
    const e = this.find(values);
    if (e !== undefined) {
      if (e.last < now) e.last = now;
      return e;
    }
    if (!level2 && this.other >= this.otherMax) return null;
    return this.insert(values, Kind.Other, now, null, null);
  }

  private decide(values: string[], now: number): Entry {
    if (this.allIdx.some((i) => values[i] === OTHER)) {
      // A tag value that is literally `other` (a level-1 or level-2 tag set, or a rule named so): it is
      // one of the `other` series, bounded like them.
      const e = this.otherEntry(values, this.allIdx.every((i) => values[i] === OTHER), now);
      if (e !== null) return e;
    } else if (this.own < this.max) {
      return this.insert(values, Kind.Own, now, null, null);
    }
    // Over the budget: fold dst first; everything foldable when the level-1 `other` series are full too.
    let out: Entry | null = null;
    let reason: FoldReason = 'dst';
    if (this.firstIdx.length > 0) {
      const level1 = values.slice();
      for (const i of this.firstIdx) level1[i] = OTHER;
      out = this.otherEntry(level1, false, now);
    }
    if (out === null) {
      const level2 = values.slice();
      for (const i of this.allIdx) level2[i] = OTHER;
      out = this.otherEntry(level2, true, now)!;
      reason = 'all';
    }
    this.onFold(this, reason, values);
    if (this.folded < this.foldedMax) return this.insert(values, Kind.Folded, now, out, reason);
    this.untracked++;
    // Not remembered: a decision for this point only (callers read out and reason).
    return { values, kind: Kind.Folded, last: now, out, reason };
  }

  /** lookup() for raw points (keys service, comm, dst, result, family), without filling an array. */
  lookupRaw(service: string, comm: string, dst: string, result: string, family: string, now: number): Entry {
    const a = this.root.get(service) as Node | undefined;
    const b = a?.get(comm) as Node | undefined;
    const c = b?.get(dst) as Node | undefined;
    const d = c?.get(result) as Node | undefined;
    const e = d?.get(family) as Entry | undefined;
    if (e === undefined) {
      const s = this.scratch;
      s[0] = service;
      s[1] = comm;
      s[2] = dst;
      s[3] = result;
      s[4] = family;
      return this.lookup(s, now);
    }
    if (e.last < now) e.last = now;
    if (e.out !== null && e.out.last < now) e.out.last = now;
    return e;
  }

  /** Fill the scratch array from a tag object and look it up. */
  lookupTags(tags: Record<string, string | undefined>, now: number): Entry {
    const s = this.scratch;
    const keys = this.keys;
    for (let i = 0; i < keys.length; i++) s[i] = tags[keys[i]] ?? '';
    return this.lookup(s, now);
  }

  /** A tag object with the entry's values (host and tags not tracked kept from `tags`). */
  tagsOf(e: Entry, tags: Record<string, string | undefined>): Record<string, string | undefined> {
    const out = { ...tags };
    for (let i = 0; i < this.keys.length; i++) if (tags[this.keys[i]] !== undefined || e.values[i] !== '') out[this.keys[i]] = e.values[i];
    return out;
  }

  countFold(reason: FoldReason): void {
    this.foldedPoints[reason]++;
    this.counters?.[reason].inc();
  }

  /** Hold a histogram delta of an `other` series until the flush ends; merge deltas of one series and time. */
  holdHist(e: Entry, p: Point): void {
    let byTime = this.pendingHist.get(e);
    if (!byTime) {
      byTime = new Map();
      this.pendingHist.set(e, byTime);
    }
    const t = String(p.timeNs);
    const prev = byTime.get(t);
    if (prev) {
      mergeHistFields(prev.fields, p.fields);
      this.merged++;
    } else byTime.set(t, p);
  }

  drainHist(emit: (p: Point) => void): void {
    if (this.pendingHist.size === 0) return;
    const held = this.pendingHist;
    this.pendingHist = new Map();
    for (const byTime of held.values()) for (const p of byTime.values()) emit(p);
  }

  /** Forget series quiet since before `oldest`. */
  expire(oldest: number): void {
    const walk = (node: Node, depth: number): void => {
      for (const [k, v] of node) {
        if (depth === this.keys.length - 1) {
          const e = v as Entry;
          if (e.last < oldest) {
            node.delete(k);
            if (e.kind === Kind.Own) this.own--;
            else if (e.kind === Kind.Other) this.other--;
            else this.folded--;
          }
        } else {
          walk(v as Node, depth + 1);
          if ((v as Node).size === 0) node.delete(k);
        }
      }
    };
    walk(this.root, 0);
  }

  status(): MeasurementBudgetStatus {
    const counts = this.keys.map(() => new Map<string, { series: number; folded: number }>());
    const walk = (node: Node, depth: number): void => {
      for (const v of node.values()) {
        if (depth < this.keys.length - 1) {
          walk(v as Node, depth + 1);
          continue;
        }
        const e = v as Entry;
        if (e.kind === Kind.Other) continue;
        for (const i of this.allIdx) {
          const m = counts[i];
          let c = m.get(e.values[i]);
          if (!c) {
            c = { series: 0, folded: 0 };
            m.set(e.values[i], c);
          }
          c.series++;
          if (e.kind === Kind.Folded) c.folded++;
        }
      }
    };
    walk(this.root, 0);
    const top: Record<string, TopValue[]> = {};
    for (const i of this.allIdx) {
      top[this.keys[i]] = [...counts[i]]
        .map(([value, c]) => ({ value, ...c }))
        .sort((a, b) => b.series - a.series || b.folded - a.folded || (a.value < b.value ? -1 : 1))
        .slice(0, TOP_N);
    }
    return {
      budget: this.max,
      live: this.own,
      other: this.other,
      folded_series: this.folded,
      folded_points: { ...this.foldedPoints },
      untracked_folds: this.untracked,
      top,
    };
  }
}

/** Histogram delta fields: counts, sums and buckets add up; min_ms/max_ms stay min/max of non-empty deltas. */
function mergeHistFields(into: Fields, from: Fields): void {
  const n = (v: unknown): number => (v instanceof IntValue ? Number(v.value) : typeof v === 'number' ? v : 0);
  const intoEmpty = n(into[HIST_FIELD.count]) === 0;
  const fromEmpty = n(from[HIST_FIELD.count]) === 0;
  for (const [k, v] of Object.entries(from)) {
    const cur = into[k];
    if (k === HIST_FIELD.minMs || k === HIST_FIELD.maxMs) {
      if (fromEmpty) continue;
      if (intoEmpty || cur === undefined) into[k] = v;
      else into[k] = (k === HIST_FIELD.minMs ? Math.min : Math.max)(n(cur), n(v));
    } else if (v instanceof IntValue) into[k] = new IntValue(n(cur) + n(v));
    else if (typeof v === 'number') into[k] = n(cur) + v;
    else if (cur === undefined) into[k] = v;
  }
}

function horizonText(s: number): string {
  return s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`;
}

function isHistDelta(p: Point): boolean {
  const f = p.fields;
  return f[HIST_FIELD.count] instanceof IntValue && HIST_FIELD.minMs in f && HIST_FIELD.maxMs in f;
}

export class SeriesBudget {
  private readonly trackers = new Map<string, Tracker>();
  private lastExpire = -Infinity;
  /** No raw event gave the time this flush (histogram-only input): take it from the points. */
  private timeFromPoints = false;
  private readonly burst: BurstLog | null;
  private now = 0;

  constructor(
    readonly opts: BudgetOptions,
    private readonly metrics: Metrics | null = null,
    log: Logger | null = null,
  ) {
    this.burst = log ? new BurstLog(log, 'warn', 'series folded into `other` (cardinality budget)', BURST_LOG_INTERVAL_MS) : null;
    metrics?.gauge('tcplat_series_live', 'Series written under their own tags within the --series-horizon, per measurement (the --max-series budget counts these)', () =>
      [...this.trackers.values()].map((t) => ({ labels: { measurement: t.measurement }, value: t.own })),
    );
    metrics?.gauge('tcplat_series_merged_points_total', 'Histogram deltas merged into another delta of the same `other` series and time (the aggregate stage counts them emitted; the encode stage gets one point)', () =>
      [...this.trackers.values()].map((t) => ({ labels: { measurement: t.measurement }, value: t.merged })),
    );
    metrics?.gauge('tcplat_series_other', 'Live `other` series holding folded series, per measurement', () =>
      [...this.trackers.values()].map((t) => ({ labels: { measurement: t.measurement }, value: t.other })),
    );
  }

  get enabled(): boolean {
    return this.opts.maxSeries > 0;
  }

  private tracker(measurement: string, tagKeys: () => readonly string[]): Tracker {
    let t = this.trackers.get(measurement);
    if (!t) {
      const m = this.metrics;
      const counters = m ? { dst: m.counter('tcplat_series_folded_total', FOLDED_HELP, { measurement, reason: 'dst' }), all: m.counter('tcplat_series_folded_total', FOLDED_HELP, { measurement, reason: 'all' }) } : null;
      t = new Tracker(measurement, tagKeys(), this.opts.maxSeries, counters, (tr, reason, values) => this.folded(tr, reason, values));
      this.trackers.set(measurement, t);
    }
    return t;
  }

  private readonly lastDetailedMs = new Map<Tracker, number>();
  /** Series folded this flush, per tracker and reason, with the first as an example: logged at its end. */
  private newFolds = new Map<Tracker, { dst: number; all: number; example: Record<string, string> }>();

  private folded(t: Tracker, reason: FoldReason, values: string[]): void {
    let f = this.newFolds.get(t);
    if (!f) {
      f = { dst: 0, all: 0, example: Object.fromEntries(t.keys.map((k, i) => [k, values[i]])) };
      this.newFolds.set(t, f);
    }
    f[reason]++;
  }

  /** One burst-log call per measurement and flush (the log says it once per burst, with the top contributors). */
  private logFolds(): void {
    const folds = this.newFolds;
    if (folds.size === 0) return;
    this.newFolds = new Map();
    if (!this.burst) return;
    const nowMs = Date.now();
    for (const [t, f] of folds) {
      // The top contributors take a walk over the tracked series: only for a line the burst log may write
      // at once (it sums the rest of a burst into counts), not at every flush while folding goes on.
      const detailed = nowMs - (this.lastDetailedMs.get(t) ?? -Infinity) >= BURST_LOG_INTERVAL_MS;
      if (detailed) this.lastDetailedMs.set(t, nowMs);
      const st = detailed ? t.status() : { live: t.own, top: {} };
      // The values behind many series each (a value with one series explains nothing).
      const top =
        Object.entries(st.top)
          .flatMap(([k, vs]) => vs.filter((v) => v.series > 1).map((v) => ({ k, ...v })))
          .sort((a, b) => b.series - a.series)
          .slice(0, 3)
          .map((v) => `${v.k}=${v.value} (${v.series} series)`)
          .join(', ') || 'none (every value has one series)';
      for (const reason of ['dst', 'all'] as const) {
        if (f[reason] === 0) continue;
        this.burst.add(
          `${t.measurement}:${reason}`,
          f[reason],
          `${t.measurement}: ${st.live} series on this host in the last ${horizonText(this.opts.horizonS)} reach the budget (--max-series ${this.opts.maxSeries}): ${f[reason]} new series folded into ${reason === 'dst' ? 'dst=other' : 'other (service, comm and dst)'}${detailed ? `; top contributors: ${top}` : ''}. Map such destinations with rules, or raise --max-series`,
          { measurement: t.measurement, folded: reason, example: f.example, budget: this.opts.maxSeries, live: st.live, top: st.top },
        );
      }
    }
  }

  /**
   * Wrap a flush's emit: every point passes the budget. Call `end()` when the flush is done (it emits the
   * merged histogram deltas of `other` series). `nowS` is the newest event second seen.
   */
  begin(emit: (p: Emitted) => void, nowS: number): (p: Emitted) => void {
    if (!this.enabled) return emit;
    this.timeFromPoints = !Number.isFinite(nowS);
    if (!this.timeFromPoints && nowS > this.now) this.now = nowS;
    const now = this.now;
    const step = Math.max(1, Math.floor(this.opts.horizonS / 60));
    if (now - this.lastExpire >= step) {
      this.lastExpire = now;
      for (const t of this.trackers.values()) t.expire(now - this.opts.horizonS);
    }
    return (p) => {
      if ('raw' in p) {
        this.admitRaw(p, now);
        emit(p);
        return;
      }
      const out = this.admitPoint(p);
      if (out) emit(out);
    };
  }

  /** Emit what the flush held back (merged histogram deltas of `other` series). */
  end(emit: (p: Emitted) => void): void {
    if (!this.enabled) return;
    for (const t of this.trackers.values()) t.drainHist(emit);
    this.logFolds();
  }

  private rawTracker: Tracker | null = null;

  /**
   * Raw tcp_connect values, relabelled in place when folded. The hot path of the budget (one call per raw
   * point): the tags are read by name in CONNECT_TAGS order (checked when the tracker is made) and walked
   * through the nested maps without a scratch array; the generic path takes a miss.
   */
  private admitRaw(p: RawConnect, now: number): void {
    let t = this.rawTracker;
    if (t === null) {
      t = this.rawTracker = this.tracker(RAW_MEASUREMENT, () => RAW_TAGS);
      if (t.keys.join() !== RAW_ORDER.join()) throw new Error(`budget: tcp_connect tags are ${t.keys.join()}, the raw path reads ${RAW_ORDER.join()}`);
    }
    const e = t.lookupRaw(p.service, p.comm, p.dst, p.result, p.family, now);
    if (e.out === null) return;
    t.countFold(e.reason!);
    const v = e.out.values;
    p.service = v[0];
    p.comm = v[1];
    p.dst = v[2];
  }

  /** A Point: relabelled when folded; histogram deltas of `other` series are held for merging (null). */
  private admitPoint(p: Point): Point | null {
    // Histogram-only input (--probe-mode hist) has no raw events to tell the aggregator the time.
    if (this.timeFromPoints && typeof p.timeNs === 'bigint') {
      const sec = Number(p.timeNs / 1_000_000_000n);
      if (sec > this.now) this.now = sec;
    }
    const now = this.now;
    const tags = p.tags ?? {};
    const t = this.tracker(p.measurement, () => Object.keys(tags));
    // Only the host tag (or none): one series per host, nothing to budget.
    if (t.keys.length === 0) return p;
    const e = t.lookupTags(tags, now);
    const target = e.out ?? (e.kind === Kind.Other ? e : null);
    if (e.out !== null) {
      t.countFold(e.reason!);
    }
    if (target === null) return p;
    const out: Point = e.out !== null ? { ...p, tags: t.tagsOf(target, tags), fields: { ...p.fields } } : p;
    if (isHistDelta(out)) {
      t.holdHist(target, out);
      return null;
    }
    return out;
  }

  /** Log what the burst log holds (at shutdown). */
  flushLog(): void {
    this.burst?.flush();
  }

  status(): { max_series: number; horizon_s: number; measurements: Record<string, MeasurementBudgetStatus> } {
    return {
      max_series: this.opts.maxSeries,
      horizon_s: this.opts.horizonS,
      measurements: Object.fromEntries([...this.trackers.values()].map((t) => [t.measurement, t.status()])),
    };
  }
}

