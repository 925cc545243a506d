/**
 * Enrich stage: service (mapping rules, default comm), destination label (rules, default `ip:port`),
 * container and cgroup (the same for connects, closes and TLS handshakes; from the probe's cgroup_id, resolved through the cgroup2 hierarchy, so they hold
 * after the process exited; else from /proc/PID/cgroup; live sources only). Drops the agent's own connections (no feedback
 * loop through InfluxDB) and, for tcplife, sessions this host accepted rather than opened.
 */
import { defaultDst, TLS_DST_UNSEEN } from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedConnect, EnrichedEvent, EnrichedSession, SourceEvent } from '../types';
import { SessionDirection, type Decided } from './direction';
import type { CgroupResolver } from './cgroup';
import { containerFromCgroup, containerLabel } from './container';
import { ListeningPorts, ProcCache, type ProcFacts } from './proc';
import { matchDst, matchService, type Rules } from './rules';

export interface EnricherOptions {
  rules: Rules;
  /** Pids whose connections are never reported (the agent itself). */
  selfPids: ReadonlySet<number>;
  /** Read /proc for containers and exe/cmdline/cgroup rules: only for live sources, never for imports. */
  useProc: boolean;
  procCache?: ProcCache;
  listening?: ListeningPorts;
  /**
   * Resolves the probe's cgroup_id (live probe only): the kernel's record of where the task ran, which
   * outlives the process, unlike /proc/PID/cgroup.
   */
  cgroups?: CgroupResolver;
}

const CACHE_MAX = 65_536;

/**
 * A cache keyed by two values, as nested maps, so no key string is built per event. Bounded: cleared
 * when it holds CACHE_MAX entries.
 */
class Cache2<A, B, V> {
  private readonly byA = new Map<A, Map<B, V>>();
  private size = 0;

  get(a: A, b: B): V | undefined {
    return this.byA.get(a)?.get(b);
  }

  set(a: A, b: B, v: V): void {
    if (this.size >= CACHE_MAX) {
      this.byA.clear();
      this.size = 0;
    }
    let byB = this.byA.get(a);
    if (!byB) {
      byB = new Map();
      this.byA.set(a, byB);
    }
    if (!byB.has(b)) this.size++;
    byB.set(b, v);
  }
}

export class Enricher {
  private readonly services = new Cache2<number, string, { facts: ProcFacts | null; service: string; comm: string }>();
  private readonly dsts = new Cache2<string, number, string>();
  private readonly proc: ProcCache;
  private readonly listening: ListeningPorts;
  /** Facts with the kernel's cgroup in place of /proc's, one object per (facts, cgroup path): stable for the service cache. */
  private readonly withCgroup = new WeakMap<ProcFacts, Map<string, ProcFacts>>();
  private readonly noFacts: ProcFacts = {};
  private readonly threads = new Map<string, string>();
  private readonly direction = new SessionDirection();
  private readySessions: EnrichedSession[] = [];

  constructor(
    private readonly opts: EnricherOptions,
    private readonly stage: StageCounters,
  ) {
    this.proc = opts.procCache ?? new ProcCache();
    this.listening = opts.listening ?? new ListeningPorts();
  }

  /**
   * One event, enriched, or null when dropped. Sessions (tcplife) are never returned here: their direction
   * may need later rows (see SessionDirection); take them with takeSessions().
   */
  enrich(ev: SourceEvent): EnrichedEvent | null {
    this.stage.received.inc();
    if (this.opts.selfPids.has(ev.pid)) {
      this.stage.drop('self');
      return null;
    }
    if (ev.type === 'session') {
      // Live: does the local port listen in the namespace of the row's process (else, if it is gone, ours)?
      const listening = this.opts.useProc ? (this.listening.has(ev.sport, ev.pid) ?? (this.listening.has(ev.sport) || undefined)) : undefined;
      for (const d of this.direction.offer(ev, listening)) this.decided(d);
      return null;
    }
    return this.finish(ev);
  }

  /** Sessions decided outbound and enriched since the last call; `all` decides held ones too (end, shutdown). */
  takeSessions(mode: 'ready' | 'expired' | 'all' = 'ready'): EnrichedSession[] {
    if (mode !== 'ready') for (const d of mode === 'all' ? this.direction.releaseAll() : this.direction.releaseExpired()) this.decided(d);
    const out = this.readySessions;
    this.readySessions = [];
    return out;
  }

  /** Sessions whose direction had no evidence: the lower port of a both-ends pair listens, a lone row was opened. */
  get sessionGuesses(): number {
    return this.direction.guesses;
  }

  /** Session rows waiting for evidence of their direction. */
  get heldSessions(): number {
    return this.direction.heldCount;
  }

  private decided(d: Decided): void {
    if (d.inbound) {
      this.stage.drop('inbound_session');
      return;
    }
    this.readySessions.push(this.finish(d.ev) as EnrichedSession);
  }

  private finish(ev: SourceEvent): EnrichedEvent {
    let facts = this.opts.useProc ? this.proc.get(ev.pid, this.opts.rules.needsProc) : null;
    if (this.opts.cgroups && ev.type !== 'session' && ev.cgroupId !== '0') {
      const cg = this.opts.cgroups.resolve(ev.cgroupId);
      if (cg !== undefined) facts = this.kernelCgroup(facts ?? this.noFacts, cg);
    }
    const thread = ev.type === 'connect' || ev.type === 'close' || ev.type === 'tls' ? ev.thread : undefined;
    // With thread: rules the service also depends on the thread's name (a key built per event, only then).
    const key = this.opts.rules.needsThread && thread !== undefined ? `${ev.comm}\u0000${thread}` : ev.comm;
    let s = this.services.get(ev.pid, key);
    if (!s || s.facts !== facts) {
      const name = matchService(this.opts.rules.services, { pid: ev.pid, comm: ev.comm, thread, ...(facts ?? {}) });
      s = { facts, service: name ?? ev.comm, comm: ev.comm };
      this.services.set(ev.pid, key, s);
    }
    const out = ev as EnrichedEvent;
    if (thread !== undefined) (out as EnrichedConnect).thread = this.internThread(thread);
    // The cached, equal comm: one string per process name instead of one per event (the raw sample keeps it).
    out.comm = s.comm;
    out.service = s.service;
    if (ev.type !== 'tls') out.dst = this.dst(ev.family, ev.daddr, ev.dport);
    else out.dst = ev.socket ? this.dst(ev.socket.family, ev.socket.daddr, ev.socket.dport) : TLS_DST_UNSEEN;
    if (facts) {
      const c = containerLabel({ id: facts.containerId, podUid: facts.podUid });
      if (c) out.container = c;
    }
    this.stage.emitted.inc();
    return out;
  }

  /** One string per thread name (a raw point keeps it until its flush). Bounded. */
  private internThread(t: string): string {
    const have = this.threads.get(t);
    if (have !== undefined) return have;
    if (this.threads.size >= 4096) this.threads.clear();
    this.threads.set(t, t);
    return t;
  }

  private kernelCgroup(facts: ProcFacts, cgroup: string): ProcFacts {
    let byPath = this.withCgroup.get(facts);
    if (!byPath) {
      byPath = new Map();
      this.withCgroup.set(facts, byPath);
    }
    let f = byPath.get(cgroup);
    if (!f) {
      const c = containerFromCgroup(`0::${cgroup}`);
      f = { exe: facts.exe, cmdline: facts.cmdline, cgroup, containerId: c.id, podUid: c.podUid };
      if (byPath.size > 1024) byPath.clear();
      byPath.set(cgroup, f);
    }
    return f;
  }

  private dst(family: 'ipv4' | 'ipv6', addr: string, port: number): string {
    let d = this.dsts.get(addr, port);
    if (d === undefined) {
      d = matchDst(this.opts.rules.destinations, addr, port) ?? defaultDst(family, addr, port);
      this.dsts.set(addr, port, d);
    }
    return d;
  }

}
