/**
 * One second (of event time) of raw connect events waiting to become tcp_connect points (or of TLS
 * handshakes waiting to become tls_handshake points: offerTls): a uniform reservoir of at most `capacity`
 * events, kept column by column.
 *
 * Why columns: at 30k+ events/s a second's events live until the flush after it, long enough for V8's
 * young-generation collector to copy them (twice, when promoted). Keeping the events themselves (the
 * parser's object, its address and cgroup strings, a bigint) made that copying the agent's largest cost.
 * Here an event leaves behind a few numbers in number arrays and references to strings the enricher
 * already shares (service, dst, comm); the event object itself dies young.
 */
import type { ConnectResult, Family, TlsResult } from '@tcplat/core';
import type { EnrichedConnect, EnrichedTls } from '../types';

export class SecondSample {
  /** Events seen in this second (kept or not). */
  n = 0;
  /** ns within the second, per kept event. */
  readonly subs: number[] = [];
  readonly latencyNs: number[] = [];
  readonly synRetrans: number[] = [];
  readonly pid: number[] = [];
  readonly sport: number[] = [];
  readonly errno: number[] = [];
  readonly service: string[] = [];
  readonly dst: string[] = [];
  readonly comm: string[] = [];
  readonly result: (ConnectResult | TlsResult)[] = [];
  /** '' for a TLS handshake whose socket the probe did not see. */
  readonly family: (Family | '')[] = [];
  /** Container labels, only once an event had one (most hosts have none). */
  container: (string | undefined)[] | null = null;
  /** Thread names, only once an event had one (probe v2). */
  thread: (string | undefined)[] | null = null;
  /** TLS handshakes only: the library the probe hooked. */
  lib: string[] | null = null;

  private state: number;
  /**
   * A PRNG seeded by the second (mulberry32): the same events in the same order keep the same sample,
   * so importing a capture again writes the same raw points.
   */
  readonly seeded = (): number => {
    let t = (this.state = (this.state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  constructor(
    readonly second: number,
    readonly capacity: number,
    readonly bornAtFlush: number,
  ) {
    this.state = second | 0;
  }

  get kept(): number {
    return this.subs.length;
  }

  /**
   * Count one event and keep it if the reservoir has room, else in place of a random kept one with the
   * probability that keeps the sample uniform (reservoir sampling).
   */
  offer(ev: EnrichedConnect, sub: number, random: () => number): void {
    const i = this.slot(random);
    if (i < 0) return;
    this.subs[i] = sub;
    this.latencyNs[i] = ev.latencyNs;
    this.synRetrans[i] = ev.synRetrans;
    this.pid[i] = ev.pid;
    this.sport[i] = ev.sport;
    this.errno[i] = ev.errno;
    this.service[i] = ev.service;
    this.dst[i] = ev.dst;
    this.comm[i] = ev.comm;
    this.result[i] = ev.result;
    this.family[i] = ev.family;
    if (ev.container !== undefined || this.container) (this.container ??= new Array<string | undefined>(this.subs.length))[i] = ev.container;
    if (ev.thread !== undefined || this.thread) (this.thread ??= new Array<string | undefined>(this.subs.length))[i] = ev.thread;
  }

  /** The same for a TLS handshake (no SYN retransmits, source port or errno: zeros in those columns). */
  offerTls(ev: EnrichedTls, sub: number, random: () => number): void {
    const i = this.slot(random);
    if (i < 0) return;
    this.subs[i] = sub;
    this.latencyNs[i] = ev.latencyNs;
    this.synRetrans[i] = 0;
    this.pid[i] = ev.pid;
    this.sport[i] = ev.socket?.sport ?? 0;
    this.errno[i] = 0;
    this.service[i] = ev.service;
    this.dst[i] = ev.dst;
    this.comm[i] = ev.comm;
    this.result[i] = ev.result;
    this.family[i] = ev.socket?.family ?? '';
    (this.lib ??= [])[i] = ev.lib;
    if (ev.container !== undefined || this.container) (this.container ??= new Array<string | undefined>(this.subs.length))[i] = ev.container;
    if (ev.thread !== undefined || this.thread) (this.thread ??= new Array<string | undefined>(this.subs.length))[i] = ev.thread;
  }

  /** Count one event; the index to keep it at (a free one, or a kept one it replaces), -1 when it is not kept. */
  private slot(random: () => number): number {
    this.n++;
    const i = this.subs.length;
    if (i < this.capacity) return i;
    const r = Math.floor(random() * this.n);
    return r < this.capacity ? r : -1;
  }

  /** Indexes of the kept events in time order (stable), or null when they already are in order. */
  timeOrder(): number[] | null {
    const subs = this.subs;
    for (let i = 1; i < subs.length; i++) {
      if (subs[i - 1] > subs[i]) return subs.map((_, k) => k).sort((a, b) => subs[a] - subs[b]);
    }
    return null;
  }
}
