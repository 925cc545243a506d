/**
 * Shared by the probe end-to-end tests (tests/probe*.test.ts): a running probe with its parsed output, nftables
 * tables, servers and connectors on loopback, and the prerequisites check.
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { freePort } from './net';

export const ROOT = path.resolve(__dirname, '..', '..');
export const PROBE = path.join(ROOT, 'bpf', 'tcplat-probe');
export const READY = 'tcplat-probe: attached';
export const ON_CI = process.env.CI === 'true';

// ---------------------------------------------------------------- prerequisites

export function commandWorks(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

export function missingPrerequisite(): string | null {
  if (process.platform !== 'linux') return 'the probe needs Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return 'not running as root (eBPF and nftables need root): run the tests as root';
  }
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) {
    return 'the kernel has no BTF (/sys/kernel/btf/vmlinux): needs CONFIG_DEBUG_INFO_BTF=y';
  }
  if (!commandWorks('nft', ['--version'])) return 'nft (nftables) is not installed: run scripts/setup';
  if (!fs.existsSync(PROBE)) {
    for (const tool of ['make', 'clang', 'bpftool', 'cc']) {
      if (!commandWorks('sh', ['-c', `command -v ${tool}`])) {
        return `bpf/tcplat-probe is missing and cannot be built (no ${tool}): run scripts/setup, then make -C bpf`;
      }
    }
    if (!commandWorks('pkg-config', ['--exists', 'libbpf'])) {
      return 'bpf/tcplat-probe is missing and cannot be built (no libbpf-dev): run scripts/setup, then make -C bpf';
    }
  }
  return null;
}

export const missing = missingPrerequisite();

// ---------------------------------------------------------------- helpers

export interface ConnectEvent {
  type: 'connect';
  ts_ns: number;
  latency_ns: number;
  result: string;
  errno: number;
  syn_retrans: number;
  pid: number;
  tid: number;
  comm: string;
  thread: string;
  cgroup_id: number;
  family: string;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  raw: string;
  tsBig: bigint;
}

/** One established outbound connection at its end (bpf/README.md, close events). */
export interface CloseLine {
  type: 'close';
  ts_ns: number;
  lifespan_ns: number;
  pid: number;
  tid: number;
  comm: string;
  thread: string;
  cgroup_id: number;
  family: string;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  bytes_sent: number;
  bytes_received: number;
  retrans: number;
  srtt_us: number;
  closed_by: 'local' | 'peer' | 'reset_in' | 'reset_out';
  /** --zero-windows only. */
  zero_windows?: number;
  raw: string;
  tsBig: bigint;
}

export interface StatsEvent {
  type: 'stats';
  ts_ns: number;
  events: number;
  dropped: number;
  mode: string;
  started_ns: number;
  /** Close lines written (absent with --no-close and in hist mode). */
  closes?: number;
  drops: Record<string, number>;
  missed: Record<string, number>;
}

/** --mode hist: one line per (cgroup, process, destination, result) per window (bpf/README.md). */
/** A TLS client handshake through OpenSSL (bpf/tls.bpf.c). */
export interface TlsEvent {
  type: 'tls';
  ts_ns: number;
  latency_ns: number;
  result: string;
  pid: number;
  tid: number;
  comm: string;
  thread: string;
  cgroup_id: number;
  lib: string;
  calls: number;
  family: string;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

export interface HistLine {
  type: 'hist';
  ts_ns: number;
  window_ns: number;
  cgroup_id: number;
  pid: number;
  comm: string;
  family: string;
  daddr: string;
  dport: number;
  result: string;
  errno: number;
  count: number;
  sum_ns: number;
  min_ns: number;
  max_ns: number;
  syn_retrans: number;
  buckets: number[];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const ms = (e: ConnectEvent) => e.latency_ns / 1e6;

/** A running probe: collects its stdout lines, parsed. */
export class Probe {
  readonly events: ConnectEvent[] = [];
  readonly stats: StatsEvent[] = [];
  readonly hists: HistLine[] = [];
  readonly closes: CloseLine[] = [];
  readonly tls: TlsEvent[] = [];
  readonly lines: string[] = [];
  stderr = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  private readonly exited: Promise<void>;
  private waiters: Array<() => void> = [];

  private constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    proc.stdout!.on('error', () => undefined);
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      // 'close': the process exited and its stdout was read to the end (every line is in)
      proc.on('close', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        this.notify();
        resolve();
      });
    });
  }

  private onLine(line: string): void {
    this.lines.push(line);
    const obj = JSON.parse(line); // every stdout line must be JSON
    if (obj.type === 'connect') {
      // ts_ns exceeds 2^53: keep the exact digits too
      const m = /"ts_ns":(\d+)/.exec(line);
      this.events.push({ ...obj, raw: line, tsBig: BigInt(m ? m[1] : 0) });
    } else if (obj.type === 'stats') {
      this.stats.push(obj);
    } else if (obj.type === 'hist') {
      this.hists.push(obj);
    } else if (obj.type === 'close') {
      const m = /"ts_ns":(\d+)/.exec(line);
      this.closes.push({ ...obj, raw: line, tsBig: BigInt(m ? m[1] : 0) });
    } else if (obj.type === 'tls') {
      this.tls.push(obj);
    } else {
      throw new Error(`unexpected line type: ${line}`);
    }
    this.notify();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Resolves when pred() holds; rejects after timeoutMs or if the probe exits. */
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (this.exitCode !== null || this.exitSignal !== null) {
        throw new Error(`probe exited (${this.exitCode ?? this.exitSignal}) while waiting for ${what}; stderr:\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${what}; events so far:\n${this.lines.join('\n')}\nstderr:\n${this.stderr}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Waits for n connect events to one of the given destination ports. */
  async waitEvents(dports: number | number[], n: number, timeoutMs = 5000): Promise<ConnectEvent[]> {
    const set = new Set(Array.isArray(dports) ? dports : [dports]);
    const pick = () => this.events.filter((e) => set.has(e.dport));
    await this.until(() => pick().length >= n, timeoutMs, `${n} event(s) to port(s) ${[...set].join(',')}`);
    return pick();
  }

  /** Waits for n close events from one of the given destination ports. */
  async waitCloses(dports: number | number[], n: number, timeoutMs = 5000): Promise<CloseLine[]> {
    const set = new Set(Array.isArray(dports) ? dports : [dports]);
    const pick = () => this.closes.filter((e) => set.has(e.dport));
    await this.until(() => pick().length >= n, timeoutMs, `${n} close event(s) to port(s) ${[...set].join(',')}`);
    return pick();
  }

  eventsTo(dport: number): ConnectEvent[] {
    return this.events.filter((e) => e.dport === dport);
  }

  /** Waits for the exit (without signalling), at most timeoutMs. */
  async waitExit(timeoutMs = 10000): Promise<number | null> {
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    probes.delete(this);
    return this.exitCode;
  }

  /** SIGINT (or the given signal), then waits for the exit. */
  async stop(signal: NodeJS.Signals = 'SIGINT'): Promise<number | null> {
    if (this.exitCode === null && this.exitSignal === null) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
    probes.delete(this);
    return this.exitCode;
  }

  static async start(args: string[], opts: { waitReady?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<Probe> {
    const proc = spawn(PROBE, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const p = new Probe(proc);
    probes.add(p);
    if (opts.waitReady !== false) {
      await p.until(() => p.stderr.includes(READY), 15000, 'the readiness line');
    }
    return p;
  }
}

export const probes = new Set<Probe>();

/** An nftables table of our own, on the output hook (or the input hook). */
export class NftTable {
  readonly name = `tcplat_test_${randomBytes(4).toString('hex')}`;

  constructor(rules: string[], hook: 'output' | 'input' = 'output') {
    tables.add(this);
    const script = [
      `table inet ${this.name} {`,
      '  chain out {',
      `    type filter hook ${hook} priority 0; policy accept;`,
      ...rules.map((r) => `    ${r}`),
      '  }',
      '}',
      '',
    ].join('\n');
    execFileSync('nft', ['-f', '-'], { input: script });
  }

  delete(): void {
    if (!tables.has(this)) return;
    tables.delete(this);
    spawnSync('nft', ['delete', 'table', 'inet', this.name], { stdio: 'ignore' });
  }
}

export const tables = new Set<NftTable>();

export function cleanupAll(): void {
  for (const t of [...tables]) t.delete();
  for (const p of [...probes]) {
    p.proc.kill('SIGKILL');
    probes.delete(p);
  }
}
process.on('exit', cleanupAll); // last resort, if jest dies between hooks

export const dropFirstSyn = (port: number) => `tcp dport ${port} tcp flags syn numgen inc mod 2 == 0 drop`;
export const dropAllSyn = (port: number) => `tcp dport ${port} tcp flags syn drop`;

/** A server that accepts and closes; resolves with its port. */
export async function startServer(host: string): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.destroy();
  });
  servers.add(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: 0, backlog: 1024 }, resolve);
  });
  return server;
}
export const servers = new Set<net.Server>();
export const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

export interface ConnectResult {
  ok: boolean;
  error?: string;
  localPort?: number;
  ms: number;
}

/** One connect from this process; gives up (destroys the socket) after timeoutMs. */
export function connectOnce(host: string, port: number, timeoutMs = 5000): Promise<ConnectResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const elapsed = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ ok: false, error: 'client timeout', ms: elapsed() });
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      const localPort = sock.localPort;
      sock.destroy();
      resolve({ ok: true, localPort, ms: elapsed() });
    });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ ok: false, error: err.code, ms: elapsed() });
    });
  });
}

/**
 * A child node process that connects to host:port when told to ("go" on
 * stdin), prints {"localPort":N} or {"error":...}, then exits. argv0 lets the
 * child run under another name: comm is the basename of the executed path.
 */
export class ChildConnector {
  readonly proc: ChildProcess;
  private out = '';
  private readonly done: Promise<void>;

  constructor(host: string, port: number, execPath = process.execPath) {
    const code = `
      const net = require('net');
      process.stdin.once('data', () => {
        const s = net.connect({ host: ${JSON.stringify(host)}, port: ${port} });
        s.once('connect', () => { console.log(JSON.stringify({ localPort: s.localPort })); s.destroy(); process.exit(0); });
        s.once('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(0); });
      });
      console.log('ready');`;
    this.proc = spawn(execPath, ['-e', code], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.add(this.proc);
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (c: string) => (this.out += c));
    this.done = new Promise((resolve) => this.proc.on('exit', () => resolve()));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  async ready(): Promise<void> {
    const deadline = Date.now() + 10000;
    while (!this.out.includes('ready')) {
      if (Date.now() > deadline) throw new Error('child connector did not start');
      await sleep(20);
    }
  }

  async go(): Promise<{ localPort?: number; error?: string }> {
    await this.ready();
    this.proc.stdin!.write('go\n');
    await this.done;
    children.delete(this.proc);
    const line = this.out.split('\n').find((l) => l.startsWith('{'));
    if (!line) throw new Error(`child printed nothing useful: ${this.out}`);
    return JSON.parse(line);
  }
}
export const children = new Set<ChildProcess>();

/**
 * The hooks every probe suite needs: build the probe if it is missing, and after each test remove its nftables
 * tables and kill what it started (probes, child clients, servers), so a failed test leaves nothing behind.
 */
export function useProbeHooks(): void {
  beforeAll(() => {
    if (!fs.existsSync(PROBE)) {
      execFileSync('make', ['-C', path.join(ROOT, 'bpf'), 'tcplat-probe'], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
  }, 120000);

  afterEach(async () => {
    for (const t of [...tables]) t.delete();
    for (const p of [...probes]) await p.stop('SIGKILL');
    for (const c of [...children]) c.kill('SIGKILL');
    children.clear();
    for (const s of [...servers]) {
      await new Promise<void>((resolve) => s.close(() => resolve()));
      servers.delete(s);
    }
  });

  afterAll(() => cleanupAll());
}

export function cgroup2Mount(): string | null {
  for (const line of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2') return mnt;
  }
  return null;
}

export function python3(): string | null {
  const r = spawnSync('python3', ['-c', 'import socket; print(socket.TCP_SYNCNT)'], { encoding: 'utf8' });
  return !r.error && r.status === 0 ? 'python3' : null;
}

