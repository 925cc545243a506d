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
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
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
    this.proc.on('exit', (code, signal) => this.die(`exited (${signal ?? `code ${code}`})`));
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
    if (header.ok === true) job.resolve({ header, png, pid: this.pid });
    else job.reject(new RenderError('render', `the chart could not be drawn: ${String(header.error ?? 'unknown error')}`));
    this.pool.onIdle(this);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  kill(why: string): void {
    if (this.state === 'dead') return;
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
  private startFailures = 0;
  private lastStartError = '';
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Workers replaced after a crash, hang or framing error (not counting maxRenders retirements). */
  restarts = 0;
  renders = 0;

  constructor(opts: PoolOptions) {
    this.opts = {
      script: WORKER_SCRIPT,
      startTimeoutMs: 30_000,
      maxRenders: 0,
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

  stats(): { workers: number; ready: number; busy: number; queued: number; restarts: number; pids: number[] } {
    let ready = 0;
    let busy = 0;
    for (const w of this.workers) {
      if (w.state === 'idle') ready++;
      if (w.state === 'busy') {
        ready++;
        busy++;
      }
    }
    return { workers: this.workers.size, ready, busy, queued: this.queue.length, restarts: this.restarts, pids: [...this.workers].map((w) => w.pid) };
  }

  /** Pids of the busy workers (tests kill one mid-request). */
  busyPids(): number[] {
    return [...this.workers].filter((w) => w.state === 'busy').map((w) => w.pid);
  }

  render(request: Record<string, unknown>): Promise<RenderReply> {
    if (this.closed) return Promise.reject(new RenderError('closed', 'the renderer is shutting down'));
    return new Promise<RenderReply>((resolve, reject) => {
      const job: Job = { request: { ...request, id: this.nextId++ }, resolve, reject, attempts: 0 };
      const idle = [...this.workers].find((w) => w.state === 'idle');
      if (idle) return this.assign(idle, job);
      if (this.queue.length >= this.opts.queue) return reject(new PoolOverloadedError(this.queue.length));
      this.queue.push(job);
    });
  }

  private assign(w: Worker, job: Job): void {
    job.attempts++;
    w.send(job, this.opts.timeoutMs);
  }

  onReady(w: Worker): void {
    this.startFailures = 0;
    this.log.info({ workerPid: w.pid }, 'renderer worker ready');
    if ([...this.workers].every((x) => x.state !== 'starting')) for (const r of this.readyWaiters.splice(0)) r.resolve();
    this.onIdle(w);
  }

  onIdle(w: Worker): void {
    if (this.opts.maxRenders > 0 && w.renders >= this.opts.maxRenders) {
      this.workers.delete(w);
      w.retire();
      this.spawnWorker();
      return;
    }
    const job = this.queue.shift();
    if (job) this.assign(w, job);
  }

  onTimeout(w: Worker): void {
    const job = w.job;
    w.job = null; // not retried: fail it here, then replace the worker
    w.kill(`render took longer than ${this.opts.timeoutMs} ms`);
    job?.reject(new RenderError('timeout', `the chart took longer than ${this.opts.timeoutMs} ms to draw`));
  }

  onDeath(w: Worker, why: string, job: Job | null, wasStarting: boolean): void {
    this.workers.delete(w);
    if (this.closed) {
      job?.reject(new RenderError('closed', 'the renderer is shutting down'));
      return;
    }
    const detail = w.stderrTail.trim().split('\n').slice(-3).join(' | ');
    if (wasStarting) {
      this.startFailures++;
      this.lastStartError = `renderer worker ${why}${detail ? `: ${detail}` : ''}`;
      this.log.error({ workerPid: w.pid, why, stderr: detail }, 'renderer worker failed to start');
      if (this.readyWaiters.length > 0) {
        this.failStart(`${this.opts.python} ${this.opts.script}: ${this.lastStartError}`);
        return;
      }
    } else {
      this.log.warn({ workerPid: w.pid, why, stderr: detail }, 'renderer worker died; replacing it');
    }
    this.restarts++;
    if (job) {
      if (job.attempts < 2) this.queue.unshift(job);
      else job.reject(new RenderError('crash', `the render worker died twice on this request (${why})`));
    }
    // Back off when workers cannot even start (broken Python): fail queued work with the reason instead of spinning.
    if (this.startFailures >= 3) {
      for (const j of this.queue.splice(0)) j.reject(new RenderError('start', `the render workers cannot start: ${this.lastStartError}`));
      setTimeout(() => this.spawnWorker(), Math.min(30_000, 1000 * 2 ** Math.min(this.startFailures, 5))).unref();
      return;
    }
    this.spawnWorker();
  }

  /** Stop every worker; pending requests fail with RenderError('closed'). */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queue.splice(0)) j.reject(new RenderError('closed', 'the renderer is shutting down'));
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
