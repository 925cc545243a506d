/**
 * Facts about a live process from /proc (exe, cmdline, cgroup, container), cached per pid for a short
 * time: pids are reused, and a process can exec. Short-lived processes are often gone by the time their
 * connect is reported; then only comm and pid are known.
 */
import fs from 'node:fs';
import { cgroupPaths, containerFromCgroup } from './container';

export interface ProcFacts {
  exe?: string;
  cmdline?: string;
  cgroup?: string;
  containerId?: string;
  podUid?: string;
}

function read(path: string): string | undefined {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export class ProcCache {
  private readonly cache = new Map<number, { at: number; facts: ProcFacts }>();
  lookups = 0;
  misses = 0;

  constructor(
    private readonly procRoot = '/proc',
    private readonly ttlMs = 30_000,
    private readonly maxEntries = 8192,
    private readonly now: () => number = Date.now,
    /** /proc/PID/cgroup paths are relative to our cgroup namespace: this maps them to the host's. */
    private readonly hostCgroupPath: (nsPath: string) => string = (p) => p,
  ) {}

  get(pid: number, wantExeCmdline: boolean): ProcFacts {
    const t = this.now();
    const hit = this.cache.get(pid);
    if (hit && t - hit.at < this.ttlMs) return hit.facts;
    this.lookups++;
    const facts: ProcFacts = {};
    const cg = read(`${this.procRoot}/${pid}/cgroup`);
    if (cg === undefined) this.misses++;
    else {
      const paths = cgroupPaths(cg);
      // cgroup v2 line (0::/path) when present, else the first v1 path.
      const v2 = cg.split('\n').find((l) => l.startsWith('0::'))?.slice(3);
      facts.cgroup = v2 !== undefined ? this.hostCgroupPath(v2) : paths[0];
      const c = containerFromCgroup(cg);
      facts.containerId = c.id;
      facts.podUid = c.podUid;
    }
    if (wantExeCmdline && cg !== undefined) {
      try {
        facts.exe = fs.readlinkSync(`${this.procRoot}/${pid}/exe`);
      } catch {
        /* kernel thread or gone */
      }
      const cmd = read(`${this.procRoot}/${pid}/cmdline`);
      if (cmd !== undefined) facts.cmdline = cmd.replace(/\0+$/, '').split('\0').join(' ');
    }
    if (this.cache.size >= this.maxEntries) {
      for (const [k, v] of this.cache) if (t - v.at >= this.ttlMs) this.cache.delete(k);
      if (this.cache.size >= this.maxEntries) this.cache.clear();
    }
    this.cache.set(pid, { at: t, facts });
    return facts;
  }
}

/**
 * Local TCP ports in LISTEN state, per network namespace (from /proc/PID/net/tcp and tcp6, which show the
 * sockets of PID's namespace), to tell an accepted session (inbound: its remote port is a client's
 * ephemeral port, an unbounded tag value) from one the host opened. A server in a container listens in its
 * own namespace, not the agent's. Each namespace is read at most once a second, on demand.
 */
export class ListeningPorts {
  private readonly byNs = new Map<string, { ports: Set<number>; at: number }>();

  constructor(
    private readonly procRoot = '/proc',
    private readonly now: () => number = Date.now,
  ) {}

  private read(dir: string): Set<number> {
    const ports = new Set<number>();
    for (const f of ['net/tcp', 'net/tcp6']) {
      let text: string;
      try {
        text = fs.readFileSync(`${this.procRoot}/${dir}/${f}`, 'utf8');
      } catch {
        continue;
      }
      for (const line of text.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        if (cols.length > 3 && cols[3] === '0A') ports.add(parseInt(cols[1].split(':')[1], 16));
      }
    }
    return ports;
  }

  /**
   * Whether `port` listens in the network namespace of `pid` (the agent's own when pid is omitted), or
   * undefined when that process is gone (its namespace cannot be asked).
   */
  has(port: number, pid?: number): boolean | undefined {
    const dir = pid === undefined ? 'self' : String(pid);
    let ns: string;
    try {
      ns = fs.readlinkSync(`${this.procRoot}/${dir}/ns/net`);
    } catch {
      // No ns link (gone, or a test's /proc without one): the directory itself, if it has net/tcp.
      if (!fs.existsSync(`${this.procRoot}/${dir}/net/tcp`)) return undefined;
      ns = `dir:${dir}`;
    }
    const t = this.now();
    let e = this.byNs.get(ns);
    if (e && e.ports.has(port)) return true;
    if (!e || t - e.at >= 1000) {
      if (this.byNs.size >= 1024) this.byNs.clear();
      e = { ports: this.read(dir), at: t };
      this.byNs.set(ns, e);
    }
    return e.ports.has(port);
  }
}
