/**
 * Durable spool: every batch of line protocol is committed to SQLite (WAL, synchronous=FULL: the commit is
 * fsynced) before it counts as accepted, and stays there until InfluxDB has it.
 *
 * Why SQLite and not our own segment log: its crash safety (torn writes, partial commits, power loss) is
 * tested by others far beyond what we could (see sqlite.org/testing.html); one row per batch with an
 * AUTOINCREMENT id gives monotonic ids that survive restarts, and "ack" is a DELETE, so there is no
 * separate progress file that can disagree with the data.
 *
 * All SQLite I/O happens in a worker thread (worker.ts, store.ts): this class is the main thread's async
 * handle. Every reply carries the store's counters, so the getters below are synchronous and cheap.
 *
 * - Exclusive ownership: SQLite's exclusive lock on spool.db (taken at open, released by the kernel when the
 *   process dies); a second agent or import on the same directory fails to open, naming the holder's pid.
 * - Size cap: before a batch is inserted, the oldest rows go (never a batch the writer holds from next()),
 *   counted by reason `cap` and logged once per burst.
 * - Disk full / I/O error: the batch is kept in memory (bounded, default 64 MiB; beyond it the oldest held
 *   batch is dropped, reason `pending_full`), the failure is counted by reason, the worker retries every
 *   second and later batches queue behind, so order is kept; the writer can send held batches directly.
 *   Nothing already stored is touched. A crash loses what is held in memory, as it loses events not yet
 *   flushed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { LatencyHistogram } from '@tcplat/core';
import type { Logger } from '../types';
import type { RequestBody, WorkerInit } from './worker';
import type { AppendResult, DropReason, StoreStats } from './store';

export type { AppendResult, DropReason, StoreStats } from './store';

export interface SpoolRecord {
  /** > 0: a row of spool.db; < 0: held in memory because the disk refused it. */
  id: number;
  lines: number;
  createdMs: number;
  /** gzip'd line protocol, sent as is. */
  payload: Buffer;
}

export interface SpoolOptions {
  maxBytes: number;
  pendingMaxBytes?: number;
  retryMs?: number;
  gzipLevel?: number;
  log: Logger;
  /** Append + commit (fsync) durations, in seconds. */
  appendSeconds?: LatencyHistogram;
  /** Called whenever an append has been answered (back-pressure). */
  onAppendSettled?: () => void;
}

export type SpoolStats = StoreStats;

/** The worker's compiled file: beside this one in dist/, or dist/ when this runs from source (jest). */
function workerFile(): string {
  const here = path.join(__dirname, 'worker.js');
  if (fs.existsSync(here)) return here;
  const dist = path.resolve(__dirname, '..', '..', 'dist', 'spool', 'worker.js');
  if (fs.existsSync(dist)) return dist;
  throw new Error(`spool worker not built: neither ${here} nor ${dist} exists (run: npx tsc -b pkg/core agent)`);
}

/** Logs a kind of drop once when a burst starts, then a summary with counts when it has been quiet 10 s. */
class BurstLog {
  private burst: { records: number; lines: number; bytes: number; startMs: number; lastMs: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  constructor(
    private readonly log: Logger,
    private readonly first: (d: { records: number; lines: number; bytes: number }) => string,
    private readonly summary: (d: { records: number; lines: number; bytes: number; seconds: number }) => string,
    private readonly quietMs = 10_000,
  ) {}
  note(d: { records: number; lines: number; bytes: number }): void {
    const now = Date.now();
    if (!this.burst) {
      this.burst = { ...d, startMs: now, lastMs: now };
      this.log.warn({ ...d }, this.first(d));
      this.timer = setInterval(() => this.check(), Math.min(this.quietMs, 1000));
      this.timer.unref();
      return;
    }
    this.burst.records += d.records;
    this.burst.lines += d.lines;
    this.burst.bytes += d.bytes;
    this.burst.lastMs = now;
  }
  check(force = false): void {
    const b = this.burst;
    if (!b || (!force && Date.now() - b.lastMs < this.quietMs)) return;
    this.burst = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const seconds = (b.lastMs - b.startMs) / 1000;
    this.log.warn({ records: b.records, lines: b.lines, bytes: b.bytes, seconds }, this.summary({ ...b, seconds }));
  }
}

interface Waiter {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class Spool {
  private seq = 0;
  private readonly waiters = new Map<number, Waiter>();
  private latest: StoreStats;
  private appendsInFlight = 0;
  private appendBytes = 0;
  private appendsSettled: Promise<void> = Promise.resolve();
  private failed: Error | null = null;
  private closed: Promise<unknown> | null = null;
  private readonly capLog: BurstLog;
  private readonly pendingFullLog: BurstLog;
  private storeFailing = false;

  private constructor(
    readonly dir: string,
    private readonly worker: Worker,
    readonly runId: number,
    stats: StoreStats,
    private readonly opts: SpoolOptions,
  ) {
    this.latest = stats;
    const log = opts.log;
    this.capLog = new BurstLog(
      log,
      (d) => `spool full (cap ${opts.maxBytes} bytes): dropping the oldest batches (${d.records} so far, ${d.lines} lines); InfluxDB has been unreachable or too slow for too long`,
      (d) => `spool cap: dropped ${d.records} batches (${d.lines} lines, ${d.bytes} bytes) over ${d.seconds} s, oldest first`,
    );
    this.pendingFullLog = new BurstLog(
      log,
      (d) => `spool: the disk still refuses batches and the memory bound is reached: dropping the oldest batch held in memory (${d.lines} lines)`,
      (d) => `spool: dropped ${d.records} batches (${d.lines} lines) held in memory while the disk refused them, over ${d.seconds} s`,
    );
    worker.on('message', (m: { type: string; seq?: number; result?: unknown; error?: string; stats?: StoreStats } & Record<string, unknown>) => {
      if (m.stats) this.latest = m.stats;
      if (m.type === 'reply') {
        const w = this.waiters.get(m.seq!);
        this.waiters.delete(m.seq!);
        if (m.error !== undefined) w?.reject(new Error(`spool: ${m.error}`));
        else w?.resolve(m.result);
      } else if (m.type === 'retry') {
        this.noteDrops(m.drops as AppendResult['drops']);
        if ((m.stored as number) > 0 && (m.left as number) === 0) {
          this.storeFailing = false;
          log.info({ stored: m.stored, dir: this.dir }, `spool: the disk takes batches again; stored the ${m.stored as number} batches held in memory`);
        }
      }
    });
    const die = (e: Error) => {
      this.failed ??= e;
      log.error({ err: e.message }, `spool worker stopped: ${e.message}; batches are no longer stored`);
      for (const w of this.waiters.values()) w.reject(e);
      this.waiters.clear();
    };
    worker.on('error', die);
    worker.on('exit', (code) => {
      if (!this.closed) die(new Error(`spool worker exited (code ${code})`));
    });
  }

  /** Open (or create) the spool in `dir`; fails when another process holds it. */
  static open(dir: string, opts: SpoolOptions): Promise<Spool> {
    const init: WorkerInit = { dir, maxBytes: opts.maxBytes, pendingMaxBytes: opts.pendingMaxBytes, gzipLevel: opts.gzipLevel, retryMs: opts.retryMs ?? 1000 };
    const worker = new Worker(workerFile(), { workerData: init });
    return new Promise<Spool>((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`spool worker exited (code ${code}) before opening ${dir}`));
      worker.once('error', reject);
      worker.once('exit', onExit);
      worker.once('message', (m: { type: string; runId?: number; stats?: StoreStats; message?: string }) => {
        worker.off('error', reject);
        worker.off('exit', onExit);
        if (m.type !== 'ready') {
          void worker.terminate();
          return reject(new Error(m.message));
        }
        const s = new Spool(dir, worker, m.runId!, m.stats!, opts);
        const legacy = fs.readdirSync(dir).filter((f) => /^seg-\d{16}\.spool$/.test(f));
        if (legacy.length > 0) {
          opts.log.warn({ dir, files: legacy.length }, `spool: ${legacy.length} segment files of the pre-SQLite spool are in ${dir}; they are not read (send them with the older agent, or delete them)`);
        }
        if (m.stats!.replayedRecords > 0) {
          opts.log.info(
            { records: m.stats!.replayedRecords, lines: m.stats!.replayedLines, bytes: m.stats!.bytes, runId: m.runId },
            `spool: ${m.stats!.replayedRecords} batches (${m.stats!.replayedLines} lines) left by an earlier run will be sent`,
          );
        }
        resolve(s);
      });
    });
  }

  private call<T>(req: RequestBody): Promise<T> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed && req.op !== 'close') return Promise.reject(new Error('spool: closed'));
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.waiters.set(seq, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...req, seq });
    });
  }

  private noteDrops(drops: AppendResult['drops'] | undefined): void {
    for (const d of drops ?? []) {
      if (d.reason === 'cap') this.capLog.note(d);
      else if (d.reason === 'pending_full') this.pendingFullLog.note(d);
    }
  }

  /**
   * Compress and store one batch (in the worker). Resolves once it is committed and fsynced (`stored`), or
   * held in memory because the disk refused it (`stored: false`, retried by itself).
   */
  append(text: string, lines: number): Promise<AppendResult> {
    // Only the size is kept here: the callbacks below live until the worker has committed the batch, and
    // holding the text in them kept every batch on its way to the disk in the heap (up to the 32 MiB
    // backlog; measured: 7-18 MB of large strings at the import's peak).
    const size = text.length;
    this.appendsInFlight++;
    this.appendBytes += size;
    const p = this.call<AppendResult>({ op: 'append', text, lines }).then((r) => {
      if (r.storeMs !== undefined) this.opts.appendSeconds?.observe(r.storeMs / 1000);
      this.noteDrops(r.drops);
      if (r.stored && this.storeFailing && this.latest.pendingRecords === 0) {
        this.storeFailing = false;
        this.opts.log.info({ dir: this.dir }, 'spool: the disk takes batches again; the batches held in memory are stored');
      }
      if (!r.stored && !this.storeFailing) {
        this.storeFailing = true;
        this.opts.log.error(
          { reason: r.failure?.reason, err: r.failure?.message, dir: this.dir, heldBatches: this.latest.pendingRecords, heldBytes: this.latest.pendingBytes },
          `spool: cannot store a batch in ${this.dir} (${r.failure?.reason ?? 'queued behind earlier ones'}: ${r.failure?.message ?? ''}); ` +
            'batches are kept in memory (bounded) and stored as soon as the disk takes them again',
        );
      }
      return r;
    });
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.appendsSettled = Promise.all([this.appendsSettled, settled]).then(() => undefined);
    void settled.then(() => {
      this.appendsInFlight--;
      this.appendBytes -= size;
      this.opts.onAppendSettled?.();
    });
    return p;
  }

  /** Resolves when every append issued so far has been answered. */
  settled(): Promise<void> {
    return this.appendsSettled;
  }

  /**
   * The oldest batch not yet acknowledged and not already handed out (stored ones first, then ones held in
   * memory). It is the caller's until ack() or release(): the size cap never drops it, and the next call
   * hands out the batch after it, so a writer can send several at once.
   */
  async next(): Promise<SpoolRecord | undefined> {
    const r = await this.call<(Omit<SpoolRecord, 'payload'> & { payload: Uint8Array }) | undefined>({ op: 'next' });
    if (!r) return undefined;
    return { ...r, payload: Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength) };
  }

  /**
   * InfluxDB has the batch (or it was dead-lettered): delete it. False when the disk refused even the
   * delete: the batch is skipped from now on and deleted later; a crash before that sends it again (the
   * same points with the same timestamps, which InfluxDB stores once).
   */
  ack(rec: SpoolRecord | number): Promise<boolean> {
    return this.call<boolean>({ op: 'ack', id: typeof rec === 'number' ? rec : rec.id });
  }

  /** Give back a batch from next() unsent (the writer stops): a later next() hands it out again. */
  release(rec: SpoolRecord | number): Promise<void> {
    return this.call<void>({ op: 'release', id: typeof rec === 'number' ? rec : rec.id });
  }

  /** Every batch waiting, oldest first, as text (diagnostics and tests). */
  list(): Promise<{ id: number; lines: number; text: string }[]> {
    return this.call({ op: 'list' });
  }

  /** Stop the worker after one last attempt to store what is held in memory; counts what is lost. */
  async close(): Promise<{ records: number; lines: number } | null> {
    if (this.closed) {
      await this.closed;
      return null;
    }
    await this.appendsSettled;
    this.closed = this.failed ? Promise.resolve() : this.call<{ records: number; lines: number }>({ op: 'close' }).catch(() => null);
    const lost = (await this.closed) as { records: number; lines: number } | null;
    this.capLog.check(true);
    this.pendingFullLog.check(true);
    if (lost && lost.records > 0) {
      this.opts.log.error({ records: lost.records, lines: lost.lines, dir: this.dir }, `spool: the disk refused ${lost.records} batches (${lost.lines} lines) until the end; they are lost`);
    }
    await this.worker.terminate();
    return lost;
  }

  /** Text bytes of the appends sent to the worker and not yet answered (what a slow disk lets pile up). */
  get appendingBytes(): number {
    return this.appendBytes;
  }

  /** Appends sent to the worker and not yet answered. */
  get appending(): number {
    return this.appendsInFlight;
  }

  get stats(): StoreStats {
    return this.latest;
  }

  /** Nothing left to send: no append on its way, nothing stored or held. */
  get empty(): boolean {
    return this.appendsInFlight === 0 && this.latest.records === 0 && this.latest.pendingRecords === 0;
  }

  /** Lines waiting (stored or held in memory). */
  get lines(): number {
    return this.latest.lines + this.latest.pendingLines;
  }

  get records(): number {
    return this.latest.records + this.latest.pendingRecords;
  }

  get bytes(): number {
    return this.latest.bytes;
  }

  get oldestMs(): number | null {
    return this.latest.oldestMs;
  }

  droppedLines(reason?: DropReason): number {
    const d = this.latest.dropped;
    return reason ? d[reason].lines : d.cap.lines + d.pending_full.lines + d.unstored_at_close.lines;
  }

  /** For /api/status: `records`/`lines` count everything waiting, stored or held in memory. */
  snapshot(): StoreStats & { storedRecords: number; storedLines: number; appending: number } {
    return { ...this.latest, records: this.records, lines: this.lines, storedRecords: this.latest.records, storedLines: this.latest.lines, appending: this.appendsInFlight };
  }
}
