/**
 * Counters, gauges and histograms for the services' /metrics (Prometheus text format) and status pages,
 * without a client library: a handful of families per service. Names are `tcplat_*`.
 */

export type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge' | 'histogram';
  values: Map<string, { labels: Labels; value: number }>;
  /** For histograms. */
  hist?: LatencyHistogram;
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

/** A Prometheus histogram: cumulative buckets by upper bound, sum and count. */
export class LatencyHistogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += v;
    this.count++;
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

  /** A histogram with the given upper bounds (the +Inf bucket is implied). */
  histogram(name: string, help: string, bounds: readonly number[]): LatencyHistogram {
    const f = this.family(name, help, 'histogram');
    f.hist ??= new LatencyHistogram(bounds);
    return f.hist;
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
      if (f.hist) {
        out[`${f.name}_count`] = f.hist.count;
        out[`${f.name}_sum`] = f.hist.sum;
        continue;
      }
      const samples = f.collect ? f.collect() : [...f.values.values()];
      for (const s of samples) out[f.name + formatLabels(s.labels)] = s.value;
    }
    return out;
  }

  prometheus(): string {
    let out = '';
    for (const f of this.families.values()) {
      out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.type}\n`;
      if (f.hist) {
        let cum = 0;
        f.hist.bounds.forEach((b, i) => {
          cum += f.hist!.counts[i];
          out += `${f.name}_bucket{le="${b}"} ${cum}\n`;
        });
        out += `${f.name}_bucket{le="+Inf"} ${f.hist.count}\n${f.name}_sum ${f.hist.sum}\n${f.name}_count ${f.hist.count}\n`;
        continue;
      }
      const samples = f.collect ? f.collect() : [...f.values.values()];
      for (const s of samples) out += `${f.name}${formatLabels(s.labels)} ${Number.isFinite(s.value) ? s.value : 0}\n`;
    }
    return out;
  }
}

