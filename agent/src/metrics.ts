/** The agent's pipeline counters, on the shared registry of pkg/core. */
import { Metrics, type Counter } from '@tcplat/core';

export { Counter, Metrics } from '@tcplat/core';

/** The three counters every stage keeps: received, emitted, dropped by reason. */
export class StageCounters {
  readonly received: Counter;
  readonly emitted: Counter;
  private readonly dropped = new Map<string, Counter>();

  constructor(
    private readonly metrics: Metrics,
    readonly stage: string,
  ) {
    this.received = metrics.counter('tcplat_stage_received_total', 'Items each pipeline stage received', { stage });
    this.emitted = metrics.counter('tcplat_stage_emitted_total', 'Items each pipeline stage passed on', { stage });
  }

  drop(reason: string, n = 1): void {
    let c = this.dropped.get(reason);
    if (!c) {
      c = this.metrics.counter('tcplat_stage_dropped_total', 'Items each pipeline stage dropped, by reason', { stage: this.stage, reason });
      this.dropped.set(reason, c);
    }
    c.inc(n);
  }

  droppedCount(reason?: string): number {
    if (reason !== undefined) return this.dropped.get(reason)?.value ?? 0;
    let n = 0;
    for (const c of this.dropped.values()) n += c.value;
    return n;
  }
}
