/** Counters for /metrics, in the Prometheus text format (no client library: a handful of series). */

const LATENCY_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class RendererMetrics {
  /** Renders by chart kind and outcome (ok, nodata, error). */
  readonly renders = new Map<string, number>();
  /** HTTP answers by status code. */
  readonly responses = new Map<number, number>();
  readonly latencyCounts = new Array<number>(LATENCY_BUCKETS_S.length + 1).fill(0);
  latencySum = 0;
  latencyCount = 0;
  rejected = 0;
  influxErrors = 0;
  coalesced = 0;

  render(kind: string, outcome: 'ok' | 'nodata' | 'error', seconds?: number): void {
    const k = `${kind}\u0000${outcome}`;
    this.renders.set(k, (this.renders.get(k) ?? 0) + 1);
    if (seconds === undefined) return;
    let i = LATENCY_BUCKETS_S.findIndex((b) => seconds <= b);
    if (i < 0) i = LATENCY_BUCKETS_S.length;
    this.latencyCounts[i]++;
    this.latencySum += seconds;
    this.latencyCount++;
  }

  response(status: number): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1);
  }

  format(g: { queueDepth: number; busy: number; workers: number; restarts: number; cache: { hits: number; misses: number; entries: number; bytes: number } }): string {
    const L: string[] = [];
    const metric = (name: string, type: string, help: string) => L.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    metric('tcplat_renderer_renders_total', 'counter', 'Charts drawn (cache misses), by kind and outcome.');
    for (const [k, v] of this.renders) {
      const [kind, outcome] = k.split('\u0000');
      L.push(`tcplat_renderer_renders_total{kind="${kind}",outcome="${outcome}"} ${v}`);
    }
    metric('tcplat_renderer_render_duration_seconds', 'histogram', 'Uncached render time: query plus drawing.');
    let cum = 0;
    LATENCY_BUCKETS_S.forEach((b, i) => {
      cum += this.latencyCounts[i];
      L.push(`tcplat_renderer_render_duration_seconds_bucket{le="${b}"} ${cum}`);
    });
    cum += this.latencyCounts[LATENCY_BUCKETS_S.length];
    L.push(`tcplat_renderer_render_duration_seconds_bucket{le="+Inf"} ${cum}`);
    L.push(`tcplat_renderer_render_duration_seconds_sum ${this.latencySum}`, `tcplat_renderer_render_duration_seconds_count ${this.latencyCount}`);
    metric('tcplat_renderer_http_responses_total', 'counter', 'HTTP answers by status code.');
    for (const [s, v] of [...this.responses].sort((a, b) => a[0] - b[0])) L.push(`tcplat_renderer_http_responses_total{code="${s}"} ${v}`);
    metric('tcplat_renderer_cache_hits_total', 'counter', 'Images served from the cache.');
    L.push(`tcplat_renderer_cache_hits_total ${g.cache.hits}`);
    metric('tcplat_renderer_cache_misses_total', 'counter', 'Cache lookups that had to render.');
    L.push(`tcplat_renderer_cache_misses_total ${g.cache.misses}`);
    metric('tcplat_renderer_cache_entries', 'gauge', 'Images in the cache.');
    L.push(`tcplat_renderer_cache_entries ${g.cache.entries}`);
    metric('tcplat_renderer_cache_bytes', 'gauge', 'Bytes of images in the cache.');
    L.push(`tcplat_renderer_cache_bytes ${g.cache.bytes}`);
    metric('tcplat_renderer_coalesced_total', 'counter', 'Requests that waited for an identical render in flight instead of drawing again.');
    L.push(`tcplat_renderer_coalesced_total ${this.coalesced}`);
    metric('tcplat_renderer_queue_depth', 'gauge', 'Renders waiting for a free worker.');
    L.push(`tcplat_renderer_queue_depth ${g.queueDepth}`);
    metric('tcplat_renderer_workers_busy', 'gauge', 'Workers drawing now.');
    L.push(`tcplat_renderer_workers_busy ${g.busy}`);
    metric('tcplat_renderer_workers', 'gauge', 'Live Python workers.');
    L.push(`tcplat_renderer_workers ${g.workers}`);
    metric('tcplat_renderer_worker_restarts_total', 'counter', 'Workers replaced after a crash, hang or protocol error.');
    L.push(`tcplat_renderer_worker_restarts_total ${g.restarts}`);
    metric('tcplat_renderer_rejected_total', 'counter', 'Requests refused with 429 because the queue was full.');
    L.push(`tcplat_renderer_rejected_total ${this.rejected}`);
    metric('tcplat_renderer_influx_errors_total', 'counter', 'Queries InfluxDB failed or did not answer.');
    L.push(`tcplat_renderer_influx_errors_total ${this.influxErrors}`);
    return L.join('\n') + '\n';
  }
}
