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
  // Caches keyed by pid then comm, and by address then port: nested maps, so no key is built per event.
  private readonly services = new Map<number, Map<string, { facts: ProcFacts | null; service: string; comm: string }>>();
  private servicesSize = 0;
  private readonly dsts = new Map<string, Map<number, string>>();
  private dstsSize = 0;
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
    let byComm = this.services.get(ev.pid);
    let s = byComm?.get(ev.comm);
    if (!s || s.facts !== facts) {
      const name = matchService(this.opts.rules.services, { pid: ev.pid, comm: ev.comm, ...(facts ?? {}) });
      s = { facts, service: name ?? ev.comm, comm: ev.comm };
      if (this.servicesSize >= CACHE_MAX) {
        this.services.clear();
        this.servicesSize = 0;
        byComm = undefined;
      }
      if (!byComm) {
        byComm = new Map();
        this.services.set(ev.pid, byComm);
      }
      if (!byComm.has(ev.comm)) this.servicesSize++;
      byComm.set(ev.comm, s);
    }
    const out = ev as EnrichedEvent;
    // The cached, equal comm: one string per process name instead of one per event (the raw sample keeps it).
    out.comm = s.comm;
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
    let byPort = this.dsts.get(addr);
    let d = byPort?.get(port);
    if (d === undefined) {
      d = matchDst(this.opts.rules.destinations, addr, port) ?? defaultDst(family, addr, port);
      if (this.dstsSize >= CACHE_MAX) {
        this.dsts.clear();
        this.dstsSize = 0;
        byPort = undefined;
      }
      if (!byPort) {
        byPort = new Map();
        this.dsts.set(addr, byPort);
      }
      byPort.set(port, d);
      this.dstsSize++;
    }
    return d;
  }

  private isInbound(localPort: number, remotePort: number): boolean {
    if (this.opts.useProc) return this.listening.has(localPort);
    return remotePort >= EPHEMERAL_MIN && localPort < EPHEMERAL_MIN;
  }
}
