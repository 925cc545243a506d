/**
 * Write stage: sends spooled batches to InfluxDB, oldest first, one request at a time, gzip-compressed,
 * to `/write` (1.x) or `/api/v2/write` (2.x). A batch leaves the spool only when InfluxDB answered 2xx,
 * or when it was dead-lettered. Every HTTP outcome is sorted:
 *
 * - network error, timeout, 5xx: retry the same batch with capped exponential backoff and jitter;
 * - 429 and 503: throttled: wait for Retry-After when given (capped), else the backoff;
 * - 413: too large: split the batch in halves and send each (a single line still too large is
 *   dead-lettered);
 * - 401, 403 (credentials) and 404 (no such database/bucket): a configuration error: logged clearly,
 *   /readyz goes red, batches stay spooled and are retried (every 30 s at most) until it is fixed;
 * - any other 4xx (e.g. 400 partial write, 422): InfluxDB will never accept it: the lines go to
 *   `dead-letter.lp` in the spool directory with InfluxDB's message, and a log line says so.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describeTarget, InfluxError, writeLines, type InfluxTarget } from '@tcplat/core';
import type { Counter, Metrics } from '../metrics';
import type { Spool, SpoolRecord } from '../spool/spool';
import type { Logger } from '../types';

export interface WriterOptions {
  timeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Longest Retry-After honoured. */
  maxRetryAfterMs?: number;
  deadLetterMaxBytes?: number;
  random?: () => number;
  log: Logger;
  metrics: Metrics;
}

export interface WriterState {
  healthy: boolean;
  lastSuccessMs: number | null;
  lastError: string | null;
  lastErrorMs: number | null;
  consecutiveFailures: number;
  /** Set while InfluxDB refuses the credentials or the database/bucket (401/403/404). */
  configError: string | null;
  inFlight: boolean;
}

type Outcome = 'ok' | 'retry' | 'dead';

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

export class Writer {
  readonly state: WriterState = {
    healthy: true,
    lastSuccessMs: null,
    lastError: null,
    lastErrorMs: null,
    consecutiveFailures: 0,
    configError: null,
    inFlight: false,
  };
  private running: Promise<void> | null = null;
  private stopper = new AbortController();
  private wake: (() => void) | null = null;
  private readonly written: Counter;
  private readonly writtenBatches: Counter;
  private readonly retries = new Map<string, Counter>();
  private readonly deadLines: Counter;
  private readonly splits: Counter;
  private readonly timeoutMs: number;
  private readonly minBackoff: number;
  private readonly maxBackoff: number;
  private readonly maxRetryAfter: number;
  private readonly random: () => number;
  private readonly deadLetterFile: string;
  private lastConfigLogMs = 0;
  private stopped = false;
  private kicked = false;

  constructor(
    private readonly target: InfluxTarget,
    private readonly spool: Spool,
    private readonly opts: WriterOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.minBackoff = opts.minBackoffMs ?? 200;
    this.maxBackoff = opts.maxBackoffMs ?? 30_000;
    this.maxRetryAfter = opts.maxRetryAfterMs ?? 300_000;
    this.random = opts.random ?? Math.random;
    this.deadLetterFile = path.join(spool.dir, 'dead-letter.lp');
    const m = opts.metrics;
    this.written = m.counter('tcplat_written_lines_total', 'Lines InfluxDB accepted');
    this.writtenBatches = m.counter('tcplat_written_batches_total', 'Write requests InfluxDB accepted');
    this.deadLines = m.counter('tcplat_dead_letter_lines_total', 'Lines InfluxDB refused for good (4xx), kept in dead-letter.lp');
    this.splits = m.counter('tcplat_write_splits_total', 'Batches split in two after HTTP 413');
    m.gauge('tcplat_writer_healthy', '1 when the last write succeeded or nothing failed yet', () => (this.state.healthy ? 1 : 0));
  }

  private retry(reason: string): void {
    let c = this.retries.get(reason);
    if (!c) {
      c = this.opts.metrics.counter('tcplat_write_retries_total', 'Write attempts that will be retried, by reason', { reason });
      this.retries.set(reason, c);
    }
    c.inc();
  }

  /** Start sending (idempotent); call after every append. */
  kick(): void {
    if (this.stopped) return;
    this.kicked = true;
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
    if (!this.running) this.running = this.loop().finally(() => (this.running = null));
  }

  /** True when nothing is left to send. */
  get idle(): boolean {
    return this.spool.empty && !this.state.inFlight;
  }

  /** Wait until the spool is empty or the deadline passes; true when empty. */
  async drain(deadlineMs: number, shouldStop: () => boolean = () => false): Promise<boolean> {
    this.kick();
    while (!this.idle) {
      if (Date.now() >= deadlineMs || this.stopped || shouldStop()) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** Stop sending; an in-flight request is aborted and its batch stays spooled. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopper.abort();
    if (this.wake) this.wake();
    await this.running;
  }

  private async loop(): Promise<void> {
    const signal = this.stopper.signal;
    let attempt = 0;
    while (!signal.aborted) {
      this.kicked = false;
      let rec: SpoolRecord | undefined;
      try {
        rec = await this.spool.next();
      } catch (e) {
        // The spool's worker failed: say so and try again later rather than let the loop die.
        this.opts.log.error({ err: (e as Error).message }, 'cannot read the next batch from the spool');
        await sleep(this.maxBackoff, signal);
        continue;
      }
      if (!rec) {
        // An append (or stop) may have come while next() was on its way: look again instead of sleeping.
        if (!this.kicked && !signal.aborted) await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      this.state.inFlight = true;
      let waitMs = 0;
      try {
        const result = await this.sendRecord(rec, signal);
        if (result.outcome === 'ok' || result.outcome === 'dead') {
          // A failed ack means the batch is sent again later: the same points, which InfluxDB stores once.
          await this.spool.ack(rec).catch((e: Error) => this.opts.log.error({ err: e.message }, 'cannot acknowledge a batch in the spool'));
          attempt = 0;
          continue;
        }
        attempt++;
        const backoff = Math.min(this.maxBackoff, this.minBackoff * 2 ** Math.min(attempt - 1, 20));
        const jittered = backoff / 2 + (this.random() * backoff) / 2;
        waitMs = result.retryAfterMs !== undefined ? Math.min(this.maxRetryAfter, Math.max(result.retryAfterMs, this.minBackoff)) : jittered;
      } finally {
        this.state.inFlight = false;
      }
      if (waitMs > 0) await sleep(waitMs, signal);
    }
  }

  /** Send one spooled batch, splitting on 413. */
  private async sendRecord(rec: SpoolRecord, signal: AbortSignal): Promise<{ outcome: Outcome; retryAfterMs?: number }> {
    const payload = rec.payload;
    const first = await this.send(payload, true, rec.lines, signal);
    if (first.status !== 413) return this.settle(first, () => zlib.gunzipSync(payload).toString('utf8'), rec.lines);
    // 413: split until every part fits (or a single line does not).
    this.splits.inc();
    const text = zlib.gunzipSync(payload).toString('utf8');
    const parts: string[][] = [];
    const lines = text.split('\n').filter((l) => l !== '');
    const half = Math.ceil(lines.length / 2);
    parts.push(lines.slice(0, half), lines.slice(half));
    while (parts.length > 0) {
      const part = parts.shift()!;
      if (part.length === 0) continue;
      const body = part.join('\n') + '\n';
      const r = await this.send(Buffer.from(body), false, part.length, signal);
      if (r.status === 413 && part.length > 1) {
        this.splits.inc();
        const h = Math.ceil(part.length / 2);
        parts.unshift(part.slice(0, h), part.slice(h));
        continue;
      }
      const settled = this.settle(r, () => body, part.length);
      // A part that must be retried: retry the whole batch later (parts already written are rewritten
      // identically, which InfluxDB treats as the same points).
      if (settled.outcome === 'retry') return settled;
    }
    return { outcome: 'ok' };
  }

  private async send(body: Buffer, gzip: boolean, lines: number, signal: AbortSignal): Promise<{ status: number; error?: InfluxError; lines: number }> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    try {
      await writeLines(this.target, body, { gzip, signal: both });
      return { status: 204, lines };
    } catch (e) {
      if (e instanceof InfluxError) {
        if (e.status === 0 && timeout.aborted && !signal.aborted) {
          return { status: 0, lines, error: new InfluxError(`no answer from ${describeTarget(this.target)} within ${this.timeoutMs} ms`, 0) };
        }
        return { status: e.status, error: e, lines };
      }
      return { status: 0, error: new InfluxError((e as Error).message, 0), lines };
    }
  }

  private settle(r: { status: number; error?: InfluxError; lines: number }, text: () => string, lines: number): { outcome: Outcome; retryAfterMs?: number } {
    const now = Date.now();
    if (r.status >= 200 && r.status < 300) {
      this.written.inc(lines);
      this.writtenBatches.inc();
      if (!this.state.healthy || this.state.configError) this.opts.log.info({ target: describeTarget(this.target) }, 'InfluxDB accepts writes again');
      Object.assign(this.state, { healthy: true, lastSuccessMs: now, consecutiveFailures: 0, configError: null });
      return { outcome: 'ok' };
    }
    const err = r.error!;
    const msg = err.body ? err.body.trim().slice(0, 500) : err.message;
    this.state.lastError = err.message;
    this.state.lastErrorMs = now;
    if (r.status === 401 || r.status === 403 || r.status === 404) {
      this.state.consecutiveFailures++;
      this.state.healthy = false;
      const what =
        r.status === 404
          ? `InfluxDB says the database or bucket does not exist (HTTP 404: ${msg}): create it, or fix --influx-db / --influx-bucket / --influx-org`
          : `InfluxDB refused the credentials (HTTP ${r.status}: ${msg}): fix --influx-user/--influx-password (1.x) or --influx-token (2.x)`;
      this.state.configError = what;
      if (now - this.lastConfigLogMs > 60_000) {
        this.lastConfigLogMs = now;
        this.opts.log.error({ status: r.status, target: describeTarget(this.target), spooledLines: this.spool.lines }, `${what}; batches stay in the spool and are retried`);
      }
      this.retry(r.status === 404 ? 'not_found' : 'auth');
      return { outcome: 'retry' };
    }
    if (r.status >= 400 && r.status < 500 && r.status !== 429) {
      const body = text();
      this.deadLetter(r.status, msg, body);
      this.deadLines.inc(lines);
      this.opts.log.error(
        { status: r.status, lines, file: this.deadLetterFile, influx: msg },
        `InfluxDB refused a batch for good (HTTP ${r.status}: ${msg}); its ${lines} lines are in ${this.deadLetterFile}`,
      );
      return { outcome: 'dead' };
    }
    this.state.consecutiveFailures++;
    if (this.state.consecutiveFailures >= 3) this.state.healthy = false;
    const reason = r.status === 0 ? 'network' : r.status === 429 || r.status === 503 ? `throttled_${r.status}` : `http_${r.status}`;
    this.retry(reason);
    if (this.state.consecutiveFailures === 1 || this.state.consecutiveFailures % 10 === 0) {
      this.opts.log.warn({ status: r.status, failures: this.state.consecutiveFailures, spooledLines: this.spool.lines }, `write failed, will retry: ${err.message}`);
    }
    return { outcome: 'retry', retryAfterMs: r.status === 429 || r.status === 503 ? err.retryAfterMs : undefined };
  }

  private deadLetter(status: number, msg: string, body: string): void {
    try {
      let size = 0;
      try {
        size = fs.statSync(this.deadLetterFile).size;
      } catch {
        /* new file */
      }
      if (size + body.length > (this.opts.deadLetterMaxBytes ?? 100 << 20)) {
        this.opts.log.error({ file: this.deadLetterFile }, 'dead-letter file is full (100 MiB): refused lines are only counted');
        return;
      }
      fs.appendFileSync(this.deadLetterFile, `# ${new Date().toISOString()} HTTP ${status}: ${msg.replace(/\n/g, ' ')}\n${body}`, { mode: 0o600 });
    } catch (e) {
      this.opts.log.error({ err: (e as Error).message }, 'cannot write the dead-letter file');
    }
  }
}
