/**
 * Mapping rules from the config file: which service a process belongs to, and what to call a destination.
 *
 * ```yaml
 * services:                         # first match wins; every key given must match
 *   - name: rails-api
 *     comm: ruby                    # process name, exact (or a list of names)
 *   - name: hikari-pool
 *     comm: java
 *     thread: '^HikariPool-\d+'       # regex on the connecting thread's name (probe v2)
 *   - name: nest-api
 *     cmdline: 'node .*dist/main'   # regex on /proc/PID/cmdline, arguments joined by spaces
 *   - name: billing
 *     exe: /opt/billing/bin/java*   # /proc/PID/exe, exact or with * wildcards
 *   - { name: batch, pid: 4242 }
 *   - { name: web, cgroup: /system.slice/web.service }   # cgroup v2 path or a parent of it
 *   - { name: payments, container: 3f2a9c1b0d4e }        # container id (a prefix is enough) or pod uid
 * destinations:                     # first match wins
 *   - 10.0.0.0/8:5432 -> postgres-primary
 *   - '[fd00::/8]:6379 -> redis'
 *   - { cidr: 192.168.1.10, port: '*', name: nas }
 * ```
 * Defaults: service = comm, destination = `ip:port` (`[v6]:port`).
 */
import { ConfigError } from '@tcplat/core';
import { Cidr, parseIp } from './cidr';

export interface ServiceRule {
  name: string;
  comm?: Set<string>;
  exe?: RegExp;
  cmdline?: RegExp;
  thread?: RegExp;
  pid?: number;
  cgroup?: string;
  container?: string;
}

export interface DstRule {
  name: string;
  cidr: Cidr;
  /** Undefined: any port. */
  port?: number;
}

export interface Rules {
  services: ServiceRule[];
  destinations: DstRule[];
  /** Whether any service rule needs /proc (exe, cmdline, cgroup, container). */
  needsProc: boolean;
  /** Whether any service rule looks at the thread name (then the service is not a function of pid and comm alone). */
  needsThread: boolean;
}

const SERVICE_KEYS = ['name', 'comm', 'exe', 'cmdline', 'thread', 'pid', 'cgroup', 'container'];

function globToRegExp(glob: string): RegExp {
  return new RegExp('^' + glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' && typeof v !== 'number') throw new ConfigError(`${where}: expected a string, got ${JSON.stringify(v)}`);
  const s = String(v);
  if (s === '') throw new ConfigError(`${where}: is empty`);
  return s;
}

function parseService(raw: unknown, where: string): ServiceRule {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(`${where}: expected a mapping such as {name: api, comm: node}, got ${JSON.stringify(raw)}`);
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!SERVICE_KEYS.includes(k)) throw new ConfigError(`${where}: unknown key ${JSON.stringify(k)} (use ${SERVICE_KEYS.join(', ')})`);
  }
  const rule: ServiceRule = { name: str(o.name, `${where}.name`) };
  if (o.comm !== undefined) rule.comm = new Set((Array.isArray(o.comm) ? o.comm : [o.comm]).map((c, i) => str(c, `${where}.comm[${i}]`)));
  if (o.exe !== undefined) rule.exe = globToRegExp(str(o.exe, `${where}.exe`));
  for (const k of ['cmdline', 'thread'] as const) {
    if (o[k] === undefined) continue;
    const src = str(o[k], `${where}.${k}`);
    try {
      rule[k] = new RegExp(src);
    } catch (e) {
      throw new ConfigError(`${where}.${k}: not a valid regular expression: ${(e as Error).message}`);
    }
  }
  if (o.pid !== undefined) {
    if (typeof o.pid !== 'number' || !Number.isInteger(o.pid) || o.pid <= 0) throw new ConfigError(`${where}.pid: expected a positive integer, got ${JSON.stringify(o.pid)}`);
    rule.pid = o.pid;
  }
  if (o.cgroup !== undefined) rule.cgroup = str(o.cgroup, `${where}.cgroup`).replace(/\/+$/, '') || '/';
  if (o.container !== undefined) rule.container = str(o.container, `${where}.container`).toLowerCase();
  if (Object.keys(o).length === 1) throw new ConfigError(`${where}: rule ${JSON.stringify(rule.name)} has nothing to match on (give comm, exe, cmdline, thread, pid, cgroup or container)`);
  return rule;
}

const DST_TEXT = /^\s*(\[[^\]]+\]|[^\s:[\]]+|[0-9a-fA-F:.]+\/\d+)(?::(\d{1,5}|\*))?\s*->\s*(.+?)\s*$/;

function parseDst(raw: unknown, where: string): DstRule {
  let cidrText: string;
  let portText: string | undefined;
  let name: string;
  if (typeof raw === 'string') {
    const m = DST_TEXT.exec(raw);
    if (!m) throw new ConfigError(`${where}: expected "CIDR[:PORT] -> NAME" (e.g. "10.0.0.0/8:5432 -> postgres-primary", "[fd00::/8]:6379 -> redis"), got ${JSON.stringify(raw)}`);
    cidrText = m[1].replace(/^\[|\]$/g, '');
    portText = m[2];
    name = m[3];
  } else if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
    const o = raw as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['cidr', 'port', 'name'].includes(k)) throw new ConfigError(`${where}: unknown key ${JSON.stringify(k)} (use cidr, port, name)`);
    cidrText = str(o.cidr, `${where}.cidr`);
    portText = o.port === undefined ? undefined : String(o.port);
    name = str(o.name, `${where}.name`);
  } else {
    throw new ConfigError(`${where}: expected "CIDR[:PORT] -> NAME" or {cidr, port, name}, got ${JSON.stringify(raw)}`);
  }
  const cidr = Cidr.parse(cidrText);
  if (!cidr) throw new ConfigError(`${where}: ${JSON.stringify(cidrText)} is not an address or CIDR prefix`);
  let port: number | undefined;
  if (portText !== undefined && portText !== '*') {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) throw new ConfigError(`${where}: port ${JSON.stringify(portText)} is not within 1..65535 (or * for any)`);
  }
  return { name, cidr, port };
}

/** Read and validate the `services` and `destinations` sections of the config file. */
export function parseRules(file: Record<string, unknown>, filePath = 'the config file'): Rules {
  const list = (key: string): unknown[] => {
    const v = file[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new ConfigError(`--config ${filePath}: ${key}: expected a list of rules`);
    return v;
  };
  const services = list('services').map((r, i) => parseService(r, `--config ${filePath}: services[${i}]`));
  const destinations = list('destinations').map((r, i) => parseDst(r, `--config ${filePath}: destinations[${i}]`));
  return { services, destinations, needsProc: services.some((s) => s.exe || s.cmdline || s.cgroup || s.container), needsThread: services.some((s) => s.thread) };
}

export interface ProcessFacts {
  pid: number;
  comm: string;
  thread?: string;
  exe?: string;
  cmdline?: string;
  cgroup?: string;
  containerId?: string;
  podUid?: string;
}

export function matchService(rules: readonly ServiceRule[], p: ProcessFacts): string | undefined {
  for (const r of rules) {
    if (r.comm && !r.comm.has(p.comm)) continue;
    if (r.pid !== undefined && r.pid !== p.pid) continue;
    if (r.exe && !(p.exe !== undefined && r.exe.test(p.exe))) continue;
    if (r.cmdline && !(p.cmdline !== undefined && r.cmdline.test(p.cmdline))) continue;
    if (r.thread && !(p.thread !== undefined && r.thread.test(p.thread))) continue;
    if (r.cgroup && !(p.cgroup !== undefined && (p.cgroup === r.cgroup || p.cgroup.startsWith(r.cgroup === '/' ? '/' : r.cgroup + '/')))) continue;
    if (r.container && !((p.containerId && p.containerId.startsWith(r.container)) || p.podUid === r.container)) continue;
    return r.name;
  }
  return undefined;
}

export function matchDst(rules: readonly DstRule[], addr: string, port: number): string | undefined {
  if (rules.length === 0) return undefined;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  for (const r of rules) {
    if (r.port !== undefined && r.port !== port) continue;
    if (r.cidr.contains(ip)) return r.name;
  }
  return undefined;
}
