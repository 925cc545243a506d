/**
 * Live view for `tcplat top` and friends: server-sent events of every connect as it is enriched, and a
 * summary per second (by arrival) per service, destination and result. Nothing is computed while nobody
 * listens; a client that cannot keep up misses events (counted), never slows the pipeline.
 */
import { Histogram } from '@tcplat/core';
import type { Counter, Metrics } from './metrics';
import type { EnrichedConnect } from './types';

export interface StreamClient {
  /** Write one SSE frame; return false when the client is too far behind (the frame is skipped). */
  send(frame: string): boolean;
  wantEvents: boolean;
}

interface Cell {
  service: string;
  dst: string;
  result: string;
  hist: Histogram;
  synRetrans: number;
}

export class StreamHub {
  private readonly clients = new Set<StreamClient>();
  private cells = new Map<string, Cell>();
  private timer: NodeJS.Timeout | null = null;
  private readonly skipped: Counter;
  private readonly sent: Counter;

  constructor(metrics: Metrics) {
    this.skipped = metrics.counter('tcplat_stream_skipped_total', 'Server-sent frames skipped because a client was too slow');
    this.sent = metrics.counter('tcplat_stream_sent_total', 'Server-sent frames delivered');
    metrics.gauge('tcplat_stream_clients', 'Connected /api/stream clients', () => this.clients.size);
  }

  get size(): number {
    return this.clients.size;
  }

  add(c: StreamClient): () => void {
    this.clients.add(c);
    if (!this.timer) {
      this.timer = setInterval(() => this.summary(), 1000);
      this.timer.unref();
    }
    return () => {
      this.clients.delete(c);
      if (this.clients.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = null;
        this.cells.clear();
      }
    };
  }

  event(ev: EnrichedConnect): void {
    if (this.clients.size === 0) return;
    const key = `${ev.service}\u0000${ev.dst}\u0000${ev.result}`;
    let cell = this.cells.get(key);
    if (!cell) {
      cell = { service: ev.service, dst: ev.dst, result: ev.result, hist: new Histogram(), synRetrans: 0 };
      this.cells.set(key, cell);
    }
    const ms = ev.latencyNs / 1e6;
    cell.hist.add(ms);
    cell.synRetrans += ev.synRetrans;
    let frame: string | null = null;
    for (const c of this.clients) {
      if (!c.wantEvents) continue;
      frame ??= `event: connect\ndata: ${JSON.stringify({
        ts_ns: ev.tsNs.toString(),
        service: ev.service,
        comm: ev.comm,
        dst: ev.dst,
        result: ev.result,
        latency_ms: ms,
        syn_retrans: ev.synRetrans,
        pid: ev.pid,
        container: ev.container,
      })}\n\n`;
      this.deliver(c, frame);
    }
  }

  private deliver(c: StreamClient, frame: string): void {
    if (c.send(frame)) this.sent.inc();
    else this.skipped.inc();
  }

  private summary(): void {
    // Besides the per-second quantiles, each row carries its exact histogram (sparse buckets, sum, min,
    // max) so a client such as `tcplat top` can merge seconds and results without losing precision.
    const rows = [...this.cells.values()].map((c) => {
      const buckets: Record<number, number> = {};
      c.hist.buckets.forEach((n, i) => {
        if (n > 0) buckets[i] = n;
      });
      return {
        service: c.service,
        dst: c.dst,
        result: c.result,
        count: c.hist.count,
        p50_ms: c.hist.quantile(0.5),
        p99_ms: c.hist.quantile(0.99),
        min_ms: c.hist.minMs,
        max_ms: c.hist.maxMs,
        sum_ms: c.hist.sumMs,
        syn_retrans: c.synRetrans,
        buckets,
      };
    });
    this.cells = new Map();
    const frame = `event: summary\ndata: ${JSON.stringify({ ts_ms: Date.now(), total: rows.reduce((n, r) => n + r.count, 0), series: rows })}\n\n`;
    for (const c of this.clients) this.deliver(c, frame);
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clients.clear();
  }
}
