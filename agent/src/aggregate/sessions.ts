/**
 * Aggregate stage, close events (the probe's `close` lines, issue 15): rate-limited raw tcp_session points
 * and exact tcp_session_hist lifespan histograms per window, with per-window counts of retransmits and
 * resets per series. Driven by the Aggregator (aggregator.ts), which hands it the time offset of each flush
 * so that both histogram measurements place their deltas the same way (see the Aggregator's comment).
 *
 * Histograms: one cell per (service, dst, window), the window being the one the connection CLOSED in
 * (ts_ns + lifespan): a window counts the connections that ended in it. Each flush emits one delta point
 * per cell that received events since the last flush; a window's histogram is the sum of its points.
 *
 * Raw points: the same limit as tcp_connect, per second of event time (the SYN's second, which is the
 * point's time: the join key with the tcp_connect point): a uniform reservoir of at most `rawLimit` per
 * second; when a second had more, every kept point carries sample_weight = events / kept. Timestamps are
 * kept unique among close events (their own UsedTimes: a close shares its ts_ns with its connect point, in
 * another measurement, and must not be moved off it).
 */
import { SESSION_BUCKET_COUNT, sessionBucketIndex, sessionHistPoint, sessionPoint, type Point, type SessionHistInput } from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedClose } from '../types';
import { UsedTimes } from './used-times';

const NS_PER_S = 1_000_000_000n;

interface Cell extends SessionHistInput {
  windowStartNs: bigint;
  buckets: number[];
}

interface SecondReservoir {
  n: number;
  kept: EnrichedClose[];
  bornAtFlush: number;
  state: number;
}

export interface CloseAggregatorOptions {
  host: string;
  windowNs: bigint;
  /** Raw tcp_session points per second of event time; 0 = unlimited. */
  rawLimit: number;
  /** Import mode: a PRNG seeded by the second, so an import writes the same sample again. */
  deterministic: boolean;
  random?: () => number;
}

/** mulberry32 step on a reservoir's state (the same generator as sample.ts). */
function seeded(r: SecondReservoir): number {
  let t = (r.state = (r.state + 0x6d2b79f5) | 0);
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

export class CloseAggregator {
  private readonly cells = new Map<string, Map<string, Map<bigint, Cell>>>();
  private readonly seconds = new Map<number, SecondReservoir>();
  private readonly emittedPerSecond = new Map<number, number>();
  private readonly used = new UsedTimes();
  private newestSecond = -Infinity;
  private pendingHist = 0;
  private pendingRaw = 0;
  private flushes = 0;
  /** Raw points older than the timestamp memory, written unchecked. */
  unchecked = 0;

  constructor(
    private readonly opts: CloseAggregatorOptions,
    private readonly stage: StageCounters,
  ) {}

  /** Close events held in memory, not yet turned into points. */
  get pending(): number {
    return Math.max(this.pendingHist, this.pendingRaw);
  }

  add(ev: EnrichedClose): void {
    const lifespanMs = ev.lifespanNs / 1e6;
    const windowStartNs = ((ev.tsNs + BigInt(ev.lifespanNs)) / this.opts.windowNs) * this.opts.windowNs;
    let byDst = this.cells.get(ev.service);
    if (!byDst) this.cells.set(ev.service, (byDst = new Map()));
    let byWindow = byDst.get(ev.dst);
    if (!byWindow) byDst.set(ev.dst, (byWindow = new Map()));
    let c = byWindow.get(windowStartNs);
    if (!c) {
      c = { windowStartNs, count: 0, sumMs: 0, minMs: Infinity, maxMs: -Infinity, buckets: new Array<number>(SESSION_BUCKET_COUNT).fill(0), retrans: 0, resetsIn: 0, resetsOut: 0 };
      byWindow.set(windowStartNs, c);
    }
    c.count++;
    c.sumMs += lifespanMs;
    if (lifespanMs < c.minMs) c.minMs = lifespanMs;
    if (lifespanMs > c.maxMs) c.maxMs = lifespanMs;
    c.buckets[sessionBucketIndex(lifespanMs)]++;
    c.retrans += ev.retrans;
    if (ev.closedBy === 'reset_in') c.resetsIn++;
    else if (ev.closedBy === 'reset_out') c.resetsOut++;
    if (ev.zeroWindows !== undefined) c.zeroWindows = (c.zeroWindows ?? 0) + ev.zeroWindows;
    this.pendingHist++;

    const second = Number(ev.tsNs / NS_PER_S);
    if (second > this.newestSecond) this.newestSecond = second;
    let r = this.seconds.get(second);
    if (!r) {
      r = { n: 0, kept: [], bornAtFlush: this.flushes, state: second | 0 };
      this.seconds.set(second, r);
    }
    const limit = this.opts.rawLimit;
    const capacity = limit <= 0 ? Infinity : Math.max(1, limit - (this.emittedPerSecond.get(second) ?? 0));
    r.n++;
    if (r.kept.length < capacity) {
      r.kept.push(ev);
      this.pendingRaw++;
      return;
    }
    // Reservoir sampling: the n-th event replaces a kept one with probability capacity / n.
    const j = Math.floor((this.opts.deterministic ? seeded(r) : (this.opts.random ?? Math.random)()) * r.n);
    if (j < r.kept.length) r.kept[j] = ev;
    this.stage.drop('sampled_out');
  }

  /** Emit every histogram delta (at `offsetNs` past its window's start) and the raw samples that are due. */
  flush(emit: (p: Point) => void, offsetNs: bigint, final: boolean): void {
    const flushNo = this.flushes++;
    for (const [service, byDst] of this.cells) {
      for (const [dst, byWindow] of byDst) {
        for (const c of byWindow.values()) {
          emit(sessionHistPoint({ host: this.opts.host, service, dst }, c, c.windowStartNs + offsetNs));
          this.stage.emitted.inc();
        }
      }
    }
    this.cells.clear();
    this.pendingHist = 0;

    for (const [second, r] of this.seconds) {
      if (!(final || second < this.newestSecond || r.bornAtFlush < flushNo)) continue;
      this.seconds.delete(second);
      const kept = r.kept.length;
      const weight = r.n > kept ? r.n / kept : undefined;
      if (second < this.used.oldest) this.unchecked += kept;
      r.kept.sort((a, b) => (a.tsNs < b.tsNs ? -1 : a.tsNs > b.tsNs ? 1 : 0));
      for (const ev of r.kept) {
        const sub0 = Number(ev.tsNs % NS_PER_S);
        const sub = this.used.claim(second, sub0);
        emit(
          sessionPoint({
            host: this.opts.host,
            service: ev.service,
            comm: ev.comm,
            dst: ev.dst,
            family: ev.family,
            closedBy: ev.closedBy,
            lifespanMs: ev.lifespanNs / 1e6,
            bytesSent: ev.bytesSent,
            bytesReceived: ev.bytesReceived,
            retrans: ev.retrans,
            srttMs: ev.srttUs / 1000,
            zeroWindows: ev.zeroWindows,
            pid: ev.pid,
            sport: ev.sport,
            thread: ev.thread,
            container: ev.container,
            sampleWeight: weight,
            timeNs: sub === sub0 ? ev.tsNs : BigInt(second) * NS_PER_S + BigInt(sub),
          }),
        );
        this.stage.emitted.inc();
      }
      this.pendingRaw -= kept;
      this.emittedPerSecond.set(second, (this.emittedPerSecond.get(second) ?? 0) + kept);
    }
    const oldest = this.newestSecond - 300;
    this.used.prune(oldest);
    for (const second of this.emittedPerSecond.keys()) if (second < oldest) this.emittedPerSecond.delete(second);
  }
}
