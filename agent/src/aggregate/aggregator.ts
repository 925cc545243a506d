/**
 * Aggregate stage: exact histograms per window of event time, rate-limited raw points, sessions, and
 * unique timestamps.
 *
 * Histograms (tcp_connect_hist). A point written twice with the same series and timestamp replaces the
 * first in InfluxDB, so a window's histogram is never rewritten: at every flush, each (series, window)
 * that received events since the last flush gets one new point holding just those events (a delta),
 * stamped inside its window at
 *     window start + (run id mod R) * 1 ms + (flush number mod 1e6) ns,   R = window / 1 ms,
 * where the run id grows by one at every agent start (kept in the spool directory). Within a run the
 * flush number makes it unique; across restarts the run id does. A late event (a slow attempt reported
 * seconds after its SYN, or an imported capture) simply lands in a later delta of its own window, so
 * nothing is ever overwritten and the window's histogram is the SUM of its points (count, sum_ms,
 * syn_retrans and every bucket summed; min_ms/max_ms as min/max), which is how pkg/core's query
 * builders read it. Every event counts in the histogram, sampled or not. In memory a histogram waits at
 * most one flush interval, as raw points do, so a crash (SIGKILL) loses at most that much.
 *
 * Raw points (tcp_connect) are limited per host and per second of EVENT time (so an import is thinned only
 * where the capture itself was that dense): each second keeps a uniform reservoir sample of at most
 * `rawLimit` events; when a second had more, every kept point carries sample_weight = events / kept
 * (the weights of a second sum to its event count). A second's raw points are emitted once a newer
 * second has been seen or at the second flush after it started, whichever comes first.
 *
 * Unique timestamps: raw and session points never share a timestamp (host-wide, hence also per series): a
 * collision (text tools print coarse times; a capture may repeat) moves the later point by 1 ns until it
 * is free. Used timestamps are remembered for `dedupHorizonS` seconds of event time.
 */
import {
  connectPoint,
  Histogram,
  histPoint,
  sessionPoint,
  type Point,
  type SeriesTags,
} from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedConnect, EnrichedEvent, EnrichedSession } from '../types';

export interface AggregatorOptions {
  host: string;
  windowNs: bigint;
  /** Raw tcp_connect points per second of event time; 0 = unlimited. */
  rawLimit: number;
  /** Grows by one per agent start; places this run's histogram points inside their windows. */
  runId: number;
  dedupHorizonS?: number;
  random?: () => number;
}

interface HistCell {
  tags: SeriesTags;
  windowStartNs: bigint;
  hist: Histogram;
  synRetrans: number;
}

interface SecondSample {
  second: number;
  n: number;
  capacity: number;
  kept: EnrichedConnect[];
  /** ns within the second of each kept event (same index). */
  subs: number[];
  bornAtFlush: number;
}

const NS_PER_S = 1_000_000_000n;
const SLOT_NS = 1_000_000n;

export class Aggregator {
  private readonly hist = new Map<string, HistCell>();
  private readonly samples = new Map<number, SecondSample>();
  /** Raw points already emitted per second of event time (for the limit across late reservoirs). */
  private readonly emittedPerSecond = new Map<number, number>();
  private sessions: EnrichedSession[] = [];
  private newestSecond = -Infinity;
  private flushNo = 0;
  private readonly runSlotNs: bigint;
  private readonly windowMs: number;
  private readonly used = new Map<number, Set<number>>();
  private readonly horizon: number;
  private readonly random: () => number;
  /** Points moved by 1 ns (or more) because their series already had a point at that time. */
  collisions = 0;
  private pendingHistEvents = 0;
  private pendingRaw = 0;
  /** Events held in memory, not yet turned into points. */
  get pending(): number {
    return Math.max(this.pendingHistEvents, this.pendingRaw + this.sessions.length);
  }

  constructor(
    private readonly opts: AggregatorOptions,
    private readonly stage: StageCounters,
  ) {
    const runSlots = opts.windowNs / SLOT_NS > 0n ? opts.windowNs / SLOT_NS : 1n;
    this.runSlotNs = (BigInt(opts.runId) % runSlots) * SLOT_NS;
    if (opts.windowNs % SLOT_NS !== 0n) throw new RangeError('histogram window must be a whole number of milliseconds');
    this.windowMs = Number(opts.windowNs / SLOT_NS);
    this.horizon = opts.dedupHorizonS ?? 30;
    this.random = opts.random ?? Math.random;
  }

  add(ev: EnrichedEvent): void {
    this.stage.received.inc();
    if (ev.type === 'session') {
      this.sessions.push(ev);
      const sec = Number(ev.tsNs / NS_PER_S);
      if (sec > this.newestSecond) this.newestSecond = sec;
      return;
    }
    const ts = ev.tsNs;
    // Two bigint divisions per event; everything after is plain number math.
    const second = Number(ts / NS_PER_S);
    const sub = Number(ts % NS_PER_S);
    const windowIdx = Math.floor((second * 1000 + Math.floor(sub / 1e6)) / this.windowMs);
    const key = `${ev.service}\u0000${ev.dst}\u0000${ev.result}\u0000${windowIdx}`;
    let cell = this.hist.get(key);
    if (!cell) {
      cell = {
        tags: { host: this.opts.host, service: ev.service, dst: ev.dst, result: ev.result },
        windowStartNs: BigInt(windowIdx) * this.opts.windowNs,
        hist: new Histogram(),
        synRetrans: 0,
      };
      this.hist.set(key, cell);
    }
    cell.hist.add(ev.latencyNs / 1e6);
    cell.synRetrans += ev.synRetrans;
    this.pendingHistEvents++;

    if (second > this.newestSecond) this.newestSecond = second;
    let s = this.samples.get(second);
    if (!s) {
      const limit = this.opts.rawLimit;
      const capacity = limit <= 0 ? Infinity : Math.max(1, limit - (this.emittedPerSecond.get(second) ?? 0));
      s = { second, n: 0, capacity, kept: [], subs: [], bornAtFlush: this.flushNo };
      this.samples.set(second, s);
    }
    s.n++;
    if (s.kept.length < s.capacity) {
      s.kept.push(ev);
      s.subs.push(sub);
      this.pendingRaw++;
    } else {
      const j = Math.floor(this.random() * s.n);
      if (j < s.capacity) {
        s.kept[j] = ev;
        s.subs[j] = sub;
      }
      this.stage.drop('sampled_out');
    }
  }

  /**
   * Turn what is due into points: every histogram delta, the raw samples of finished seconds (all of them
   * when `final`), every session. Calls `emit` once per point.
   */
  flush(emit: (p: Point) => void, final = false): void {
    const flushNo = this.flushNo++;
    const offset = this.runSlotNs + BigInt(flushNo % 1_000_000);
    for (const cell of this.hist.values()) {
      emit(histPoint(cell.tags, cell.hist, cell.windowStartNs + offset, cell.synRetrans));
      this.stage.emitted.inc();
    }
    this.hist.clear();
    this.pendingHistEvents = 0;

    for (const [second, s] of this.samples) {
      if (!(final || second < this.newestSecond || s.bornAtFlush < flushNo)) continue;
      this.samples.delete(second);
      const weight = s.n > s.kept.length ? s.n / s.kept.length : undefined;
      const order = s.kept.map((_, i) => i).sort((a, b) => s.subs[a] - s.subs[b]);
      const base = BigInt(second) * NS_PER_S;
      for (const i of order) {
        const ev = s.kept[i];
        const sub = this.unique(second, s.subs[i]);
        emit(
          connectPoint({
            host: this.opts.host,
            service: ev.service,
            comm: ev.comm,
            dst: ev.dst,
            result: ev.result,
            family: ev.family,
            latencyMs: ev.latencyNs / 1e6,
            synRetrans: ev.synRetrans,
            pid: ev.pid,
            sport: ev.sport,
            errno: ev.errno,
            container: ev.container,
            sampleWeight: weight,
            timeNs: sub === s.subs[i] ? ev.tsNs : base + BigInt(sub),
          }),
        );
        this.stage.emitted.inc();
      }
      this.pendingRaw -= s.kept.length;
      this.emittedPerSecond.set(second, (this.emittedPerSecond.get(second) ?? 0) + s.kept.length);
    }

    const sessions = this.sessions;
    this.sessions = [];
    for (const ev of sessions) {
      const second = Number(ev.tsNs / NS_PER_S);
      const sub0 = Number(ev.tsNs % NS_PER_S);
      const sub = this.unique(second, sub0);
      const timeNs = sub === sub0 ? ev.tsNs : BigInt(second) * NS_PER_S + BigInt(sub);
      emit(
        sessionPoint({
          host: this.opts.host,
          service: ev.service,
          comm: ev.comm,
          dst: ev.dst,
          family: ev.family,
          lifespanMs: ev.lifespanMs,
          txKb: ev.txKb,
          rxKb: ev.rxKb,
          pid: ev.pid,
          sport: ev.sport,
          timeNs,
        }),
      );
      this.stage.emitted.inc();
    }
    this.prune();
  }

  /**
   * The ns-within-second itself, or the next free one (may exceed 1e9 - 1, which just means the next
   * second: the caller rebuilds the timestamp from second + sub). Timestamps are kept unique across the
   * whole host, which implies per series: cheaper (no series key per point) and the probe's timestamps
   * are host-unique already, so only coarse text-tool times ever move.
   */
  private unique(second: number, sub: number): number {
    for (;;) {
      const sec = second + Math.floor(sub / 1e9);
      const key = sub % 1e9;
      let set = this.used.get(sec);
      if (!set) {
        set = new Set();
        this.used.set(sec, set);
      }
      if (!set.has(key)) {
        set.add(key);
        return sub;
      }
      this.collisions++;
      sub++;
    }
  }

  private prune(): void {
    const oldest = this.newestSecond - this.horizon;
    for (const second of this.used.keys()) if (second < oldest) this.used.delete(second);
    for (const second of this.emittedPerSecond.keys()) if (second < oldest) this.emittedPerSecond.delete(second);
  }
}
