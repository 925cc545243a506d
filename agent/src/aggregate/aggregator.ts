/**
 * Aggregate stage: exact histograms per window of event time, rate-limited raw points, sessions, and
 * unique timestamps.
 *
 * Histograms (tcp_connect_hist). A point written twice with the same series and timestamp replaces the
 * first in InfluxDB, so a window's histogram is never rewritten: at every flush, each (series, window)
 * that received events since the last flush gets one new point holding just those events (a delta). A
 * late event (a slow attempt reported seconds after its SYN, or an imported capture) simply lands in a
 * later delta of its own window, so the window's histogram is the SUM of its points (count, sum_ms,
 * syn_retrans and every bucket summed; min_ms/max_ms as min/max), which is how pkg/core's query builders
 * read it. Every event counts in the histogram, sampled or not. Each delta is stamped inside its window,
 * 1 ms slot + flush number (mod 1e6) ns after the window's start; the slot depends on the mode:
 *
 * - live (the default): slot 1 + (run id mod (R - 1)), R = window / 1 ms, where the run id grows by one at
 *   every agent start (kept in the spool directory). Within a run the flush number makes a delta unique,
 *   across restarts the run id does. In memory a histogram waits at most one flush interval, as raw points
 *   do, so a crash (SIGKILL) loses at most that much.
 * - import (`importEvery`, for --once): slot 0, and the aggregator flushes only every `importEvery` events
 *   it received and at the final flush (a flush asked for by a timer in between does nothing). So which
 *   events form which delta, and each delta's flush number, depend only on the capture: importing it
 *   again (or again after an import was killed) writes the very same points at the very same times, and
 *   they overwrite themselves instead of adding up. Raw points are deterministic the same way (their
 *   sampling too: a PRNG seeded by the second), so both measurements keep the capture's counts.
 *
 * Raw points (tcp_connect) are limited per host and per second of EVENT time (so an import is thinned only
 * where the capture itself was that dense): each second keeps a uniform reservoir sample of at most
 * `rawLimit` events; when a second had more, every kept point carries sample_weight = events / kept
 * (the weights of a second sum to its event count). A second's raw points are emitted once a newer
 * second has been seen or at the second flush after it started, whichever comes first.
 *
 * Unique timestamps: raw and session points never share a timestamp (host-wide, hence also per series): a
 * collision (text tools print coarse times; a capture may repeat a line) moves the later point by 1 ns
 * until it is free. Used timestamps are remembered for `dedupHorizonS` (default 300 s, more than the
 * kernel's longest SYN timeout, ~127 s) of event time (UsedTimes). An event older than that can no longer
 * be checked: it is written at its own time and counted (tcplat_raw_unchecked_total), never silently.
 *
 * TLS handshakes (the probe's `tls` lines, issue 16) take the same path in an Aggregator of their own
 * (`kind: 'tls'`): tls_handshake_hist is tcp_connect_hist's schema under another name (syn_retrans 0), and
 * tls_handshake raw points have the same limit, sampling and unique timestamps as tcp_connect points (their
 * own UsedTimes: another measurement). Its own instance keeps the TLS results (`ok` included) apart from the
 * connect series, and leaves the connect path as it was.
 *
 * Cost: this stage sees every event, so it builds no key strings (series are nested maps of the strings
 * the enricher shares) and keeps a second's raw events as columns (SecondSample), not as event objects;
 * raw points leave as connectLine's values, not as Point objects.
 */
import { Histogram, histPoint, MEASUREMENT, sessionPoint, tlsPoint, type ConnectLineInput, type ConnectResult, type Family, type Point, type SeriesTags, type TlsResult } from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedConnect, EnrichedEvent, EnrichedHist, EnrichedSession, EnrichedTls } from '../types';
import type { SeriesBudget } from './budget';
import { SecondSample } from './sample';
import { CloseAggregator } from './sessions';
import { UsedTimes } from './used-times';

/**
 * A raw tcp_connect point as the encode stage takes it: the values of pkg/core's connectLine, which
 * writes the line directly (one per kept event: the hot path builds no Point, tag or field objects).
 */
export interface RawConnect extends ConnectLineInput {
  raw: true;
}

/** What a flush hands on to the encode stage. */
export type Emitted = Point | RawConnect;

export interface AggregatorOptions {
  host: string;
  windowNs: bigint;
  /** Raw tcp_connect points per second of event time; 0 = unlimited. */
  rawLimit: number;
  /** Grows by one per agent start; places this run's histogram points inside their windows (live mode). */
  runId: number;
  /** Import mode (--once): flush only every this many events received, and at the final flush. */
  importEvery?: number;
  dedupHorizonS?: number;
  random?: () => number;
  /** The cardinality budget every emitted point passes (budget.ts); none: every series is written. */
  budget?: SeriesBudget;
  /** What this aggregator takes: connect events (and sessions, closes, probe histograms), or TLS handshakes only. */
  kind?: 'connect' | 'tls';
}

interface HistCell {
  windowStartNs: bigint;
  hist: Histogram;
  synRetrans: number;
}

/** One histogram series (service, dst, result) and its windows that received events since the last flush. */
interface Series {
  tags: SeriesTags<ConnectResult | TlsResult>;
  cells: Map<number, HistCell>;
  /** The window the last event went to (events mostly arrive in time order). */
  lastWindow: number;
  lastCell: HistCell | null;
}


const NS_PER_S = 1_000_000_000n;

/** Unix ns as a decimal string from a second and ns within it (which may reach past the second). */
function nsText(second: number, sub: number): string {
  const sec = second + Math.floor(sub / 1e9);
  const rest = String(sub % 1e9);
  return sec === 0 ? rest : sec + '000000000'.slice(rest.length) + rest;
}
const SLOT_NS = 1_000_000n;

export class Aggregator {
  /** service -> dst -> result -> series: nested maps of the strings the events carry, no key to build per event. */
  private readonly series = new Map<string, Map<string, Map<string, Series>>>();
  private readonly samples = new Map<number, SecondSample>();
  /** Raw points already emitted per second of event time (for the limit across late reservoirs). */
  private readonly emittedPerSecond = new Map<number, number>();
  private sessions: EnrichedSession[] = [];
  /** The probe's close events: tcp_session points and tcp_session_hist (sessions.ts). */
  private readonly closes: CloseAggregator;
  private newestSecond = -Infinity;
  private flushNo = 0;
  private readonly runSlotNs: bigint;
  private readonly windowMs: number;
  private readonly used = new UsedTimes();
  private readonly horizon: number;
  private readonly random: (() => number) | null;
  private readonly tls: boolean;
  /** Events received since the last flush that emitted (import mode). */
  private sinceFlush = 0;
  /** 1 ns moves made to keep raw and session timestamps unique (a point moved by 3 ns counts 3). */
  get collisions(): number {
    return this.used.moves;
  }
  /** Raw and session points older than the timestamp memory: written unchecked (see the module comment). */
  private uncheckedOwn = 0;
  get unchecked(): number {
    return this.uncheckedOwn + this.closes.unchecked;
  }
  private pendingHistEvents = 0;
  private pendingRaw = 0;
  /**
   * Events held in memory, not yet turned into points. In import mode: the events received since the last
   * flush, so that a caller flushing at `importEvery` pending events flushes exactly at each epoch.
   */
  get pending(): number {
    if (this.opts.importEvery !== undefined) return this.sinceFlush;
    return Math.max(this.pendingHistEvents, this.pendingRaw + this.sessions.length) + this.closes.pending;
  }

  constructor(
    private readonly opts: AggregatorOptions,
    private readonly stage: StageCounters,
  ) {
    if (opts.windowNs % SLOT_NS !== 0n || opts.windowNs < 2n * SLOT_NS) throw new RangeError('histogram window must be a whole number of milliseconds, at least 2');
    const runSlots = opts.windowNs / SLOT_NS - 1n;
    // Slot 0 belongs to imports; live runs take slots 1..R-1 by run id.
    this.runSlotNs = opts.importEvery !== undefined ? 0n : (1n + (BigInt(opts.runId) % runSlots)) * SLOT_NS;
    this.windowMs = Number(opts.windowNs / SLOT_NS);
    this.horizon = opts.dedupHorizonS ?? 300;
    this.random = opts.random ?? (opts.importEvery !== undefined ? null : Math.random);
    this.tls = opts.kind === 'tls';
    this.closes = new CloseAggregator(
      { host: opts.host, windowNs: opts.windowNs, rawLimit: opts.rawLimit, deterministic: opts.importEvery !== undefined, random: opts.random },
      stage,
    );
  }

  add(ev: EnrichedEvent): void {
    this.stage.received.inc();
    this.sinceFlush++;
    if (ev.type === 'session') {
      this.sessions.push(ev);
      const sec = Number(ev.tsNs / NS_PER_S);
      if (sec > this.newestSecond) this.newestSecond = sec;
      return;
    }
    if (ev.type === 'hist') {
      this.addHist(ev);
      return;
    }
    if (ev.type === 'close') {
      this.closes.add(ev);
      return;
    }
    if (ev.type === 'tls') {
      this.addTls(ev);
      return;
    }
    const ts = ev.tsNs;
    // Two bigint divisions per event; everything after is plain number math.
    const second = Number(ts / NS_PER_S);
    const sub = Number(ts % NS_PER_S);
    const cell = this.cellOf(this.seriesOf(ev), second, sub);
    cell.hist.add(ev.latencyNs / 1e6);
    cell.synRetrans += ev.synRetrans;
    this.pendingHistEvents++;

    const s = this.sampleOf(second);
    const before = s.kept;
    s.offer(ev, sub, this.random ?? s.seeded);
    this.offered(s, before);
  }

  /** A TLS handshake: the connect path without SYN retransmits (tls_handshake_hist, tls_handshake). */
  private addTls(ev: EnrichedTls): void {
    if (!this.tls) throw new Error('a TLS handshake reached the connect aggregator');
    const second = Number(ev.tsNs / NS_PER_S);
    const sub = Number(ev.tsNs % NS_PER_S);
    this.cellOf(this.seriesOf(ev), second, sub).hist.add(ev.latencyNs / 1e6);
    this.pendingHistEvents++;
    const s = this.sampleOf(second);
    const before = s.kept;
    s.offerTls(ev, sub, this.random ?? s.seeded);
    this.offered(s, before);
  }

  /** The histogram cell of the window holding (second, sub ns) in `series`. */
  private cellOf(series: Series, second: number, sub: number): HistCell {
    const windowIdx = Math.floor((second * 1000 + Math.floor(sub / 1e6)) / this.windowMs);
    let cell = series.lastWindow === windowIdx ? series.lastCell : series.cells.get(windowIdx);
    if (!cell) {
      cell = { windowStartNs: BigInt(windowIdx) * this.opts.windowNs, hist: new Histogram(), synRetrans: 0 };
      series.cells.set(windowIdx, cell);
    }
    series.lastWindow = windowIdx;
    series.lastCell = cell;
    return cell;
  }

  /** The raw-point reservoir of one second of event time. */
  private sampleOf(second: number): SecondSample {
    if (second > this.newestSecond) this.newestSecond = second;
    let s = this.samples.get(second);
    if (!s) {
      const limit = this.opts.rawLimit;
      const capacity = limit <= 0 ? Infinity : Math.max(1, limit - (this.emittedPerSecond.get(second) ?? 0));
      s = new SecondSample(second, capacity, this.flushNo);
      this.samples.set(second, s);
    }
    return s;
  }

  private offered(s: SecondSample, keptBefore: number): void {
    // Beyond the limit an event is sampled out, or takes the place of an earlier one: one fewer either way.
    if (s.kept > keptBefore) this.pendingRaw++;
    else this.stage.drop('sampled_out');
  }

  /**
   * A probe histogram (--probe-mode hist): merged whole into the window that holds the middle of the probe's
   * window (the probe closes its windows when it swaps its maps, not on window boundaries: at most half a
   * window early or late). Exact counts; no raw points (there are no attempts).
   */
  private addHist(ev: EnrichedHist): void {
    const windowIdx = Number((ev.tsNs + (ev.endNs - ev.tsNs) / 2n) / this.opts.windowNs);
    const series = this.seriesOf(ev);
    let cell = series.cells.get(windowIdx);
    if (!cell) {
      cell = { windowStartNs: BigInt(windowIdx) * this.opts.windowNs, hist: new Histogram(), synRetrans: 0 };
      series.cells.set(windowIdx, cell);
    }
    cell.hist.merge(ev.hist);
    cell.synRetrans += ev.synRetrans;
    this.pendingHistEvents += ev.hist.count;
  }

  private seriesOf(ev: { service: string; dst: string; result: ConnectResult | TlsResult }): Series {
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
  flush(emitOut: (p: Emitted) => void, final = false): void {
    // Import mode: only the capture decides where deltas start and end (see the module comment).
    if (this.opts.importEvery !== undefined && !final && this.sinceFlush < this.opts.importEvery) return;
    // Every point passes the cardinality budget (folded series are relabelled `other`, histogram deltas merged).
    const budget = this.opts.budget;
    const emit = budget ? budget.begin(emitOut, this.newestSecond) : emitOut;
    this.sinceFlush = 0;
    const flushNo = this.flushNo++;
    const offset = this.runSlotNs + BigInt(flushNo % 1_000_000);
    for (const byDst of this.series.values()) {
      for (const byResult of byDst.values()) {
        for (const series of byResult.values()) {
          for (const cell of series.cells.values()) {
            emit(histPoint(series.tags, cell.hist, cell.windowStartNs + offset, cell.synRetrans, this.tls ? MEASUREMENT.tlsHist : MEASUREMENT.connectHist));
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
      const kept = s.kept;
      const weight = s.n > kept ? s.n / kept : undefined;
      const order = s.timeOrder();
      const subs = order ? order.map((i) => s.subs[i]) : s.subs;
      if (second < this.used.oldest) this.uncheckedOwn += kept;
      const claimed = this.used.claimSorted(second, subs);
      const host = this.opts.host;
      for (let k = 0; k < kept; k++) {
        const i = order ? order[k] : k;
        if (this.tls) {
          emit(
            tlsPoint({
              host,
              service: s.service[i],
              comm: s.comm[i],
              dst: s.dst[i],
              result: s.result[i] as TlsResult,
              family: s.family[i],
              latencyNs: s.latencyNs[i],
              pid: s.pid[i],
              lib: s.lib![i],
              container: s.container?.[i],
              thread: s.thread?.[i],
              sampleWeight: weight,
              timeNs: nsText(second, claimed[k]),
            }),
          );
          this.stage.emitted.inc();
          continue;
        }
        emit({
          raw: true,
          host,
          service: s.service[i],
          comm: s.comm[i],
          dst: s.dst[i],
          result: s.result[i] as ConnectResult,
          family: s.family[i] as Family,
          latencyNs: s.latencyNs[i],
          synRetrans: s.synRetrans[i],
          pid: s.pid[i],
          sport: s.sport[i],
          errno: s.errno[i],
          container: s.container?.[i],
          thread: s.thread?.[i],
          sampleWeight: weight,
          timeNs: nsText(second, claimed[k]),
        });
        this.stage.emitted.inc();
      }
      this.pendingRaw -= kept;
      this.emittedPerSecond.set(second, (this.emittedPerSecond.get(second) ?? 0) + kept);
    }

    const sessions = this.sessions;
    this.sessions = [];
    for (const ev of sessions) {
      const second = Number(ev.tsNs / NS_PER_S);
      const sub0 = Number(ev.tsNs % NS_PER_S);
      if (second < this.used.oldest) this.uncheckedOwn++;
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
    this.closes.flush(emit, offset, final);
    budget?.end(emitOut);
    this.prune();
  }

  private prune(): void {
    const oldest = this.newestSecond - this.horizon;
    this.used.prune(oldest);
    for (const second of this.emittedPerSecond.keys()) if (second < oldest) this.emittedPerSecond.delete(second);
  }
}
