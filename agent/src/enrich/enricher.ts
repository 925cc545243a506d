/**
 * Enrich stage: service (mapping rules, default comm), destination label (rules, default `ip:port`),
 * container (from /proc/PID/cgroup, live sources only). Drops the agent's own connections (no feedback
 * loop through InfluxDB) and, for tcplife, sessions this host accepted rather than opened.
 */
import { defaultDst } from '@tcplat/core';
import type { StageCounters } from '../metrics';
import type { EnrichedEvent, SourceEvent } from '../types';
import { containerLabel } from './container';
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
}

// Linux default ip_local_port_range; used to spot inbound sessions when /proc cannot be asked (imports).
const EPHEMERAL_MIN = 32768;
const CACHE_MAX = 65_536;

export class Enricher {
  private readonly services = new Map<string, { facts: ProcFacts | null; service: string }>();
  private readonly dsts = new Map<string, string>();
  private readonly proc: ProcCache;
  private readonly listening: ListeningPorts;

  constructor(
    private readonly opts: EnricherOptions,
    private readonly stage: StageCounters,
  ) {
    this.proc = opts.procCache ?? new ProcCache();
    this.listening = opts.listening ?? new ListeningPorts();
  }

  enrich(ev: SourceEvent): EnrichedEvent | null {
    this.stage.received.inc();
    if (this.opts.selfPids.has(ev.pid)) {
      this.stage.drop('self');
      return null;
    }
    if (ev.type === 'session' && this.isInbound(ev.sport, ev.dport)) {
      this.stage.drop('inbound_session');
      return null;
    }
    const facts = this.opts.useProc ? this.proc.get(ev.pid, this.opts.rules.needsProc) : null;
    const key = `${ev.pid}|${ev.comm}`;
    let s = this.services.get(key);
    if (!s || s.facts !== facts) {
      const name = matchService(this.opts.rules.services, { pid: ev.pid, comm: ev.comm, ...(facts ?? {}) });
      s = { facts, service: name ?? ev.comm };
      if (this.services.size >= CACHE_MAX) this.services.clear();
      this.services.set(key, s);
    }
    const out = ev as EnrichedEvent;
    out.service = s.service;
    out.dst = this.dst(ev.family, ev.daddr, ev.dport);
    if (facts) {
      const c = containerLabel({ id: facts.containerId, podUid: facts.podUid });
      if (c) out.container = c;
    }
    this.stage.emitted.inc();
    return out;
  }

  private dst(family: 'ipv4' | 'ipv6', addr: string, port: number): string {
    if (this.opts.rules.destinations.length === 0) return defaultDst(family, addr, port);
    const key = `${addr}|${port}`;
    let d = this.dsts.get(key);
    if (d === undefined) {
      d = matchDst(this.opts.rules.destinations, addr, port) ?? defaultDst(family, addr, port);
      if (this.dsts.size >= CACHE_MAX) this.dsts.clear();
      this.dsts.set(key, d);
    }
    return d;
  }

  private isInbound(localPort: number, remotePort: number): boolean {
    if (this.opts.useProc) return this.listening.has(localPort);
    return remotePort >= EPHEMERAL_MIN && localPort < EPHEMERAL_MIN;
  }
}
