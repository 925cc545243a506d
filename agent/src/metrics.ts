/**
 * Counters and gauges for /metrics (Prometheus text format) and /api/status. Every pipeline stage counts
 * what it received, emitted and dropped (by reason) here; names are `tcplat_*`.
 */

type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  values: Map<string, { labels: Labels; value: number }>;
  /** For gauges computed on demand. */
  collect?: () => { labels: Labels; value: number }[];
}

function labelKey(labels: Labels): string {
  let k = '';
  for (const name of Object.keys(labels).sort()) k += `${name}=${labels[name]}\u0000`;
  return k;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '';
  return '{' + keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(',') + '}';
}

export class Counter {
  private readonly cell: { labels: Labels; value: number };
  constructor(cell: { labels: Labels; value: number }) {
    this.cell = cell;
  }
  inc(n = 1): void {
    this.cell.value += n;
  }
  get value(): number {
    return this.cell.value;
  }
}

export class Metrics {
  private readonly families = new Map<string, Family>();

  private family(name: string, help: string, type: Family['type']): Family {
    let f = this.families.get(name);
    if (!f) {
      f = { name, help, type, values: new Map() };
      this.families.set(name, f);
    }
    return f;
  }

  /** A counter cell; call once and keep the handle on hot paths. */
  counter(name: string, help: string, labels: Labels = {}): Counter {
    const f = this.family(name, help, 'counter');
    const key = labelKey(labels);
    let cell = f.values.get(key);
    if (!cell) {
      cell = { labels, value: 0 };
      f.values.set(key, cell);
    }
    return new Counter(cell);
  }

  /** A gauge whose samples are computed when /metrics is read. */
  gauge(name: string, help: string, collect: () => number | { labels: Labels; value: number }[]): void {
    const f = this.family(name, help, 'gauge');
    f.collect = () => {
      const v = collect();
      return typeof v === 'number' ? [{ labels: {}, value: v }] : v;
    };
  }

  /** Current value of a counter (sum over label sets matching `labels`). */
  get(name: string, labels: Labels = {}): number {
    const f = this.families.get(name);
    if (!f) return 0;
    let sum = 0;
    const samples = f.collect ? f.collect() : [...f.values.values()];
    for (const s of samples) {
      if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
    }
    return sum;
  }

  /** name{labels} -> value, for /api/status. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const f of this.families.values()) {
      const samples = f.collect ? f.collect() : [...f.values.values()];
      for (const s of samples) out[f.name + formatLabels(s.labels)] = s.value;
    }
    return out;
  }

  prometheus(): string {
    let out = '';
    for (const f of this.families.values()) {
      out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;
      const samples = f.collect ? f.collect() : [...f.values.values()];
      for (const s of samples) out += `${f.name}${formatLabels(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}\n`;
    }
    return out;
  }
}

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
