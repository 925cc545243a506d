/**
 * Live view for `tcplat top` and friends: server-sent events of every connect as it is enriched, and a
 * summary per second (by arrival) per service, destination and result (and the same for TLS handshakes, in
 * the summary's `tls` rows). Nothing is computed while nobody
 * listens; a client that cannot keep up misses events (counted), never slows the pipeline.
 *
 * Bounded so that clients cannot starve the agent: at most `maxClients` at once (the route answers 503
 * beyond), each with at most `bufferBytes` waiting in memory (frames beyond it are skipped), and a client
 * whose buffer stays full for `stallMs` (it stopped reading) is disconnected and counted.
 */
import { Histogram, SESSION_BUCKET_COUNT, sessionBucketIndex } from '@tcplat/core';
import type { Counter, Metrics } from './metrics';
import type { EnrichedClose, EnrichedConnect, EnrichedTls } from './types';

export interface StreamClient {
  /** Queue one SSE frame for the client. */
  write(frame: string): void;
  /** Bytes queued for the client and not yet taken by the kernel. */
  buffered(): number;
  /** Disconnect the client (it stopped reading). */
  close(): void;
  wantEvents: boolean;
}

export interface StreamLimits {
  maxClients: number;
  bufferBytes: number;
  stallMs: number;
}

export const DEFAULT_STREAM_LIMITS: StreamLimits = { maxClients: 64, bufferBytes: 256 * 1024, stallMs: 10_000 };

/** Connect frames are written to clients in batches, at most this often... */
const BATCH_MS = 50;
/** ...or when this many are waiting. */
const MAX_BATCH_FRAMES = 500;

interface Slot {
  client: StreamClient;
  /** When the client's buffer was first found full, 0 while it keeps up. */
  fullSince: number;
}

interface Cell {
  service: string;
  dst: string;
  result: string;
  hist: Histogram;
  synRetrans: number;
}

/** The connections of one service -> destination that closed in the second (probe close events, --probe-close). */
interface SessionCell {
  service: string;
  dst: string;
  count: number;
  sumMs: number;
  minMs: number;
  maxMs: number;
  /** Lifespan bucket counts (SESSION_BUCKET_BOUNDS_MS). */
  buckets: number[];
  retrans: number;
  resets: number;
}

export class StreamHub {
  private readonly clients = new Map<StreamClient, Slot>();
  limits: StreamLimits = { ...DEFAULT_STREAM_LIMITS };
  private pending: string[] = [];
  private batchTimer: NodeJS.Timeout | null = null;
  private cells = new Map<string, Cell>();
  private sessions = new Map<string, SessionCell>();
  /** TLS handshakes of the current second (summary rows only: no per-handshake frames). */
  private tlsCells = new Map<string, Cell>();
  private timer: NodeJS.Timeout | null = null;
  private readonly skipped: Counter;
  private readonly sent: Counter;
  /** Clients disconnected because they stopped reading. */
  readonly dropped: Counter;
  /** Clients refused (503) because maxClients were connected. */
  readonly refused: Counter;

  constructor(
    metrics: Metrics,
    private readonly now: () => number = Date.now,
  ) {
    this.skipped = metrics.counter('tcplat_stream_skipped_total', 'Server-sent frames skipped because a client was too slow');
    this.sent = metrics.counter('tcplat_stream_sent_total', 'Server-sent frames delivered');
    this.dropped = metrics.counter('tcplat_stream_clients_dropped_total', 'Server-sent event clients disconnected, by reason', { reason: 'stalled' });
    this.refused = metrics.counter('tcplat_stream_clients_refused_total', 'Server-sent event clients refused with 503 because --stream-max-clients were connected');
    metrics.gauge('tcplat_stream_clients', 'Connected /api/stream clients', () => this.clients.size);
  }

  get size(): number {
    return this.clients.size;
  }

  /** Room for one more client? (The route answers 503 when not, counted.) */
  full(): boolean {
    return this.clients.size >= this.limits.maxClients;
  }

  add(c: StreamClient): () => void {
    this.clients.set(c, { client: c, fullSince: 0 });
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
        this.sessions.clear();
        this.tlsCells.clear();
        this.pending = [];
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
    if (!this.anyWantsEvents()) return;
    this.pending.push(
      `event: connect\ndata: ${JSON.stringify({
        ts_ns: ev.tsNs.toString(),
        service: ev.service,
        comm: ev.comm,
        dst: ev.dst,
        result: ev.result,
        latency_ms: ms,
        syn_retrans: ev.synRetrans,
        pid: ev.pid,
        container: ev.container,
      })}\n\n`,
    );
    // Frames go out in batches: one write per client per batch rather than one per event, so that many
    // clients cost few writes and few buffered chunks (each queued chunk costs far more than its bytes).
    if (this.pending.length >= MAX_BATCH_FRAMES) this.flushEvents();
    else this.batchTimer ??= setTimeout(() => this.flushEvents(), BATCH_MS);
  }

  /** A closed connection (the probe's close event): lifespans per service -> destination for the summary's `sessions`. */
  closeEvent(ev: EnrichedClose): void {
    if (this.clients.size === 0) return;
    const key = `${ev.service}\u0000${ev.dst}`;
    let c = this.sessions.get(key);
    if (!c) {
      c = { service: ev.service, dst: ev.dst, count: 0, sumMs: 0, minMs: Infinity, maxMs: -Infinity, buckets: new Array<number>(SESSION_BUCKET_COUNT).fill(0), retrans: 0, resets: 0 };
      this.sessions.set(key, c);
    }
    const ms = ev.lifespanNs / 1e6;
    c.count++;
    c.sumMs += ms;
    c.minMs = Math.min(c.minMs, ms);
    c.maxMs = Math.max(c.maxMs, ms);
    c.buckets[sessionBucketIndex(ms)]++;
    c.retrans += ev.retrans;
    if (ev.closedBy === 'reset_in' || ev.closedBy === 'reset_out') c.resets++;
  }

  /** A TLS handshake: counted in the second's `tls` summary rows. */
  tls(ev: EnrichedTls): void {
    if (this.clients.size === 0) return;
    const key = `${ev.service}\u0000${ev.dst}\u0000${ev.result}`;
    let cell = this.tlsCells.get(key);
    if (!cell) {
      cell = { service: ev.service, dst: ev.dst, result: ev.result, hist: new Histogram(), synRetrans: 0 };
      this.tlsCells.set(key, cell);
    }
    cell.hist.add(ev.latencyNs / 1e6);
  }

  private anyWantsEvents(): boolean {
    for (const c of this.clients.keys()) if (c.wantEvents) return true;
    return false;
  }

  private flushEvents(): void {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    if (this.pending.length === 0) return;
    const frames = this.pending.length;
    const text = this.pending.join('');
    this.pending = [];
    for (const slot of [...this.clients.values()]) if (slot.client.wantEvents) this.deliver(slot, text, frames);
  }

  /** Write frames unless the client's buffer is full; drop a client that has stayed full for stallMs. */
  deliver(slot: Slot, text: string, frames = 1): void {
    if (!this.clients.has(slot.client)) return;
    if (slot.client.buffered() + text.length <= this.limits.bufferBytes) {
      slot.fullSince = 0;
      slot.client.write(text);
      this.sent.inc(frames);
      return;
    }
    this.skipped.inc(frames);
    const t = this.now();
    if (slot.fullSince === 0) slot.fullSince = t;
    else if (t - slot.fullSince >= this.limits.stallMs) {
      this.dropped.inc();
      this.clients.delete(slot.client);
      slot.client.close();
    }
  }

  private summary(): void {
    this.flushEvents();
    // Besides the per-second quantiles, each row carries its exact histogram (sparse buckets, sum, min,
    // max) so a client such as `tcplat top` can merge seconds and results without losing precision.
    const row = (c: Cell, tls: boolean) => {
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
        ...(tls ? {} : { syn_retrans: c.synRetrans }),
        buckets,
      };
    };
    const rows = [...this.cells.values()].map((c) => row(c, false));
    const tls = [...this.tlsCells.values()].map((c) => row(c, true));
    this.cells = new Map();
    // Connections that closed in the second, per service -> destination, with their exact lifespan
    // histogram (sparse, SESSION_BUCKET_BOUNDS_MS): `tcplat top`'s churn columns.
    const sessions = [...this.sessions.values()].map((c) => {
      const buckets: Record<number, number> = {};
      c.buckets.forEach((n, i) => {
        if (n > 0) buckets[i] = n;
      });
      return { service: c.service, dst: c.dst, count: c.count, sum_ms: c.sumMs, min_ms: c.minMs, max_ms: c.maxMs, retrans: c.retrans, resets: c.resets, buckets };
    });
    this.sessions = new Map();
    this.tlsCells = new Map();
    // `total` counts connects only, as before; TLS handshakes come in their own rows (the same shape).
    const frame = `event: summary\ndata: ${JSON.stringify({ ts_ms: Date.now(), total: rows.reduce((n, r) => n + r.count, 0), series: rows, tls, sessions })}\n\n`;
    for (const slot of [...this.clients.values()]) this.deliver(slot, frame);
  }

  close(): void {
    if (this.batchTimer) clearTimeout(this.batchTimer);
    this.batchTimer = null;
    this.pending = [];
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clients.clear();
  }
}
