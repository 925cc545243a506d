/**
 * Which tcplife sessions this host opened (outbound: stored, `dst` = the server) and which it accepted
 * (inbound: dropped as `inbound_session`, since their remote port is a client's ephemeral port, an
 * unbounded tag value). tcplife prints both ends of a loopback connection, and its PID is best effort.
 *
 * Evidence, strongest first:
 * 1. live: the local port listens in the network namespace of the row's process (/proc/PID/net/tcp);
 * 2. the capture itself: a listening endpoint meets many peers (each client comes from a new ephemeral
 *    port) while an ephemeral endpoint meets one. The endpoint of a row that has met more distinct peers so
 *    far is the listener;
 * 3. port ranges, when exactly one port is in the ephemeral range (32768..60999, Linux's default) — the
 *    other is the listener.
 * A row with no evidence yet (the first connection to a listener whose port is in the ephemeral range, as
 * both ends of a loopback test are) is held until evidence comes (a second connection), for at most
 * `maxRows` later rows or `maxHeldMs`, or the end of an import; then, if both ends are held, the lower port
 * is taken as the listener, and a lone row as opened by this host; either way counted as a guess.
 */
import type { SessionEvent } from '../types';

const EPHEMERAL_MIN = 32768;
const EPHEMERAL_MAX = 60999;
/** Peers counted per endpoint: comparing small counts is all the decision needs. */
const PEERS_CAP = 8;

export interface Decided {
  ev: SessionEvent;
  inbound: boolean;
  /** Decided by the last resort (lower port = listener), not by evidence. */
  guessed: boolean;
}

interface Held {
  ev: SessionEvent;
  l: string;
  r: string;
  seq: number;
  at: number;
}

function ephemeral(port: number): boolean {
  return port >= EPHEMERAL_MIN && port <= EPHEMERAL_MAX;
}

export class SessionDirection {
  private readonly peers = new Map<string, Set<string>>();
  private held: Held[] = [];
  private seq = 0;
  guesses = 0;

  constructor(
    private readonly opts: { maxRows?: number; maxHeld?: number; maxHeldMs?: number; now?: () => number } = {},
  ) {}

  get heldCount(): number {
    return this.held.length;
  }

  private meet(a: string, b: string): void {
    let s = this.peers.get(a);
    if (!s) {
      if (this.peers.size >= 200_000) this.peers.clear();
      s = new Set();
      this.peers.set(a, s);
    }
    if (s.size < PEERS_CAP) s.add(b);
  }

  private score(endpoint: string): number {
    return this.peers.get(endpoint)?.size ?? 0;
  }

  /** Inbound (true), outbound (false), or undefined while the capture has no evidence either way. */
  private byEvidence(h: { ev: SessionEvent; l: string; r: string }): boolean | undefined {
    const sl = this.score(h.l);
    const sr = this.score(h.r);
    if (sl !== sr) return sl > sr;
    const le = ephemeral(h.ev.sport);
    const re = ephemeral(h.ev.dport);
    if (le !== re) return re;
    return undefined;
  }

  /**
   * One session row. `listening`: whether its local port listens in its process's network namespace
   * (live), undefined when unknown (imports, or the process is gone). Returns the rows decided now: this
   * one, and held ones the new evidence settles.
   */
  offer(ev: SessionEvent, listening?: boolean): Decided[] {
    const l = `${ev.saddr}|${ev.sport}`;
    const r = `${ev.daddr}|${ev.dport}`;
    this.meet(l, r);
    this.meet(r, l);
    const now = this.opts.now?.() ?? Date.now();
    const out: Decided[] = [];
    const seq = this.seq++;
    if (listening === true) out.push({ ev, inbound: true, guessed: false });
    else {
      const v = this.byEvidence({ ev, l, r });
      if (v !== undefined) out.push({ ev, inbound: v, guessed: false });
      else if (listening === false) out.push({ ev, inbound: false, guessed: false });
      else this.held.push({ ev, l, r, seq, at: now });
    }
    if (this.held.length > 0) this.settle(out, seq, now, false);
    return out;
  }

  /** Decide every held row (end of an import, shutdown). */
  releaseAll(): Decided[] {
    const out: Decided[] = [];
    this.settle(out, this.seq, this.opts.now?.() ?? Date.now(), true);
    return out;
  }

  /** Held rows past their time (live: called at each flush). */
  releaseExpired(): Decided[] {
    const out: Decided[] = [];
    if (this.held.length > 0) this.settle(out, this.seq, this.opts.now?.() ?? Date.now(), false);
    return out;
  }

  private settle(out: Decided[], seq: number, now: number, all: boolean): void {
    const maxRows = this.opts.maxRows ?? 256;
    const maxHeld = this.opts.maxHeld ?? 4096;
    const maxMs = this.opts.maxHeldMs ?? 5000;
    const keep: Held[] = [];
    // Both ends of one connection held: one of them is the listener.
    const byPair = new Set(this.held.map((h) => `${h.l}>${h.r}`));
    for (let i = 0; i < this.held.length; i++) {
      const h = this.held[i];
      const v = this.byEvidence(h);
      if (v !== undefined) out.push({ ev: h.ev, inbound: v, guessed: false });
      else if (all || seq - h.seq >= maxRows || now - h.at >= maxMs || keep.length >= maxHeld) {
        // Last resort. Both ends seen: the lower port listens. One end only: the host opened it (what the
        // tool was run for; a client's single row to a rarely used server looks just like this).
        this.guesses++;
        out.push({ ev: h.ev, inbound: byPair.has(`${h.r}>${h.l}`) && h.ev.sport < h.ev.dport, guessed: true });
      } else keep.push(h);
    }
    this.held = keep;
  }
}
