/**
 * Write stage: sends spooled batches to InfluxDB, oldest first, gzip-compressed, to `/write` (1.x) or
 * `/api/v2/write` (2.x), up to `concurrency` requests at a time (default 4) while InfluxDB answers, one at a
 * time while it fails (so a sick server is probed, not hammered; a throttle or backoff holds every request).
 * Parallel requests are what keeps an import fast: the agent's event loop is busy parsing, so one
 * request at a time would leave InfluxDB idle between an answer and the next request. Order between
 * batches does not matter to InfluxDB (every point carries its own unique timestamp).
 *
 * A batch leaves the spool only when every one of its lines was stored by InfluxDB, refused for good and
 * kept in the dead-letter file (fsynced), or counted as dropped by reason. Every HTTP outcome is sorted as InfluxDB's own source answers (1.x
 * services/httpd/handler.go serveWrite, 2.x http/write_handler.go) and as Telegraf's outputs sort them:
 *
 * - network error, timeout, 5xx: retry the same batch with capped exponential backoff and jitter;
 * - 429, 502, 503, 504: throttled: wait max(backoff, Retry-After) (Retry-After in seconds, fractional, or an
 *   HTTP date; capped); a Retry-After of 0 never makes a fast loop, the backoff still grows;
 * - 413: too large: split the batch in halves until every part fits (one line still too large is refused);
 * - a partial write (1.x: 400 "partial write: ... dropped=N", also with "unable to parse" lines; 2.x:
 *   422 "failure writing points to database: partial write: ... dropped=N"): InfluxDB stored the rest.
 *   The part is bisected (re-sending stored lines rewrites the same points) so that exactly the refused
 *   lines are found, counted and dead-lettered; beyond `maxBisectDropped` refused lines it is not: N are
 *   counted as dropped (`partial_write`) and the whole part is kept in the dead-letter file, marked;
 * - any other 400 or 422 (2.x refuses a whole batch over one unparsable line): bisected like a 413, so
 *   only the lines InfluxDB refuses on their own are dead-lettered;
 * - 401, 403 (credentials) and 404 (no such database/bucket): a configuration error: logged clearly,
 *   /readyz goes red, batches stay spooled and are retried with the backoff until it is fixed;
 * - any other 4xx: InfluxDB will never accept the request: its lines are dead-lettered.
 *
 * Bisection progress is kept across retries, so a 5xx in the middle of a split resumes where it stopped
 * and no line is counted twice. Every line dropped on purpose is counted in
 * tcplat_write_dropped_lines_total{reason} and logged once per burst with counts. The send loop catches
 * everything: an unexpected error is logged, counted (tcplat_write_loop_errors_total) and backed off from.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describeTarget, InfluxError, writeLines, type InfluxTarget } from '@tcplat/core';
import type { Counter, Metrics } from '../metrics';
import type { Spool, SpoolRecord } from '../spool/spool';
import type { Logger } from '../types';
import { BurstLog } from './burst-log';

export interface WriterOptions {
  timeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Longest Retry-After honoured. */
  maxRetryAfterMs?: number;
  deadLetterMaxBytes?: number;
  /** A partial write refusing more lines than this is not bisected (see the module comment). */
  maxBisectDropped?: number;
  random?: () => number;
  /** Write requests in flight at most while InfluxDB answers (one while it fails). Default 4. */
  concurrency?: number;
  /**
   * Called when every line of a batch is settled (InfluxDB has what it accepted), before the batch leaves
   * the spool: the rollup job marks the batch's hist windows dirty (a crash before the ack sends it again).
   * Awaited before the ack (an async hook delays only its own batch). With parallel requests batches settle in any order.
   */
  onDelivered?: (rec: SpoolRecord) => void | Promise<void>;
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
  /** A batch is being sent or acknowledged. */
  inFlight: boolean;
  /** Write requests on their way. */
  requestsInFlight: number;
}

/** Why lines were dropped on purpose (the `reason` label of tcplat_write_dropped_lines_total). */
export type WriteDropReason =
  /** InfluxDB refused the line for good (4xx); it is in the dead-letter file. */
  | 'refused'
  /** InfluxDB dropped lines of a partial write without saying which; the part is in the dead-letter file. */
  | 'partial_write'
  /** One line alone is larger than InfluxDB accepts (413). */
  | 'too_large'
  /** Refused lines that could not be kept: the dead-letter file is full or cannot be written. */
  | 'dead_letter_failed'
  /** A spooled batch could not be read back or decompressed. */
  | 'unreadable';

/** What one HTTP answer means for the lines sent. */
export type Verdict =
  | { kind: 'ok' }
  | { kind: 'retry'; reason: string; retryAfterMs?: number }
  | { kind: 'split'; reason: 'too_large' | 'refused' }
  | { kind: 'partial'; dropped: number }
  | { kind: 'dead' };

const THROTTLE = new Set([429, 502, 503, 504]);

/**
 * InfluxDB's message, on one line and bounded: it echoes refused lines whole (up to megabytes); the start
 * and the end (where the reason is) are kept.
 */
export function excerpt(text: string, max = 500): string {
  const t = text.trim().replace(/\s+/g, ' ');
  return t.length <= max ? t : `${t.slice(0, max / 2 - 2)} … ${t.slice(t.length - max / 2 + 1)}`;
}

/**
 * How many lines a partial write refused, from InfluxDB's message: `dropped=N` counts points the storage
 * engine refused (field type conflicts, beyond the retention policy); 1.x adds one `unable to parse '...'`
 * per line that did not parse (and reports those with dropped=0). Null when the message is no partial write.
 */
export function partialWriteDropped(body: string): number | null {
  if (!/partial write/.test(body)) return null;
  let n = 0;
  const m = /dropped=(\d+)/g;
  let last: RegExpExecArray | null = null;
  for (let x = m.exec(body); x; x = m.exec(body)) last = x;
  if (last) n += Number(last[1]);
  n += body.split('unable to parse ').length - 1;
  return n;
}

/** Sort one answer (see the module comment). `status` 0: no answer (network, timeout). */
export function classify(status: number, body: string, retryAfterMs: number | undefined): Verdict {
  if (status >= 200 && status < 300) return { kind: 'ok' };
  if (status === 0) return { kind: 'retry', reason: 'network' };
  if (THROTTLE.has(status)) return { kind: 'retry', reason: `throttled_${status}`, retryAfterMs };
  if (status >= 500) return { kind: 'retry', reason: `http_${status}` };
  if (status === 401 || status === 403) return { kind: 'retry', reason: 'auth' };
  if (status === 404) return { kind: 'retry', reason: 'not_found' };
  if (status === 413) return { kind: 'split', reason: 'too_large' };
  if (status === 400 || status === 422) {
    const dropped = partialWriteDropped(body);
    return dropped !== null && dropped > 0 ? { kind: 'partial', dropped } : { kind: 'split', reason: 'refused' };
  }
  return { kind: 'dead' };
}

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

/** A piece of a batch still to send: the spooled payload as is, or some of its lines. */
interface Part {
  lines: string[] | null;
  count: number;
}

/** The batch a lane is sending and what of it is left (kept across retries). */
interface Work {
  rec: SpoolRecord;
  parts: Part[];
  text: string[] | null;
  readFailures: number;
}

export class Writer {
  readonly state: WriterState = {
    healthy: true,
    lastSuccessMs: null,
    lastError: null,
    lastErrorMs: null,
    consecutiveFailures: 0,
    configError: null,
    inFlight: false,
    requestsInFlight: 0,
  };
  private running: Promise<void> | null = null;
  private stopper = new AbortController();
  /** Lanes waiting for a batch to arrive. */
  private idle: (() => void)[] = [];
  /** Bumped by kick(): a batch may have arrived while a lane was looking (the spool may answer later). */
  private kicks = 0;
  /** Lanes holding a batch (sending it or acknowledging it). */
  private busy = 0;
  /** Lanes waiting for a request slot. */
  private slotWaiters: (() => void)[] = [];
  /** Shared by every lane: no request before this time (backoff, Retry-After), and the attempt count. */
  private pauseUntil = 0;
  private attempt = 0;
  private readonly concurrency: number;
  private readonly written: Counter;
  private readonly writtenBatches: Counter;
  private readonly retries = new Map<string, Counter>();
  private readonly drops = new Map<string, Counter>();
  private readonly deadLines: Counter;
  private readonly splits: Counter;
  private readonly loopErrors: Counter;
  private readonly timeoutMs: number;
  private readonly minBackoff: number;
  private readonly maxBackoff: number;
  private readonly maxRetryAfter: number;
  private readonly maxBisectDropped: number;
  private readonly random: () => number;
  private readonly deadLetterFile: string;
  private readonly dropLog: BurstLog;
  private readonly loopErrorLog: BurstLog;
  private lastConfigLogMs = 0;
  private stopped = false;

  constructor(
    private readonly target: InfluxTarget,
    private readonly spool: Spool,
    private readonly opts: WriterOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.minBackoff = opts.minBackoffMs ?? 200;
    this.maxBackoff = opts.maxBackoffMs ?? 30_000;
    this.maxRetryAfter = opts.maxRetryAfterMs ?? 300_000;
    this.maxBisectDropped = opts.maxBisectDropped ?? 64;
    this.random = opts.random ?? Math.random;
    this.concurrency = Math.max(1, Math.floor(opts.concurrency ?? 4));
    this.deadLetterFile = path.join(spool.dir, 'dead-letter.lp');
    const m = opts.metrics;
    this.written = m.counter('tcplat_written_lines_total', 'Lines InfluxDB accepted');
    this.writtenBatches = m.counter('tcplat_written_batches_total', 'Write requests InfluxDB accepted');
    this.deadLines = m.counter('tcplat_dead_letter_lines_total', 'Lines InfluxDB refused for good (4xx), kept in dead-letter.lp');
    this.splits = m.counter('tcplat_write_splits_total', 'Batches split in two (HTTP 413, a refused or partial write)');
    this.loopErrors = m.counter('tcplat_write_loop_errors_total', 'Unexpected errors in the send loop (logged, backed off from)');
    for (const r of ['refused', 'partial_write', 'too_large', 'dead_letter_failed', 'unreadable'] as const) this.dropCounter(r);
    m.gauge('tcplat_writer_healthy', '1 when the last write succeeded or nothing failed yet', () => (this.state.healthy ? 1 : 0));
    m.gauge('tcplat_write_requests_in_flight', 'Write requests on their way to InfluxDB', () => this.state.requestsInFlight);
    this.dropLog = new BurstLog(opts.log, 'error', 'lines dropped by the writer');
    this.loopErrorLog = new BurstLog(opts.log, 'error', 'errors in the send loop');
  }

  private dropCounter(reason: WriteDropReason): Counter {
    let c = this.drops.get(reason);
    if (!c) {
      c = this.opts.metrics.counter('tcplat_write_dropped_lines_total', 'Lines the writer dropped on purpose, by reason (refused ones are in dead-letter.lp)', { reason });
      this.drops.set(reason, c);
    }
    return c;
  }

  private drop(reason: WriteDropReason, n: number, msg: string, detail: Record<string, unknown> = {}): void {
    if (n <= 0) return;
    this.dropCounter(reason).inc(n);
    this.dropLog.add(reason, n, msg, detail);
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
    this.kicks++;
    for (const w of this.idle.splice(0)) w();
    if (!this.running) {
      this.running = this.loop()
        .catch((e: unknown) => {
          // loop() catches per iteration; this is a last guard so a rejection can never end the process.
          this.loopErrors.inc();
          this.opts.log.error({ err: (e as Error)?.message }, 'writer: send loop ended by an unexpected error; restarting it');
        })
        .finally(() => {
          this.running = null;
          if (!this.stopped && !this.stopper.signal.aborted) setTimeout(() => this.kick(), this.minBackoff).unref?.();
        });
    }
  }

  /** Wait until the spool is empty or the deadline passes; true when empty. */
  async drain(deadlineMs: number, shouldStop: () => boolean = () => false): Promise<boolean> {
    this.kick();
    while (!this.spool.empty || this.state.inFlight) {
      if (Date.now() >= deadlineMs || this.stopped || shouldStop()) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }

  /** Stop sending; an in-flight request is aborted and its batch stays spooled. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopper.abort();
    for (const w of this.idle.splice(0)) w();
    for (const w of this.slotWaiters.splice(0)) w();
    await this.running;
    this.dropLog.flush();
    this.loopErrorLog.flush();
  }

  private backoffMs(attempt: number): number {
    const backoff = Math.min(this.maxBackoff, this.minBackoff * 2 ** Math.min(Math.max(0, attempt - 1), 20));
    return backoff / 2 + (this.random() * backoff) / 2;
  }

  private loop(): Promise<void> {
    return Promise.all(Array.from({ length: this.concurrency }, () => this.lane())).then(() => undefined);
  }

  /** One sender: takes the oldest batch no other lane holds, sends it until settled, acks it; again. */
  private async lane(): Promise<void> {
    const signal = this.stopper.signal;
    let w: Work | null = null;
    while (!signal.aborted) {
      let waitMs = 0;
      let holding = false;
      try {
        if (!w) {
          const kicks = this.kicks;
          const rec = await this.spool.next();
          if (!rec) {
            // An append (or stop) may have come while next() was on its way: look again instead of sleeping.
            if (kicks === this.kicks && !signal.aborted) await new Promise<void>((r) => this.idle.push(r));
            continue;
          }
          w = { rec, parts: [{ lines: null, count: rec.lines }], text: null, readFailures: 0 };
        }
        holding = true;
        this.busy++;
        this.state.inFlight = true;
        const r = await this.sendRecord(w, signal);
        if (r.done) {
          try {
            await this.opts.onDelivered?.(w.rec);
          } catch (e) {
            this.opts.log.error({ err: (e as Error).message }, 'writer: the delivery hook failed');
          }
          // A failed ack means the batch is sent again later: the same points, which InfluxDB stores once.
          await this.spool.ack(w.rec).catch((e: Error) => this.opts.log.error({ err: e.message }, 'cannot acknowledge a batch in the spool'));
          w = null;
          this.attempt = 0;
          continue;
        }
        if (signal.aborted) break;
        // sendParts set the wait (holdBack) before it gave up its request slot.
        waitMs = this.pauseUntil - Date.now();
      } catch (e) {
        this.loopErrors.inc();
        this.loopErrorLog.add('exception', 1, `writer: unexpected error, retrying after a backoff: ${(e as Error)?.message}`, { stack: (e as Error)?.stack });
        this.holdBack(undefined);
        waitMs = this.pauseUntil - Date.now();
      } finally {
        if (holding) this.busy--;
        this.state.inFlight = this.busy > 0;
      }
      if (waitMs > 0) await sleep(waitMs, signal);
    }
    // Stopped with a batch in hand: give it back, so a later writer on this spool sends it.
    if (w) await this.spool.release(w.rec).catch(() => undefined);
  }

  /**
   * A failed attempt: every lane holds back until the backoff, or max(backoff, Retry-After) as Telegraf
   * does (a Retry-After of 0 never makes a fast loop); the wait is InfluxDB's state, not one batch's.
   */
  private holdBack(retryAfterMs: number | undefined): void {
    this.attempt++;
    let waitMs = this.backoffMs(this.attempt);
    if (retryAfterMs !== undefined) waitMs = Math.max(waitMs, Math.min(this.maxRetryAfter, retryAfterMs));
    this.pauseUntil = Math.max(this.pauseUntil, Date.now() + waitMs);
  }

  /** A request slot: after any backoff or Retry-After, and one at a time while InfluxDB fails. */
  private async slot(signal: AbortSignal): Promise<boolean> {
    for (;;) {
      if (signal.aborted) return false;
      const wait = this.pauseUntil - Date.now();
      if (wait > 0) {
        await sleep(wait, signal);
        continue;
      }
      const limit = this.state.consecutiveFailures > 0 ? 1 : this.concurrency;
      if (this.state.requestsInFlight < limit) {
        this.state.requestsInFlight++;
        return true;
      }
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
  }

  private releaseSlot(): void {
    this.state.requestsInFlight--;
    for (const w of this.slotWaiters.splice(0)) w();
  }

  /** The lines of the batch being sent (decompressed once, when a part must be split). */
  private async linesOf(w: Work): Promise<string[]> {
    if (!w.text) {
      try {
        const payload = w.rec.payload;
        w.text = zlib.gunzipSync(payload).toString('utf8').split('\n').filter((l) => l !== '');
      } catch (e) {
        throw new UnreadableBatch((e as Error).message);
      }
    }
    return w.text;
  }

  /**
   * Send what is left of one spooled batch. `done`: every line is settled (written, dead-lettered or
   * counted), the batch can be acked. Else retry after the backoff (or Retry-After).
   */
  private async sendRecord(w: Work, signal: AbortSignal): Promise<{ done: boolean; retryAfterMs?: number }> {
    const rec = w.rec;
    try {
      return await this.sendParts(w, signal);
    } catch (e) {
      if (!(e instanceof UnreadableBatch)) throw e;
      // The batch cannot be read back (gone, or its gzip is damaged): after a few tries its lines are counted.
      if (++w.readFailures < 3) throw e;
      this.drop('unreadable', w.parts.reduce((a, p) => a + p.count, 0), `spool: a batch cannot be read back (${e.message}); its lines are dropped`, {
        batch: rec.id,
      });
      return { done: true };
    }
  }

  private async sendParts(w: Work, signal: AbortSignal): Promise<{ done: boolean; retryAfterMs?: number }> {
    while (w.parts.length > 0) {
      if (signal.aborted) return { done: false };
      const part = w.parts[0];
      let body: Buffer;
      let gzip: boolean;
      if (part.lines === null) {
        try {
          body = w.rec.payload;
        } catch (e) {
          throw new UnreadableBatch((e as Error).message);
        }
        gzip = true;
      } else {
        body = Buffer.from(part.lines.join('\n') + '\n');
        gzip = false;
      }
      if (!(await this.slot(signal))) return { done: false };
      let r: SendResult;
      let v: Verdict;
      try {
        r = await this.send(body, gzip, signal);
        if (signal.aborted) return { done: false };
        v = classify(r.status, r.error?.body ?? '', r.error?.retryAfterMs);
        this.note(r, v, part.count);
        // Before the slot is free: no other lane may send before it sees the wait.
        if (v.kind === 'retry') this.holdBack(v.retryAfterMs);
      } finally {
        this.releaseSlot();
      }
      switch (v.kind) {
        case 'ok':
          this.written.inc(part.count);
          this.writtenBatches.inc();
          w.parts.shift();
          continue;
        case 'retry':
          return { done: false, retryAfterMs: v.retryAfterMs };
        case 'dead':
          await this.deadLetter(w, part, r, 'refused', part.count);
          w.parts.shift();
          continue;
        case 'partial': {
          // The count comes from InfluxDB's message (which echoes refused lines, so it is a hint): a few
          // refused lines are found exactly by bisecting; many are counted as InfluxDB says.
          if (v.dropped <= this.maxBisectDropped) {
            await this.split(w, part, 'refused', r);
            continue;
          }
          const dropped = Math.min(v.dropped, part.count);
          this.written.inc(part.count - dropped);
          const note = dropped === part.count ? `InfluxDB stored none of these ${part.count} lines` : `InfluxDB stored all but ${dropped} of these ${part.count} lines and did not say which`;
          await this.deadLetter(w, part, r, 'partial_write', dropped, note);
          w.parts.shift();
          continue;
        }
        case 'split':
          await this.split(w, part, v.reason, r);
          continue;
      }
    }
    return { done: true };
  }

  /** Replace `part` (the first) by its halves; a single line cannot be split: it is refused. */
  private async split(w: Work, part: Part, reason: 'too_large' | 'refused', r: SendResult): Promise<void> {
    const lines = part.lines ?? (await this.linesOf(w));
    if (lines.length <= 1) {
      await this.deadLetter(w, { lines, count: lines.length }, r, reason === 'too_large' ? 'too_large' : 'refused', lines.length);
      w.parts.shift();
      return;
    }
    this.splits.inc();
    const h = Math.ceil(lines.length / 2);
    w.parts.splice(0, 1, { lines: lines.slice(0, h), count: h }, { lines: lines.slice(h), count: lines.length - h });
  }

  /** Keep refused lines in the dead-letter file (fsynced before the batch may be acked), and count them. */
  private async deadLetter(w: Work, part: Part, r: SendResult, reason: WriteDropReason, dropped: number, note?: string): Promise<void> {
    const lines = part.lines ?? (await this.linesOf(w));
    const msg = excerpt(r.error?.body ? r.error.body : (r.error?.message ?? ''));
    const header = `# ${new Date().toISOString()} HTTP ${r.status}: ${msg}${note ? ` (${note})` : ''}\n`;
    const text = header + lines.join('\n') + '\n';
    const kept = await this.appendDeadLetter(text);
    if (!kept.ok) {
      this.drop('dead_letter_failed', dropped, `InfluxDB refused lines for good (HTTP ${r.status}: ${msg}) and they cannot be kept: ${kept.why}`, { status: r.status });
      return;
    }
    this.deadLines.inc(dropped);
    this.drop(
      reason,
      dropped,
      `InfluxDB refused ${dropped} line(s) for good (HTTP ${r.status}: ${msg}); they are in ${this.deadLetterFile}`,
      { status: r.status, file: this.deadLetterFile, influx: msg },
    );
  }

  private async appendDeadLetter(text: string): Promise<{ ok: true } | { ok: false; why: string }> {
    let fh: fs.promises.FileHandle | undefined;
    try {
      let size = 0;
      let created = false;
      try {
        size = (await fs.promises.stat(this.deadLetterFile)).size;
      } catch {
        created = true;
      }
      const max = this.opts.deadLetterMaxBytes ?? 100 << 20;
      if (size + Buffer.byteLength(text) > max) return { ok: false, why: `${this.deadLetterFile} is full (${max} bytes)` };
      fh = await fs.promises.open(this.deadLetterFile, 'a', 0o600);
      await fh.appendFile(text);
      await fh.datasync();
      if (created) await syncDir(path.dirname(this.deadLetterFile));
      return { ok: true };
    } catch (e) {
      return { ok: false, why: `cannot write ${this.deadLetterFile}: ${(e as Error).message}` };
    } finally {
      await fh?.close().catch(() => undefined);
    }
  }

  private async send(body: Buffer, gzip: boolean, signal: AbortSignal): Promise<SendResult> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const both = AbortSignal.any([signal, timeout]);
    try {
      await writeLines(this.target, body, { gzip, signal: both });
      return { status: 204 };
    } catch (e) {
      if (e instanceof InfluxError) {
        if (e.status === 0 && timeout.aborted && !signal.aborted) {
          return { status: 0, error: new InfluxError(`no answer from ${describeTarget(this.target)} within ${this.timeoutMs} ms`, 0) };
        }
        return { status: e.status, error: e };
      }
      return { status: 0, error: new InfluxError((e as Error).message, 0) };
    }
  }

  /** Health, readiness and logs for one answer. */
  private note(r: SendResult, v: Verdict, lines: number): void {
    const now = Date.now();
    if (v.kind === 'ok') {
      if (!this.state.healthy || this.state.configError) this.opts.log.info({ target: describeTarget(this.target) }, 'InfluxDB accepts writes again');
      Object.assign(this.state, { healthy: true, lastSuccessMs: now, consecutiveFailures: 0, configError: null });
      return;
    }
    const err = r.error!;
    const msg = excerpt(err.body ? err.body : err.message);
    this.state.lastError = err.message.slice(0, 1000);
    this.state.lastErrorMs = now;
    if (v.kind !== 'retry') return; // refused lines are InfluxDB's verdict on data, not on its health
    this.retry(v.reason);
    this.state.consecutiveFailures++;
    if (v.reason === 'auth' || v.reason === 'not_found') {
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
      return;
    }
    if (this.state.consecutiveFailures >= 3) this.state.healthy = false;
    if (this.state.consecutiveFailures === 1 || this.state.consecutiveFailures % 10 === 0) {
      this.opts.log.warn(
        { status: r.status, failures: this.state.consecutiveFailures, lines, retryAfterMs: v.retryAfterMs, spooledLines: this.spool.lines },
        `write failed, will retry: ${err.message.slice(0, 500)}`,
      );
    }
  }
}

class UnreadableBatch extends Error {}

/** fsync a directory so a file just created in it survives a crash (some filesystems refuse: ignored). */
async function syncDir(dir: string): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(dir, 'r');
    await fh.sync();
  } catch {
    /* not supported here; the file's own data is synced */
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

interface SendResult {
  status: number;
  error?: InfluxError;
}
