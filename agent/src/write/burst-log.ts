/**
 * Logs a stream of like events (lines dropped, refused, ...) once per burst with counts, instead of one
 * line per event: the first event of a quiet period is logged at once (with its example); later ones are
 * added up and logged as one summary per `intervalMs` while they keep coming. Counts are always exact in
 * /metrics; this only keeps the log readable.
 */
import type { Logger } from '../types';

export class BurstLog {
  private pending = new Map<string, number>();
  private lastLogMs = -Infinity;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly log: Logger,
    private readonly level: 'warn' | 'error',
    /** The log message's subject, e.g. "lines dropped by the writer". */
    private readonly what: string,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Count `n` events of `reason`; `detail` (an example, InfluxDB's message) goes with an immediate log line. */
  add(reason: string, n: number, msg: string, detail: Record<string, unknown> = {}): void {
    if (n <= 0) return;
    const t = this.now();
    if (t - this.lastLogMs >= this.intervalMs && this.pending.size === 0) {
      this.lastLogMs = t;
      this.log[this.level]({ reason, count: n, ...detail }, msg);
      return;
    }
    this.pending.set(reason, (this.pending.get(reason) ?? 0) + n);
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), Math.max(0, this.lastLogMs + this.intervalMs - t));
      this.timer.unref?.();
    }
  }

  /** Log what was counted since the last line (called by the timer, and at shutdown). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.pending.size === 0) return;
    const counts = Object.fromEntries(this.pending);
    const total = [...this.pending.values()].reduce((a, b) => a + b, 0);
    this.pending = new Map();
    this.lastLogMs = this.now();
    this.log[this.level]({ counts }, `${total} more ${this.what} since the last report (by reason: ${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')})`);
  }
}
