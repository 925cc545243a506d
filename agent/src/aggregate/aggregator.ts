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
import { connectLine, connectPoint, Histogram, histPoint, sessionPoint, type Point, type SeriesTags } from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedConnect, EnrichedEvent, EnrichedSession } from '../types';
import { UsedTimes } from './used-times';

/**
 * What a flush hands on: a point to encode, or a line already encoded (the raw tcp_connect points, one
 * per kept event, are written straight to line protocol by pkg/core's connectLine: no point objects on
 * the hot path).
 */
export type Emitted = Point | string;

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
  windowStartNs: bigint;
  hist: Histogram;
  synRetrans: number;
}

/** One histogram series (service, dst, result) and its windows that received events since the last flush. */
interface Series {
  tags: SeriesTags;
  cells: Map<number, HistCell>;
  /** The window the last event went to (events mostly arrive in time order). */
  lastWindow: number;
  lastCell: HistCell | null;
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
  /** service -> dst -> result -> series: nested maps of the strings the events carry, no key to build per event. */
  private readonly series = new Map<string, Map<string, Map<string, Series>>>();
  private readonly samples = new Map<number, SecondSample>();
  /** Raw points already emitted per second of event time (for the limit across late reservoirs). */
  private readonly emittedPerSecond = new Map<number, number>();
  private sessions: EnrichedSession[] = [];
  private newestSecond = -Infinity;
  private flushNo = 0;
  private readonly runSlotNs: bigint;
  private readonly windowMs: number;
  private readonly used = new UsedTimes();
  private readonly horizon: number;
  private readonly random: () => number;
  /** 1 ns moves made to keep raw and session timestamps unique (a point moved by 3 ns counts 3). */
  get collisions(): number {
    return this.used.moves;
  }
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
    const series = this.seriesOf(ev);
    let cell = series.lastWindow === windowIdx ? series.lastCell : series.cells.get(windowIdx);
    if (!cell) {
      cell = { windowStartNs: BigInt(windowIdx) * this.opts.windowNs, hist: new Histogram(), synRetrans: 0 };
      series.cells.set(windowIdx, cell);
    }
    series.lastWindow = windowIdx;
    series.lastCell = cell;
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

  private seriesOf(ev: EnrichedConnect): Series {
    let byDst = this.series.get(ev.service);
    if (!byDst) {
      byDst = new Map();
      this.series.set(ev.service, byDst);
    }
    let byResult = byDst.get(ev.dst);
    if (!byResult) {
      byResult = new Map();
      byDst.set(ev.dst, byResult);
    }
    let series = byResult.get(ev.result);
    if (!series) {
      series = { tags: { host: this.opts.host, service: ev.service, dst: ev.dst, result: ev.result }, cells: new Map(), lastWindow: NaN, lastCell: null };
      byResult.set(ev.result, series);
    }
    return series;
  }

  /**
   * Turn what is due into points: every histogram delta, the raw samples of finished seconds (all of them
   * when `final`), every session. Calls `emit` once per point: raw connect points come already encoded.
   */
  flush(emit: (p: Emitted) => void, final = false): void {
    const flushNo = this.flushNo++;
    const offset = this.runSlotNs + BigInt(flushNo % 1_000_000);
    for (const byDst of this.series.values()) {
      for (const byResult of byDst.values()) {
        for (const series of byResult.values()) {
          for (const cell of series.cells.values()) {
            emit(histPoint(series.tags, cell.hist, cell.windowStartNs + offset, cell.synRetrans));
            this.stage.emitted.inc();
          }
        }
      }
    }
    // Series are rebuilt by the next events: a destination that went quiet leaves nothing behind.
    this.series.clear();
    this.pendingHistEvents = 0;

    for (const [second, s] of this.samples) {
      if (!(final || second < this.newestSecond || s.bornAtFlush < flushNo)) continue;
      this.samples.delete(second);
      const weight = s.n > s.kept.length ? s.n / s.kept.length : undefined;
      let { kept, subs } = s;
      // In time order (the probe's events nearly always arrive so: sort only when they did not).
      let sorted = true;
      for (let i = 1; i < subs.length && sorted; i++) sorted = subs[i - 1] <= subs[i];
      if (!sorted) {
        const order = kept.map((_, i) => i).sort((a, b) => s.subs[a] - s.subs[b]);
        kept = order.map((i) => s.kept[i]);
        subs = order.map((i) => s.subs[i]);
      }
      const claimed = this.used.claimSorted(second, subs);
      const base = BigInt(second) * NS_PER_S;
      const host = this.opts.host;
      for (let i = 0; i < kept.length; i++) {
        const ev = kept[i];
        const input = {
            host,
            service: ev.service,
            comm: ev.comm,
            dst: ev.dst,
            result: ev.result,
            family: ev.family,
            latencyNs: ev.latencyNs,
            synRetrans: ev.synRetrans,
            pid: ev.pid,
            sport: ev.sport,
            errno: ev.errno,
            container: ev.container,
            sampleWeight: weight,
            timeNs: claimed[i] === subs[i] ? ev.tsNs : base + BigInt(claimed[i]),
        };
        let line: string | null = null;
        try {
          line = connectLine(input);
        } catch {
          // Not encodable (say, a text tool's NaN): hand on the point, for the encode stage to count and log.
        }
        emit(line ?? connectPoint({ ...input, latencyMs: input.latencyNs / 1e6 }));
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
      const sub = this.used.claim(second, sub0);
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

  private prune(): void {
    const oldest = this.newestSecond - this.horizon;
    this.used.prune(oldest);
    for (const second of this.emittedPerSecond.keys()) if (second < oldest) this.emittedPerSecond.delete(second);
  }
}
