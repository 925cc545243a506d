/**
 * Source lines the parse stage refused: counted by reason, the first few kept as examples, logged once
 * per burst (never one log line per refused line), and summed up at the end of an import.
 */
import { BurstLog } from '../write/burst-log';
import type { Logger } from '../types';

export const MAX_EXAMPLES = 5;

export interface RefusalSummary {
  total: number;
  byReason: Record<string, number>;
  examples: { line: number; reason: string; message: string }[];
}

export class Refusals {
  total = 0;
  private readonly byReason = new Map<string, number>();
  private readonly examples: RefusalSummary['examples'] = [];
  private readonly burst: BurstLog;

  constructor(private readonly log: Logger) {
    this.burst = new BurstLog(log, 'warn', 'source lines dropped');
  }

  /** One refused line: `lineNo` counts from 1 in the source's output. */
  add(reason: string, message: string, lineNo: number): void {
    this.total++;
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    if (message !== '' && this.examples.length < MAX_EXAMPLES) this.examples.push({ line: lineNo, reason, message: message.slice(0, 300) });
    // A tool printing an unknown header is a configuration problem: always said, once per header.
    if (reason === 'unknown_format' && message !== '') this.log.warn({ reason, line: lineNo }, `dropped a source line: ${message}`);
    else this.burst.add(reason, 1, `dropped a source line (line ${lineNo}): ${message}`, { line: lineNo });
  }

  summary(): RefusalSummary {
    return { total: this.total, byReason: Object.fromEntries(this.byReason), examples: [...this.examples] };
  }

  /** "json 600, field 1; first: line 3 (json): not JSON: ..." */
  describe(): string {
    const counts = [...this.byReason].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${n}`).join(', ');
    const ex = this.examples.map((e) => `line ${e.line} (${e.reason}): ${e.message}`).join('; ');
    return ex ? `${counts}; first examples: ${ex}` : counts;
  }

  /** Log what the burst log still holds (at the end of a run). */
  flush(): void {
    this.burst.flush();
  }
}
