/**
 * The agent's live rollup job. The writer tells it which windows it delivered histogram points into (from
 * the timestamps of the lines of each batch InfluxDB accepted whose measurement has rollups:
 * ROLLED_UP_MEASUREMENTS, i.e. tcp_connect_hist, tls_handshake_hist, tcp_session_hist; before the batch
 * leaves the spool); those 1m windows are dirty. Every --rollup-interval the job recomputes the dirty
 * windows with the engine (finer level first, then the coarser windows that contain them), for this host
 * only, for each rolled-up measurement that received data in the window (a window is recomputed whole;
 * a host without TLS or close events reads nothing of their measurements). A late event or an import
 * makes its window dirty again, so the rollups stay exact.
 *
 * Crash safety: a small state file in the spool directory (written to a temporary file, fsynced, renamed)
 * holds `rolledUpToMs`: every window before it is rolled up. At start everything from there to now is
 * dirty (the last 2 h when there is no file). The mark is the oldest dirty window, or the newest window
 * rolled up when nothing is dirty; a delivery into a window before the saved mark saves the lower mark
 * BEFORE the batch is acknowledged, so a SIGKILL at any point loses no window: either the batch is sent
 * again (and marks its windows again), or the mark on disk covers it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { escapeMeasurement, ROLLED_UP_MEASUREMENTS } from '@tcplat/core';
import type { Counter, Metrics } from '../metrics';
import type { SpoolRecord } from '../spool/spool';
import type { Logger } from '../types';
import { chunks, ensureRollupStore, FINEST_WINDOW_MS, floorTo, rollupRange, tryEnsureRollupStore, type RollupStore } from './engine';

const gunzip = promisify(zlib.gunzip);

export const STATE_FILE = 'rollup-state.json';
/** Without a state file, this much history is recomputed at start. */
export const DEFAULT_CATCH_UP_MS = 2 * 3_600_000;
/** One engine call covers at most this much time (bounded answers, progress between chunks). */
export const LIVE_CHUNK_MS = 6 * 3_600_000;
/** Longest one engine call may take (a hung InfluxDB must not hang the job or the agent's shutdown). */
export const RUN_CALL_TIMEOUT_MS = 120_000;
/** Default retention of the rollup RP/bucket when the agent creates it. */
export const DEFAULT_ROLLUP_RETENTION = '400d';

export interface RollupJobOptions {
  store: RollupStore;
  host: string;
  intervalMs: number;
  /** Directory of the state file (the spool's). */
  dir: string;
  log: Logger;
  metrics: Metrics;
  now?: () => number;
}

export interface RollupRunSummary {
  atMs: number;
  durationMs: number;
  windows: number;
  points: number;
  error: string | null;
}

/** Per rolled-up measurement: its line's start at the batch's start, and after a newline. */
const HIST_PREFIXES = ROLLED_UP_MEASUREMENTS.map((m) => {
  const prefix = escapeMeasurement(m) + ',';
  return { measurement: m as string, start: Buffer.from(prefix), next: Buffer.from('\n' + prefix) };
});
const NL = 0x0a;
const SPACE = 0x20;

/**
 * The 1m windows (start, ms) of the lines of rolled-up measurements in a line-protocol batch (one pass per
 * measurement). The timestamp is the
 * line's last field (after its last space: tag and field values escape or quote their spaces, and a
 * string field never ends a hist line). Works on the bytes (no UTF-8 decoding of the raw lines between).
 */
export function histWindows(text: string | Buffer, out: Set<number> = new Set()): Set<number> {
  for (const ws of histWindowsByMeasurement(text).values()) for (const w of ws) out.add(w);
  return out;
}

/** histWindows per rolled-up measurement (only those with lines in the batch). */
export function histWindowsByMeasurement(text: string | Buffer): Map<string, Set<number>> {
  const b = typeof text === 'string' ? Buffer.from(text) : text;
  const out = new Map<string, Set<number>>();
  for (const p of HIST_PREFIXES) {
    const ws = new Set<number>();
    scanWindows(b, p.start, p.next, ws);
    if (ws.size > 0) out.set(p.measurement, ws);
  }
  return out;
}

function scanWindows(b: Buffer, HIST_START: Buffer, HIST_NEXT: Buffer, out: Set<number>): void {
  let i = b.subarray(0, HIST_START.length).equals(HIST_START) ? 0 : b.indexOf(HIST_NEXT);
  if (i > 0) i++;
  while (i >= 0 && i < b.length) {
    let end = b.indexOf(NL, i);
    if (end < 0) end = b.length;
    const sp = b.lastIndexOf(SPACE, end);
    if (sp > i) {
      let ns = 0n;
      let ok = end - sp - 1 >= 1 && end - sp - 1 <= 19;
      for (let k = sp + 1; ok && k < end; k++) {
        const c = b[k] - 48;
        if (c < 0 || c > 9) ok = false;
        else ns = ns * 10n + BigInt(c);
      }
      if (ok) out.add(floorTo(Number(ns / 1_000_000n), FINEST_WINDOW_MS));
    }
    const next = b.indexOf(HIST_NEXT, end);
    i = next < 0 ? -1 : next + 1;
  }
}

export class RollupJob {
  /**
   * Dirty 1m windows (start ms) -> the rolled-up measurements that received data in them: a run recomputes
   * a window of only those (a host without TLS or close events pays no reads of their empty measurements).
   */
  private readonly dirty = new Map<number, Set<string>>();
  private savedMark: number | null = null;
  private newestRolled: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly stopper = new AbortController();
  private storeReady = false;
  private readonly now: () => number;
  private readonly file: string;
  readonly windowsRolled: Counter;
  readonly pointsWritten: Counter;
  readonly errors: Counter;
  readonly runs: Counter;
  lastRun: RollupRunSummary | null = null;
  lastError: string | null = null;

  constructor(private readonly o: RollupJobOptions) {
    this.now = o.now ?? Date.now;
    this.file = path.join(o.dir, STATE_FILE);
    const m = o.metrics;
    this.windowsRolled = m.counter('tcplat_rollup_windows_total', 'Dirty 1m windows recomputed (with their 10m and 1h windows, every rolled-up measurement)');
    this.pointsWritten = m.counter('tcplat_rollup_points_written_total', 'Rollup points written (all levels)');
    this.errors = m.counter('tcplat_rollup_errors_total', 'Rollup runs that failed (their windows stay dirty and are retried)');
    this.runs = m.counter('tcplat_rollup_runs_total', 'Rollup runs');
    m.gauge('tcplat_rollup_dirty_windows', '1m windows delivered to InfluxDB and not rolled up yet', () => this.dirty.size);
    m.gauge('tcplat_rollup_lag_seconds', 'Age of the oldest dirty window (0 when none)', () => this.lagSeconds());
    m.gauge('tcplat_rollup_last_run_timestamp_seconds', 'When the last rollup run ended (0 before the first)', () => (this.lastRun ? this.lastRun.atMs / 1000 : 0));
  }

  get dirtyWindows(): number {
    return this.dirty.size;
  }

  lagSeconds(): number {
    const oldest = this.oldestDirty();
    return oldest === null ? 0 : Math.max(0, (this.now() - oldest) / 1000);
  }

  private oldestDirty(): number | null {
    let min: number | null = null;
    for (const w of this.dirty.keys()) if (min === null || w < min) min = w;
    return min;
  }

  /** load(), then run every --rollup-interval. */
  start(): void {
    this.load();
    this.timer = setInterval(() => void this.run(), this.o.intervalMs);
    this.timer.unref?.();
  }

  /** Read the state file and mark everything since its mark dirty (the last 2 h without one). */
  load(): void {
    const now = this.now();
    let from = now - DEFAULT_CATCH_UP_MS;
    let why = `no ${STATE_FILE}: the last ${DEFAULT_CATCH_UP_MS / 3_600_000} h`;
    try {
      const s = JSON.parse(fs.readFileSync(this.file, 'utf8')) as { rolledUpToMs?: unknown };
      if (typeof s.rolledUpToMs === 'number' && Number.isSafeInteger(s.rolledUpToMs) && s.rolledUpToMs > 0) {
        from = s.rolledUpToMs;
        why = `${STATE_FILE}: rolled up to ${new Date(from).toISOString()}`;
      } else this.o.log.warn({ file: this.file }, `${STATE_FILE} has no valid rolledUpToMs; catching up the last 2 h`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.o.log.warn({ file: this.file, err: (e as Error).message }, `cannot read ${STATE_FILE}; catching up the last 2 h`);
    }
    // Clock skew: windows a little ahead of this clock are caught up too.
    this.markRange(from, now + 10 * 60_000);
    // On disk at once: a delivery at or after the mark then needs no save, whenever the next start is.
    this.save(floorTo(from, FINEST_WINDOW_MS), true);
    this.o.log.info({ fromMs: from, dirtyWindows: this.dirty.size, intervalMs: this.o.intervalMs }, `rollups: catching up from ${new Date(from).toISOString()} (${why})`);
  }

  private markRange(fromMs: number, toMs: number, measurements: readonly string[] = ROLLED_UP_MEASUREMENTS): void {
    for (let w = floorTo(fromMs, FINEST_WINDOW_MS); w < toMs; w += FINEST_WINDOW_MS) this.mark(w, measurements);
  }

  private mark(w: number, measurements: Iterable<string>): void {
    let set = this.dirty.get(w);
    if (!set) this.dirty.set(w, (set = new Set()));
    for (const m of measurements) set.add(m);
  }

  /**
   * The writer delivered this batch (InfluxDB has it; it is not acknowledged in the spool yet; the writer
   * awaits this before the ack). Marks its hist windows dirty; a window before the saved mark lowers the
   * mark on disk first (synchronously, before the promise resolves). The batch is decompressed on libuv's
   * thread pool, not on the event loop that reads the probe.
   */
  async delivered(rec: SpoolRecord): Promise<void> {
    let text: Buffer;
    try {
      text = await gunzip(rec.payload);
    } catch {
      return; // the writer counts unreadable batches; nothing of it reached InfluxDB
    }
    for (const [measurement, windows] of histWindowsByMeasurement(text)) this.deliveredWindows(windows, [measurement]);
  }

  /** Windows delivered into InfluxDB for `measurements` (default: every rolled-up one). */
  deliveredWindows(windows: Iterable<number>, measurements: readonly string[] = ROLLED_UP_MEASUREMENTS): void {
    let min: number | null = null;
    for (const w of windows) {
      this.mark(w, measurements);
      if (min === null || w < min) min = w;
    }
    if (min !== null && (this.savedMark === null || min < this.savedMark)) this.save(min, true);
  }

  private save(mark: number, sync: boolean): void {
    const tmp = this.file + '.tmp';
    const text = JSON.stringify({ version: 1, host: this.o.host, rolledUpToMs: mark, savedAt: new Date(this.now()).toISOString() }) + '\n';
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.writeSync(fd, text);
        if (sync) fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, this.file);
      this.savedMark = mark;
    } catch (e) {
      this.o.log.error({ file: this.file, err: (e as Error).message }, `cannot save ${STATE_FILE}: after a crash, rollups would catch up from an older mark`);
    }
  }

  /** One run: recompute the dirty windows (all levels). Runs never overlap; a failed chunk stays dirty. */
  run(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.runInner().finally(() => (this.running = null));
    return this.running;
  }

  /** Run until nothing is dirty or a run fails (tests, --once). */
  async catchUp(): Promise<void> {
    while (this.dirty.size > 0 && !this.stopped) {
      const errorsBefore = this.errors.value;
      await this.run();
      if (this.errors.value > errorsBefore) return;
    }
  }

  private async runInner(): Promise<void> {
    if (this.dirty.size === 0) return;
    const t0 = this.now();
    const taken = [...this.dirty.entries()].sort((a, b) => a[0] - b[0]);
    this.dirty.clear(); // synchronously: deliveries during the run mark new entries
    const dirtyOf = new Map(taken);
    let windows = 0;
    let points = 0;
    let error: string | null = null;
    const ranges = contiguous(taken.map(([w]) => w));
    // Where the work stands: on any failure, everything from here on is dirty again (every measurement:
    // recomputing a window that had no new data is only extra work).
    let ri = 0;
    let doneTo = ranges[0][0];
    let timeout: AbortSignal | null = null;
    try {
      if (!this.storeReady) {
        timeout = AbortSignal.timeout(RUN_CALL_TIMEOUT_MS);
        const signal = AbortSignal.any([this.stopper.signal, timeout]);
        // 1.x: the RP is created if missing (a failure here, e.g. InfluxDB down, fails the run: retried).
        // 2.x: the bucket only if the token may; otherwise the init scripts made it, and the writes say.
        if (this.o.store.rollup.version === 1) this.o.log.info({}, `rollups: ${await ensureRollupStore(this.o.store, { retention: DEFAULT_ROLLUP_RETENTION, signal })}`);
        else {
          const r = await tryEnsureRollupStore(this.o.store, DEFAULT_ROLLUP_RETENTION, signal);
          if (r.ok) this.o.log.info({}, `rollups: ${r.message}`);
          else this.o.log.warn({}, `rollups: ${r.message}; going on (the init scripts create it for a least-privilege token)`);
        }
        this.storeReady = true;
      }
      for (; ri < ranges.length; ri++) {
        const [a, b] = ranges[ri];
        doneTo = a;
        for (const [ca, cb] of chunks(a, b, LIVE_CHUNK_MS)) {
          const from = Math.max(a, ca);
          const to = Math.min(b, cb);
          if (this.stopped) throw new Error('stopped');
          let chunkPoints = 0;
          // Each measurement over the chunk's windows that received its data (a window is recomputed
          // only for the histograms that changed in it).
          for (const measurement of ROLLED_UP_MEASUREMENTS) {
            const mine: number[] = [];
            for (let w = from; w < to; w += FINEST_WINDOW_MS) if (dirtyOf.get(w)?.has(measurement)) mine.push(w);
            for (const [ma, mb] of contiguous(mine)) {
              timeout = AbortSignal.timeout(RUN_CALL_TIMEOUT_MS);
              const r = await rollupRange({ store: this.o.store, measurement, fromMs: ma, toMs: mb, host: this.o.host, signal: AbortSignal.any([this.stopper.signal, timeout]) });
              chunkPoints += r.points;
            }
          }
          doneTo = to;
          points += chunkPoints;
          windows += (to - from) / FINEST_WINDOW_MS;
          this.pointsWritten.inc(chunkPoints);
          this.windowsRolled.inc((to - from) / FINEST_WINDOW_MS);
        }
      }
    } catch (e) {
      if (ri < ranges.length) {
        this.markRange(doneTo, ranges[ri][1]);
        for (const [ra, rb] of ranges.slice(ri + 1)) this.markRange(ra, rb);
      }
      error = this.stopped ? 'stopped' : timeout?.aborted ? `no answer from InfluxDB within ${RUN_CALL_TIMEOUT_MS / 1000} s (a rollup step)` : (e as Error).message;
      if (error !== 'stopped') {
        this.errors.inc();
        if (this.lastError !== error || this.errors.value % 20 === 1) {
          this.o.log.error({ err: error, dirtyWindows: this.dirty.size }, `rollups: run failed, the windows stay dirty and are retried: ${hint(error)}`);
        }
      }
    }
    this.lastError = error;
    if (error === null) this.newestRolled = Math.max(this.newestRolled ?? 0, taken[taken.length - 1][0]);
    this.runs.inc();
    const end = this.now();
    this.lastRun = { atMs: end, durationMs: end - t0, windows, points, error };
    if (error === null) this.o.log.debug({ windows, points, ms: end - t0 }, 'rollups: run done');
    // The mark moves forward only when nothing older is dirty (asynchronously safe: a lost forward move
    // only recomputes more at the next start).
    const oldest = this.oldestDirty();
    // Never ahead of this minute: deliveries into the current window then need no synchronous save.
    const mark = oldest ?? (this.newestRolled === null ? null : Math.min(this.newestRolled, floorTo(end, FINEST_WINDOW_MS)));
    if (mark !== null && mark !== this.savedMark && (oldest !== null || this.savedMark === null || mark > this.savedMark)) this.save(mark, false);
  }

  status(): Record<string, unknown> {
    const oldest = this.oldestDirty();
    return {
      enabled: true,
      interval_s: this.o.intervalMs / 1000,
      dirty_windows: this.dirty.size,
      oldest_dirty: oldest === null ? null : new Date(oldest).toISOString(),
      lag_s: this.lagSeconds(),
      rolled_up_to: this.savedMark === null ? null : new Date(this.savedMark).toISOString(),
      windows_rolled_up: this.windowsRolled.value,
      points_written: this.pointsWritten.value,
      runs: this.runs.value,
      errors: this.errors.value,
      last_error: this.lastError,
      last_run: this.lastRun && { at: new Date(this.lastRun.atMs).toISOString(), duration_ms: this.lastRun.durationMs, windows: this.lastRun.windows, points: this.lastRun.points, error: this.lastRun.error },
    };
  }

  /** Stop the timer; a run in progress ends after its current chunk. The oldest dirty window is saved. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // A request in flight is abandoned: its windows stay dirty (saved below) and are redone at the next start.
    this.stopper.abort();
    await this.running;
    const oldest = this.oldestDirty();
    if (oldest !== null && (this.savedMark === null || oldest !== this.savedMark)) this.save(oldest, true);
  }
}

/** Sorted window starts as [from, to) ranges of adjacent 1m windows. */
export function contiguous(sorted: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const w of sorted) {
    const last = out[out.length - 1];
    if (last && last[1] === w) last[1] = w + FINEST_WINDOW_MS;
    else out.push([w, w + FINEST_WINDOW_MS]);
  }
  return out;
}

/** What to do about a failed run, from InfluxDB's message. */
export function hint(msg: string): string {
  if (/retention policy not found|not found: retention/i.test(msg)) return `${msg} (create the rollup retention policy: tcplat rollup --influx-db ... creates it)`;
  if (/bucket .*not found|HTTP 404/i.test(msg)) return `${msg} (create the rollup bucket <bucket>_rollups: tcplat rollup with an operator token, or the compose/k8s init scripts)`;
  if (/HTTP 40[13]/.test(msg)) return `${msg} (the token/user needs read on the data and read+write on the rollups)`;
  return msg;
}
