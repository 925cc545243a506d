/**
 * Source stage: runs the collector (our probe, a BCC/libbpf-tools tool, or any command given with
 * --source-cmd), splits its stdout into lines, logs its stderr (and keeps the last lines for
 * /api/status), and restarts it with backoff (1 s doubling to 30 s; back to 1 s after it ran 30 s) unless
 * --once. The child runs in its own process group so stopping it also stops what a shell command started.
 * Tools writing through stdio buffer their output in a pipe: default commands run under `stdbuf -oL`
 * (and PYTHONUNBUFFERED=1 for BCC); a --source-cmd should do the same.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { Logger } from '../types';

export interface SourceCommand {
  /** argv (no shell), or a shell command line given with --source-cmd. */
  argv?: string[];
  shell?: string;
  /** Read the agent's own stdin instead of running anything. */
  stdin?: boolean;
}

export interface SupervisorOptions {
  command: SourceCommand;
  once: boolean;
  log: Logger;
  onLine: (line: string) => void;
  /** Called for every chunk boundary after its lines were delivered (lets the pipeline batch work). */
  onChunk?: () => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** A run this long resets the backoff. */
  stableMs?: number;
  maxLineBytes?: number;
  stderrTail?: number;
}

export interface SourceState {
  running: boolean;
  pid: number | null;
  starts: number;
  restarts: number;
  lastExit: { code: number | null; signal: string | null; atMs: number } | null;
  nextStartMs: number | null;
  stderrTail: string[];
  lines: number;
  bytes: number;
  longLinesDropped: number;
  startError: string | null;
}

export function describeCommand(c: SourceCommand): string {
  if (c.stdin) return '(stdin)';
  if (c.shell !== undefined) return `sh -c ${JSON.stringify(c.shell)}`;
  return (c.argv ?? []).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

export class SourceSupervisor {
  readonly state: SourceState = {
    running: false,
    pid: null,
    starts: 0,
    restarts: 0,
    lastExit: null,
    nextStartMs: null,
    stderrTail: [],
    lines: 0,
    bytes: 0,
    longLinesDropped: 0,
    startError: null,
  };
  private child: ChildProcess | null = null;
  private paused = false;
  private stopping = false;
  private backoffMs: number;
  private restartTimer: NodeJS.Timeout | null = null;
  private endResolve!: (r: { code: number | null; signal: string | null }) => void;
  /** Resolves when the source has ended for good (--once, or after stop()). */
  readonly ended: Promise<{ code: number | null; signal: string | null }>;

  constructor(private readonly opts: SupervisorOptions) {
    this.backoffMs = opts.minBackoffMs ?? 1000;
    this.ended = new Promise((r) => (this.endResolve = r));
  }

  start(): void {
    if (this.opts.command.stdin) {
      this.state.running = true;
      this.state.starts++;
      this.pump(process.stdin, () => {
        this.state.running = false;
        this.endResolve({ code: 0, signal: null });
      });
      return;
    }
    this.spawnOnce();
  }

  /** Stop reading the source's output (back-pressure: the pipe fills and the source waits); resume() undoes it. */
  pause(): void {
    this.paused = true;
    this.child?.stdout?.pause();
  }

  resume(): void {
    this.paused = false;
    this.child?.stdout?.resume();
  }

  private spawnOnce(): void {
    if (this.stopping) return;
    const c = this.opts.command;
    const startedAt = Date.now();
    let child: ChildProcess;
    try {
      // BCC tools are Python: unbuffered, so rows arrive as they happen.
      const env = { ...process.env, PYTHONUNBUFFERED: '1' };
      child =
        c.shell !== undefined
          ? spawn('/bin/sh', ['-c', c.shell], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env })
          : spawn(c.argv![0], c.argv!.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
    } catch (e) {
      this.onExit(null, null, startedAt, (e as Error).message);
      return;
    }
    this.child = child;
    if (this.paused) queueMicrotask(() => child.stdout?.pause());
    this.state.starts++;
    this.state.running = true;
    this.state.pid = child.pid ?? null;
    this.state.nextStartMs = null;
    this.state.startError = null;
    this.opts.log.info({ pid: child.pid, command: describeCommand(c) }, 'source started');
    let exited: { code: number | null; signal: string | null } | null = null;
    let outDone = false;
    let spawnError: string | undefined;
    const finish = () => {
      if (exited && outDone) this.onExit(exited.code, exited.signal, startedAt, spawnError);
    };
    child.on('error', (e) => {
      spawnError = e.message;
      if (!exited) {
        exited = { code: null, signal: null };
        outDone = true;
        finish();
      }
    });
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      finish();
    });
    this.pump(child.stdout!, () => {
      outDone = true;
      finish();
    });
    this.pumpStderr(child.stderr!);
  }

  private onExit(code: number | null, signal: string | null, startedAt: number, error?: string): void {
    this.child = null;
    this.state.running = false;
    this.state.pid = null;
    this.state.lastExit = { code, signal, atMs: Date.now() };
    if (error) this.state.startError = error;
    const ranMs = Date.now() - startedAt;
    const how = error ? `could not run: ${error}` : signal ? `killed by ${signal}` : `exited with status ${code}`;
    if (this.stopping || this.opts.once) {
      if (!this.stopping) (code === 0 ? this.opts.log.info : this.opts.log.error).call(this.opts.log, { code, signal, error }, `source ${how}`);
      this.endResolve({ code: error ? 127 : code, signal });
      return;
    }
    if (ranMs >= (this.opts.stableMs ?? 30_000)) this.backoffMs = this.opts.minBackoffMs ?? 1000;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.opts.maxBackoffMs ?? 30_000, this.backoffMs * 2);
    this.state.nextStartMs = Date.now() + delay;
    this.opts.log.warn({ code, signal, error, restartInMs: delay, stderr: this.state.stderrTail.slice(-3) }, `source ${how}; restarting in ${delay} ms`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.state.restarts++;
      this.spawnOnce();
    }, delay);
  }

  /**
   * Split a stream into lines. A line longer than `maxLineBytes` is dropped whole and counted once: once
   * the unfinished line outgrows the limit, everything up to its newline is discarded, so its tail can
   * never be read as a line of its own.
   */
  private pump(stream: Readable, onEnd: () => void): void {
    let carry = '';
    /** Inside an over-long line: drop everything up to the next newline. */
    let discarding = false;
    const max = this.opts.maxLineBytes ?? 1 << 20;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.state.bytes += chunk.length;
      let start = 0;
      let nl = chunk.indexOf('\n');
      if (discarding) {
        if (nl < 0) return this.opts.onChunk?.();
        discarding = false;
        start = nl + 1;
        nl = chunk.indexOf('\n', start);
      } else if (nl >= 0 && carry !== '') {
        const line = carry + chunk.slice(0, nl);
        carry = '';
        start = nl + 1;
        this.deliver(line, max);
        nl = chunk.indexOf('\n', start);
      }
      while (nl >= 0) {
        this.deliver(chunk.slice(start, nl), max);
        start = nl + 1;
        nl = chunk.indexOf('\n', start);
      }
      if (start < chunk.length) {
        carry += chunk.slice(start);
        if (carry.length > max) {
          this.state.longLinesDropped++;
          carry = '';
          discarding = true;
        }
      }
      this.opts.onChunk?.();
    });
    stream.on('end', () => {
      if (carry !== '') this.deliver(carry, max);
      carry = '';
      discarding = false;
      this.opts.onChunk?.();
      onEnd();
    });
    stream.on('error', () => undefined);
  }

  private deliver(line: string, max: number): void {
    if (line.length > max) {
      this.state.longLinesDropped++;
      return;
    }
    this.state.lines++;
    this.opts.onLine(line);
  }

  private pumpStderr(stream: Readable): void {
    let carry = '';
    const tail = this.opts.stderrTail ?? 50;
    let logged = 0;
    let windowStart = Date.now();
    stream.setEncoding('utf8');
    const emit = (line: string) => {
      if (line.trim() === '') return;
      this.state.stderrTail.push(line.slice(0, 1000));
      if (this.state.stderrTail.length > tail) this.state.stderrTail.shift();
      const now = Date.now();
      if (now - windowStart > 10_000) {
        windowStart = now;
        logged = 0;
      }
      // At most 20 stderr lines per 10 s reach the log; all of the last ones are in /api/status.
      if (++logged <= 20) this.opts.log.warn({ source: 'stderr' }, line.slice(0, 1000));
    };
    stream.on('data', (chunk: string) => {
      const parts = (carry + chunk).split('\n');
      carry = parts.pop() ?? '';
      for (const p of parts) emit(p);
    });
    stream.on('end', () => {
      if (carry) emit(carry);
    });
    stream.on('error', () => undefined);
  }

  /**
   * Stop the source: SIGINT to its process group (what every tool handles like Ctrl-C: libbpf-tools and
   * BCC flush their output; the probe exits 0), SIGKILL after `graceMs`.
   */
  async stop(graceMs = 2000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
      this.restartTimer = null;
      this.endResolve({ code: null, signal: null });
    }
    if (this.opts.command.stdin) {
      process.stdin.destroy();
      this.endResolve({ code: null, signal: null });
      return;
    }
    const child = this.child;
    if (!child || child.pid === undefined) {
      this.endResolve({ code: null, signal: null });
      return;
    }
    const kill = (sig: NodeJS.Signals) => {
      try {
        process.kill(-child.pid!, sig);
      } catch {
        try {
          child.kill(sig);
        } catch {
          /* gone */
        }
      }
    };
    kill('SIGINT');
    const timer = setTimeout(() => kill('SIGKILL'), graceMs);
    await this.ended;
    clearTimeout(timer);
  }
}
