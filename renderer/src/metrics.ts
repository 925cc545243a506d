/** The renderer's /metrics, on the shared registry of pkg/core. */
import { Metrics, type Counter, type LatencyHistogram } from '@tcplat/core';

const LATENCY_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface RendererGauges {
  queueDepth: number;
  busy: number;
  workers: number;
  restarts: number;
  cache: { hits: number; misses: number; entries: number; bytes: number };
}

export class RendererMetrics {
  readonly registry = new Metrics();
  private readonly duration: LatencyHistogram;
  /** Requests refused with 429 because the queue was full. */
  readonly rejected: Counter;
  /** Queries InfluxDB failed or did not answer. */
  readonly influxErrors: Counter;
  /** Requests that waited for an identical render in flight. */
  readonly coalesced: Counter;

  /** `gauges` is read each time /metrics is served. */
  constructor(gauges: () => RendererGauges) {
    const m = this.registry;
    this.duration = m.histogram('tcplat_renderer_render_duration_seconds', 'Uncached render time: query plus drawing.', LATENCY_BUCKETS_S);
    m.gauge('tcplat_renderer_cache_hits_total', 'Images served from the cache.', () => gauges().cache.hits);
    m.gauge('tcplat_renderer_cache_misses_total', 'Cache lookups that had to render.', () => gauges().cache.misses);
    m.gauge('tcplat_renderer_cache_entries', 'Images in the cache.', () => gauges().cache.entries);
    m.gauge('tcplat_renderer_cache_bytes', 'Bytes of images in the cache.', () => gauges().cache.bytes);
    m.gauge('tcplat_renderer_queue_depth', 'Renders waiting for a free worker.', () => gauges().queueDepth);
    m.gauge('tcplat_renderer_workers_busy', 'Workers drawing now.', () => gauges().busy);
    m.gauge('tcplat_renderer_workers', 'Live Python workers.', () => gauges().workers);
    m.gauge('tcplat_renderer_worker_restarts_total', 'Workers replaced after a crash, hang or protocol error.', () => gauges().restarts);
    this.coalesced = m.counter('tcplat_renderer_coalesced_total', 'Requests that waited for an identical render in flight instead of drawing again.');
    this.rejected = m.counter('tcplat_renderer_rejected_total', 'Requests refused with 429 because the queue was full.');
    this.influxErrors = m.counter('tcplat_renderer_influx_errors_total', 'Queries InfluxDB failed or did not answer.');
  }

  render(kind: string, outcome: 'ok' | 'nodata' | 'error', seconds?: number): void {
    this.registry.counter('tcplat_renderer_renders_total', 'Charts drawn (cache misses), by kind and outcome.', { kind, outcome }).inc();
    if (seconds !== undefined) this.duration.observe(seconds);
  }

  /** A chart that read the 10 s data where rollups were picked (missing, empty or partial rollups). */
  rollupFallback(reason: string): void {
    this.registry.counter('tcplat_renderer_rollup_fallbacks_total', 'Charts that read the 10 s data because the picked rollups were missing (no RP/bucket), empty or partial in the range.', { reason }).inc();
  }

  /** Notifications the alert relay forwarded (sent) or could not (failed: answered 502, Grafana resends). */
  relayed(outcome: 'sent' | 'failed'): void {
    this.registry.counter('tcplat_renderer_alert_relay_total', 'Alert notifications the relay forwarded to the chat webhook, by outcome.', { outcome }).inc();
  }

  response(status: number): void {
    this.registry.counter('tcplat_renderer_http_responses_total', 'HTTP answers by status code.', { code: String(status) }).inc();
  }

  format(): string {
    return this.registry.prometheus();
  }
}
