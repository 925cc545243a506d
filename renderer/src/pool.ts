/**
 * A pool of long-lived Python Matplotlib workers (renderer/python/worker.py) fed over pipes.
 *
 * Framing (unsigned 32-bit big-endian lengths):
 *   request: u32 length + UTF-8 JSON
 *   reply:   u32 header length + u32 body length + UTF-8 JSON header + body (PNG bytes)
 * A worker announces itself with a {"ready": true} reply once matplotlib is imported.
 *
 * One request per worker at a time; requests wait in one bounded FIFO queue (full: PoolOverloadedError,
 * which the service answers with 429). A worker that exits or breaks the framing is replaced and its
 * request is retried once on another worker; a worker that exceeds the per-request timeout is killed and
 * replaced, and that request fails (a render that hung once would likely hang again).
 *
 * Restart policy: a worker killed from outside (a signal such as SIGKILL or SIGTERM: an operator, the OOM
 * killer, a kill storm) or by the pool itself (a hang) is one-off: it is replaced at once, however often.
 * A worker that dies on its own (an exit code, SIGSEGV, SIGABRT, a broken frame) is a crash: the first
 * CRASH_FREE_RESTARTS crashes within CRASH_WINDOW_MS are replaced at once too; beyond that the pool is in a
 * crash loop and backs off (1 s, 2 s, 4 s ... at most 30 s), and while no worker is ready, requests fail at
 * once (the service answers 503) instead of waiting. A render that succeeds ends the crash loop. A queued
 * request waits at most NO_WORKER_WAIT_MS while no worker is ready.
 *
 * Memory: after each render the worker's resident set is read from /proc; above maxRssBytes the worker
 * is retired and replaced while idle, so a few very large charts cannot pin hundreds of MB per worker.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';

export const WORKER_SCRIPT = path.resolve(__dirname, '..', 'python', 'worker.py');

export interface PoolLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const silent: PoolLogger = { info() {}, warn() {}, error() {} };

export interface PoolOptions {
  /** The Python interpreter (Debian's /usr/bin/python3 with python3-matplotlib). */
  python: string;
  script?: string;
  workers: number;
  /** Requests that may wait for a free worker; more are refused. */
  queue: number;
  /** Per-request limit for drawing (ms). */
  timeoutMs: number;
  /** How long a worker may take to import matplotlib and say it is ready (ms). */
  startTimeoutMs?: number;
  /** Replace a worker after this many renders (0: never), a bound on slow leaks in native libraries. */
  maxRenders?: number;
  /** Replace a worker, when idle, whose resident memory is above this (bytes; 0: never). */
  maxRssBytes?: number;
  log?: PoolLogger;
}

export interface RenderReply {
  header: Record<string, unknown>;
  png: Buffer;
  /** pid of the worker that drew it. */
  pid: number;
}

export class PoolOverloadedError extends Error {
  constructor(readonly queued: number) {
    super(`the renderer is busy (${queued} requests waiting): retry shortly`);
    this.name = 'PoolOverloadedError';
  }
}

/** A render that could not be done: `timeout`, `crash` (worker died twice), `render` (Python raised), `closed`. */
export class RenderError extends Error {
  constructor(
    readonly reason: 'timeout' | 'crash' | 'render' | 'closed' | 'start',
    message: string,
  ) {
    super(message);
    this.name = 'RenderError';
  }
}

interface Job {
  request: Record<string, unknown>;
  resolve: (r: RenderReply) => void;
  reject: (e: Error) => void;
  attempts: number;
  /** While queued: fails the job when no worker takes it in time. */
  waitTimer?: NodeJS.Timeout;
}

/** Crashes within this window count towards a crash loop. */
export const CRASH_WINDOW_MS = 60_000;
/** Crashes in the window that are still replaced at once. */
export const CRASH_FREE_RESTARTS = 3;
const MAX_BACKOFF_MS = 30_000;
/** Longest a request waits for a worker while none is ready (all being replaced; Python takes seconds to start). */
export const NO_WORKER_WAIT_MS = 10_000;

/** Resident memory of a process (bytes) from /proc, or 0 when it cannot be read. */
export function residentBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

type Proc = ChildProcessByStdio<Writable, Readable, Readable>;

class Worker {
  readonly proc: Proc;
  state: 'starting' | 'idle' | 'busy' | 'dead' = 'starting';
  job: Job | null = null;
  renders = 0;
  private buf: Buffer = Buffer.alloc(0);
  private timer: NodeJS.Timeout | null = null;
  stderrTail = '';
  /** Set when the pool kills the worker: `hang` (timeout, one-off) or `broken` (protocol error, a crash). */
  killedBy: 'hang' | 'broken' | null = null;
  exitSignal: NodeJS.Signals | null = null;
  exitCode: number | null = null;

  constructor(
    private readonly pool: WorkerPool,
    opts: Required<Pick<PoolOptions, 'python' | 'script'>>,
  ) {
    this.proc = spawn(opts.python, ['-u', opts.script], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, MPLBACKEND: 'Agg', PYTHONDONTWRITEBYTECODE: '1' },
    });
    this.proc.stdout.on('data', (chunk: Buffer) => this.onData(chunk));
    this.proc.stderr.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-2000);
    });
    this.proc.stdin.on('error', () => {
      /* EPIPE when the worker died: the exit handler deals with it */
    });
    this.proc.on('error', (e) => this.die(`cannot start ${opts.python}: ${e.message}`));
    this.proc.on('exit', (code, signal) => {
      this.exitCode = code;
      this.exitSignal = signal;
      this.die(`exited (${signal ?? `code ${code}`})`);
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  send(job: Job, timeoutMs: number): void {
    this.state = 'busy';
    this.job = job;
    const body = Buffer.from(JSON.stringify(job.request), 'utf8');
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length, 0);
    this.proc.stdin.write(Buffer.concat([head, body]));
    this.timer = setTimeout(() => this.pool.onTimeout(this), timeoutMs);
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 8) {
      const hl = this.buf.readUInt32BE(0);
      const bl = this.buf.readUInt32BE(4);
      if (hl > 1 << 20 || bl > 256 << 20) {
        this.kill(`broke the framing (header ${hl} bytes, body ${bl} bytes)`);
        return;
      }
      if (this.buf.length < 8 + hl + bl) return;
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(this.buf.subarray(8, 8 + hl).toString('utf8'));
      } catch {
        this.kill('sent a header that is not JSON');
        return;
      }
      const png = Buffer.from(this.buf.subarray(8 + hl, 8 + hl + bl));
      this.buf = this.buf.subarray(8 + hl + bl);
      this.onFrame(header, png);
    }
  }

  private onFrame(header: Record<string, unknown>, png: Buffer): void {
    if (header.ready === true) {
      if (this.state === 'starting') {
        this.state = 'idle';
        this.pool.onReady(this);
      }
      return;
    }
    const job = this.job;
    if (!job || this.state !== 'busy' || header.id !== job.request.id) {
      this.kill('answered a request it was not given');
      return;
    }
    this.clearTimer();
    this.job = null;
    this.state = 'idle';
    this.renders++;
    if (header.ok === true) {
      this.pool.onSuccess();
      job.resolve({ header, png, pid: this.pid });
    }
    else job.reject(new RenderError('render', `the chart could not be drawn: ${String(header.error ?? 'unknown error')}`));
    this.pool.onIdle(this);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  kill(why: string, by: 'hang' | 'broken' = 'broken'): void {
    if (this.state === 'dead') return;
    this.killedBy = by;
    this.pool.log.warn({ workerPid: this.pid, why }, 'renderer worker killed');
    this.proc.kill('SIGKILL');
    this.die(why);
  }

  /** Retire without failing anything: used after maxRenders, when idle. */
  retire(): void {
    this.state = 'dead';
    this.proc.stdin.end();
    setTimeout(() => this.proc.kill('SIGKILL'), 2000).unref();
  }

  private die(why: string): void {
    if (this.state === 'dead') return;
    const wasStarting = this.state === 'starting';
    this.state = 'dead';
    this.clearTimer();
    const job = this.job;
    this.job = null;
    this.pool.onDeath(this, why, job, wasStarting);
  }
}

export class WorkerPool {
  readonly log: PoolLogger;
  private readonly opts: Required<Omit<PoolOptions, 'log'>>;
  private readonly workers = new Set<Worker>();
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  private lastCrash = '';
  /** Times of recent crashes (not kills), oldest first. */
  private crashes: number[] = [];
  /** Workers waiting to be spawned after a crash-loop back-off. */
  private pendingSpawns = 0;
  private backoffUntil = 0;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Workers replaced after a crash, kill, hang or framing error (not counting planned retirements). */
  restarts = 0;
  /** Workers retired because their resident memory passed maxRssBytes. */
  rssRetirements = 0;
  renders = 0;

  constructor(opts: PoolOptions) {
    this.opts = {
      script: WORKER_SCRIPT,
      startTimeoutMs: 30_000,
      maxRenders: 0,
      maxRssBytes: 0,
      ...opts,
    } as Required<Omit<PoolOptions, 'log'>>;
    this.log = opts.log ?? silent;
  }

  /** Spawn the workers and wait until all of them are ready; rejects with the worker's own error if Python cannot start. */
  async start(): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
    for (let i = 0; i < this.opts.workers; i++) this.spawnWorker();
    const timer = setTimeout(() => this.failStart(`the Python workers did not become ready within ${this.opts.startTimeoutMs} ms`), this.opts.startTimeoutMs);
    try {
      await ready;
    } finally {
      clearTimeout(timer);
    }
  }

  private failStart(why: string): void {
    for (const w of this.readyWaiters.splice(0)) w.reject(new RenderError('start', why));
  }

  private spawnWorker(): void {
    if (this.closed) return;
    this.workers.add(new Worker(this, { python: this.opts.python, script: this.opts.script }));
  }

  stats(): { workers: number; ready: number; busy: number; queued: number; restarts: number; pids: number[]; crashLoop: boolean } {
    let ready = 0;
    let busy = 0;
    for (const w of this.workers) {
      if (w.state === 'idle') ready++;
      if (w.state === 'busy') {
        ready++;
        busy++;
      }
    }
    return { workers: this.workers.size, ready, busy, queued: this.queue.length, restarts: this.restarts, pids: [...this.workers].map((w) => w.pid), crashLoop: this.inCrashLoop() };
  }

  /** Pids of the busy workers (tests kill one mid-request). */
  busyPids(): number[] {
    return [...this.workers].filter((w) => w.state === 'busy').map((w) => w.pid);
  }

  private inCrashLoop(): boolean {
    return this.pendingSpawns > 0 || Date.now() < this.backoffUntil;
  }

  private hasReady(): boolean {
    for (const w of this.workers) if (w.state === 'idle' || w.state === 'busy') return true;
    return false;
  }

  private crashLoopError(): RenderError {
    return new RenderError('start', `the render workers keep crashing (${this.crashes.length} crashes in ${CRASH_WINDOW_MS / 1000} s; last: ${this.lastCrash}); retrying with back-off`);
  }

  render(request: Record<string, unknown>): Promise<RenderReply> {
    if (this.closed) return Promise.reject(new RenderError('closed', 'the renderer is shutting down'));
    // In a crash loop with nothing ready: answer now (503) rather than keep the caller waiting.
    if (this.inCrashLoop() && !this.hasReady()) return Promise.reject(this.crashLoopError());
    return new Promise<RenderReply>((resolve, reject) => {
      const job: Job = { request: { ...request, id: this.nextId++ }, resolve, reject, attempts: 0 };
      const idle = [...this.workers].find((w) => w.state === 'idle');
      if (idle) return this.assign(idle, job);
      if (this.queue.length >= this.opts.queue) return reject(new PoolOverloadedError(this.queue.length));
      this.enqueue(job, false);
    });
  }

  /**
   * Queue a job (at the front for a retry). While no worker is ready at all (they are being replaced), a job
   * waits at most NO_WORKER_WAIT_MS, so callers hear "unavailable" in bounded time rather than waiting for a
   * worker that may not come; once a worker is ready it waits its turn as usual (the queue is bounded).
   */
  private enqueue(job: Job, front: boolean): void {
    if (front) this.queue.unshift(job);
    else this.queue.push(job);
    if (this.hasReady()) return;
    job.waitTimer = setTimeout(() => {
      const i = this.queue.indexOf(job);
      if (i < 0 || this.hasReady()) return;
      this.queue.splice(i, 1);
      job.reject(new RenderError('start', `no render worker became ready within ${NO_WORKER_WAIT_MS} ms (they are being replaced)`));
    }, NO_WORKER_WAIT_MS);
    job.waitTimer.unref();
  }

  private dequeue(): Job | undefined {
    const job = this.queue.shift();
    if (job?.waitTimer) clearTimeout(job.waitTimer);
    return job;
  }

  private assign(w: Worker, job: Job): void {
    job.attempts++;
    w.send(job, this.opts.timeoutMs);
  }

  onReady(w: Worker): void {
    this.log.info({ workerPid: w.pid }, 'renderer worker ready');
    if ([...this.workers].every((x) => x.state !== 'starting')) for (const r of this.readyWaiters.splice(0)) r.resolve();
    this.onIdle(w);
  }

  /** A render succeeded: whatever crashed before, the workers can draw; the crash loop is over. */
  onSuccess(): void {
    this.renders++;
    if (this.crashes.length > 0) this.crashes = [];
  }

  onIdle(w: Worker): void {
    const planned = this.opts.maxRenders > 0 && w.renders >= this.opts.maxRenders;
    const rss = this.opts.maxRssBytes > 0 && w.renders > 0 ? residentBytes(w.pid) : 0;
    if (planned || rss > this.opts.maxRssBytes) {
      if (!planned) {
        this.rssRetirements++;
        this.log.info({ workerPid: w.pid, rssMiB: Math.round(rss / 1048576), limitMiB: Math.round(this.opts.maxRssBytes / 1048576) }, 'renderer worker retired: resident memory above --worker-max-rss');
      }
      this.workers.delete(w);
      w.retire();
      this.spawnWorker();
      return;
    }
    const job = this.dequeue();
    if (job) this.assign(w, job);
  }

  onTimeout(w: Worker): void {
    const job = w.job;
    w.job = null; // not retried: fail it here, then replace the worker
    w.kill(`render took longer than ${this.opts.timeoutMs} ms`, 'hang');
    job?.reject(new RenderError('timeout', `the chart took longer than ${this.opts.timeoutMs} ms to draw`));
  }

  onDeath(w: Worker, why: string, job: Job | null, wasStarting: boolean): void {
    this.workers.delete(w);
    if (this.closed) {
      job?.reject(new RenderError('closed', 'the renderer is shutting down'));
      return;
    }
    const detail = w.stderrTail.trim().split('\n').slice(-3).join(' | ');
    // Killed from outside by a signal meant to stop it, or by the pool for a hang: one-off, replace at once.
    const killed = w.killedBy === 'hang' || (w.killedBy === null && (w.exitSignal === 'SIGKILL' || w.exitSignal === 'SIGTERM' || w.exitSignal === 'SIGINT' || w.exitSignal === 'SIGHUP'));
    this.restarts++;
    if (job) {
      if (job.attempts < 2) this.enqueue(job, true);
      else job.reject(new RenderError('crash', `the render worker died twice on this request (${why})`));
    }
    if (killed) {
      this.log.warn({ workerPid: w.pid, why }, 'renderer worker killed; replacing it');
      this.spawnWorker();
      return;
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => t > now - CRASH_WINDOW_MS);
    this.crashes.push(now);
    this.lastCrash = `renderer worker ${why}${detail ? `: ${detail}` : ''}`;
    this.log.error({ workerPid: w.pid, why, stderr: detail, starting: wasStarting, crashes: this.crashes.length }, 'renderer worker crashed');
    if (wasStarting && this.readyWaiters.length > 0) {
      // The pool has never been ready: Python itself is broken; start() fails with the reason.
      this.failStart(`${this.opts.python} ${this.opts.script}: ${this.lastCrash}`);
      return;
    }
    if (this.crashes.length <= CRASH_FREE_RESTARTS) {
      this.spawnWorker();
      return;
    }
    // A crash loop: back off, and fail what waits when nothing can serve it.
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (this.crashes.length - CRASH_FREE_RESTARTS - 1));
    this.backoffUntil = Math.max(this.backoffUntil, now + delay);
    if (!this.hasReady()) for (const j of this.queue.splice(0)) (clearTimeout(j.waitTimer), j.reject(this.crashLoopError()));
    this.log.error({ delayMs: delay, crashes: this.crashes.length }, 'renderer workers crash in a loop: backing off before the next start');
    this.pendingSpawns++;
    setTimeout(() => {
      this.pendingSpawns--;
      this.spawnWorker();
    }, delay).unref();
  }

  /** Stop every worker; pending requests fail with RenderError('closed'). */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queue.splice(0)) (clearTimeout(j.waitTimer), j.reject(new RenderError('closed', 'the renderer is shutting down')));
    const exits = [...this.workers].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.proc.exitCode !== null || w.proc.signalCode !== null) return resolve();
          w.proc.once('exit', () => resolve());
          w.proc.stdin.end();
          setTimeout(() => w.proc.kill('SIGKILL'), 1500).unref();
        }),
    );
    await Promise.all(exits);
    this.workers.clear();
  }
}
