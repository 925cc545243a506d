/**
 * The agent's pipeline, one job per stage:
 *   source -> parse -> enrich -> aggregate -> encode -> spool -> write
 * Each stage counts what it received, emitted and dropped (by reason); /metrics and /api/status show it.
 */
import fs from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { connectLine, encodePoint, LineProtocolError, MEASUREMENT, parseProbeLine, ROLLED_UP_MEASUREMENTS, type HistMeasurement } from '@tcplat/core';
import { Aggregator, type Emitted } from './aggregate/aggregator';
import { SeriesBudget } from './aggregate/budget';
import { wallNs, type Clock } from './clock';
import { CgroupResolver } from './enrich/cgroup';
import { Enricher } from './enrich/enricher';
import { ProcCache } from './enrich/proc';
import { Metrics, StageCounters, type Counter } from './metrics';
import type { AgentConfig } from './options';
import { Refusals } from './parse/refusals';
import { isHistLine, parseHistLine } from './parse/hist';
import { TextParser, type TextTool } from './parse/text';
import { sourceCommand } from './sources/commands';
import { ProbeRunStats } from './sources/probe-stats';
import { describeCommand, SourceSupervisor, type SourceCommand } from './sources/supervisor';
import { Spool, type DropReason, type SpoolStats } from './spool/spool';
import { StreamHub } from './stream';
import type { EnrichedEvent, Logger, SourceEvent } from './types';
import { Writer, type WriterOptions } from './write/writer';
import { chunks, rollupRange, rollupStore, tryEnsureRollupStore } from './rollup/engine';
import { DEFAULT_ROLLUP_RETENTION, LIVE_CHUNK_MS, RollupJob } from './rollup/job';

export const MAX_BATCH_LINES = 5000;
/** Events held in memory before a flush is forced (imports read faster than the flush interval). */
export const MAX_PENDING_EVENTS = 100_000;
/**
 * Memory bound: V8 lets a busy heap grow to several times its live size before it compacts (measured:
 * ~24 MB live, 110 MB heap during an import). Past this much used heap, a flush ends with a full GC
 * (~10 ms), which keeps the agent's RSS well under 200 MB at 100k+ events/s.
 */
const HEAP_SOFT_LIMIT = 64 << 20;
let fullGc: (() => void) | null | undefined;
function collectGarbage(): void {
  if (fullGc === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      fullGc = vm.runInNewContext('gc') as () => void;
    } catch {
      fullGc = null;
    }
  }
  fullGc?.();
}

/** The `tls` object of a probe stats line (bpf/README.md, TLS handshakes): the probe's uprobes on OpenSSL. */
export interface ProbeTlsStats {
  /** false: asked for, but the uprobes could not be loaded (the probe logs why). */
  on: boolean;
  /** Files looked at, by outcome (attached, not_openssl, go_crypto_tls, java, attach_failed, unreadable). */
  files: Record<string, number>;
}

/**
 * Probe v2 stats lines: `drops` and `missed` objects of counters, as `drop:<reason>` / `missed:<hook>`; the
 * `tls` object's counters (cumulative per run, summed over runs like the rest) as `tls:<ok|failed|unjoined>`,
 * `tls_drop:<reason>` and `tls_not_reported:<reason>`, and its file outcomes (the current run's) apart.
 */
function lossReasons(text: string): { reasons: Map<string, number>; tls: ProbeTlsStats | null } {
  const out = new Map<string, number>();
  let tls: ProbeTlsStats | null = null;
  if (!text.includes('"drops"') && !text.includes('"missed"') && !text.includes('"tls"')) return { reasons: out, tls };
  const counters = (kind: string, obj: unknown) => {
    if (typeof obj !== 'object' || obj === null) return;
    for (const [k, v] of Object.entries(obj)) if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) out.set(`${kind}:${k}`, v);
  };
  try {
    const o = JSON.parse(text) as { drops?: unknown; missed?: unknown; tls?: Record<string, unknown> };
    counters('drop', o.drops);
    counters('missed', o.missed);
    if (typeof o.tls === 'object' && o.tls !== null) {
      const t = o.tls;
      counters('tls', { ok: t.ok, failed: t.failed, unjoined: t.unjoined });
      counters('tls_drop', t.drops);
      counters('tls_not_reported', t.not_reported);
      const files: Record<string, number> = {};
      if (typeof t.files === 'object' && t.files !== null) {
        for (const [k, v] of Object.entries(t.files)) if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) files[k] = v;
      }
      tls = { on: t.on === true, files };
    }
  } catch {
    /* the stats line itself parsed; extras are optional */
  }
  return { reasons: out, tls };
}

/** InfluxDB's latest timestamp, less room for the 1 ns moves of unique timestamps and histogram offsets. */
const MAX_TIME_NS = 9_223_372_036_854_775_806n - 60_000_000_000n;

export interface AgentDeps {
  log: Logger;
  clock?: Clock;
  /** Override the source command (tests). */
  command?: SourceCommand;
  writer?: Partial<Omit<WriterOptions, 'log' | 'metrics'>>;
  selfPids?: number[];
  /** Back-pressure: past this many bytes of batches on their way to the spool, the source is not read. */
  appendBacklogBytes?: number;
  /** An opened spool (Agent.create opens it). */
  spool: Spool;
  metrics: Metrics;
}

/** Bytes of batches on their way to the spool's worker past which the source is not read. */
const APPEND_BACKLOG_BYTES = 32 << 20;

/** Append + commit (fsync) latency buckets, seconds. */
const APPEND_SECONDS_BOUNDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class Agent {
  readonly metrics: Metrics;
  readonly spool: Spool;
  readonly writer: Writer;
  /** The live rollup job (null with --no-rollup and in --once, which rolls up its whole range at the end). */
  readonly rollup: RollupJob | null;
  /** --once: the span of the import's hist points (epoch ms), rolled up before it exits. */
  private importSpan: { fromMs: number; toMs: number } | null = null;
  readonly source: SourceSupervisor;
  readonly stream: StreamHub;
  readonly command: SourceCommand;
  private readonly stages: Record<'parse' | 'enrich' | 'aggregate' | 'encode' | 'spool' | 'write', StageCounters>;
  private readonly enricher: Enricher;
  readonly cgroups: CgroupResolver | null;
  private readonly aggregator: Aggregator;
  /** TLS handshakes (the probe's tls lines): tls_handshake and tls_handshake_hist, the connect path's machinery. */
  private readonly tlsAggregator: Aggregator;
  private readonly tlsHandshakes: Record<'ok' | 'failed', Counter>;
  readonly budget: SeriesBudget;
  private readonly textParser: TextParser | null;
  private readonly log: Logger;
  private batch = '';
  private batchLines = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly refusals: Refusals;
  private probeStats: { events: number; dropped: number; atNs: string; runs: number; run: { events: number; dropped: number } | null } | null = null;
  private readonly probeRuns = new ProbeRunStats();
  /** The TLS part of the probe's last stats line (null: none yet, or the probe runs with --tls off). */
  private probeTls: ProbeTlsStats | null = null;
  private readonly startedMs = Date.now();
  private shuttingDown = false;
  private lastEventNs: bigint | null = null;
  /** The longest flush (aggregate + encode + hand-off to the spool's worker): the event loop stands still meanwhile. */
  private flushMaxMs = 0;
  private readonly appendBacklogBytes: number;
  private sourcePaused = false;
  private sourcePauses = 0;
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 10 });

  /** Open the spool (refused when another process holds its directory), then build the pipeline. */
  static async create(config: AgentConfig, deps: Omit<AgentDeps, 'spool' | 'metrics'>): Promise<Agent> {
    const metrics = new Metrics();
    const appendSeconds = metrics.histogram('tcplat_spool_append_seconds', 'Time to store one batch in the spool: insert + commit with fsync (in the spool worker)', APPEND_SECONDS_BOUNDS);
    let agent: Agent | null = null;
    const spool = await Spool.open(config.spoolDir, { maxBytes: config.spoolMaxBytes, log: deps.log, appendSeconds, onAppendSettled: () => agent?.backPressure() });
    agent = new Agent(config, { ...deps, spool, metrics });
    return agent;
  }

  private constructor(
    readonly config: AgentConfig,
    deps: AgentDeps,
  ) {
    this.log = deps.log;
    this.refusals = new Refusals(this.log);
    this.metrics = deps.metrics;
    const m = this.metrics;
    this.stages = {
      parse: new StageCounters(m, 'parse'),
      enrich: new StageCounters(m, 'enrich'),
      aggregate: new StageCounters(m, 'aggregate'),
      encode: new StageCounters(m, 'encode'),
      spool: new StageCounters(m, 'spool'),
      write: new StageCounters(m, 'write'),
    };
    this.spool = deps.spool;
    this.appendBacklogBytes = deps.appendBacklogBytes ?? APPEND_BACKLOG_BYTES;
    const store = rollupStore(config.target, { rp: config.rollup.rp, bucket: config.rollup.bucket });
    this.rollup =
      config.rollup.enabled && !config.once
        ? new RollupJob({ store, host: config.host, intervalMs: config.rollup.intervalMs, dir: this.spool.dir, log: this.log, metrics: m })
        : null;
    const job = this.rollup;
    this.writer = new Writer(config.target, this.spool, { ...deps.writer, onDelivered: job ? (rec) => job.delivered(rec) : undefined, log: this.log, metrics: m });
    this.stream = new StreamHub(m);
    const live = !config.once && config.source !== 'ndjson';
    // The probe's cgroup_id names the cgroup the task ran in; resolved through the cgroup2 hierarchy it
    // outlives the process. Only live: an ndjson capture's ids belong to another boot or host.
    this.cgroups = live ? new CgroupResolver({ log: this.log }) : null;
    const cg = this.cgroups;
    this.enricher = new Enricher(
      {
        rules: config.rules,
        selfPids: new Set([...(deps.selfPids ?? [process.pid]), ...config.excludePids]),
        useProc: live,
        procCache: cg ? new ProcCache('/proc', undefined, undefined, undefined, (p) => cg.hostPath(p)) : undefined,
        cgroups: config.source === 'probe' ? (cg ?? undefined) : undefined,
      },
      this.stages.enrich,
    );
    this.budget = new SeriesBudget({ maxSeries: config.maxSeries, horizonS: Math.round(config.seriesHorizonMs / 1000) }, m, this.log);
    const aggregation = {
      host: config.host,
      windowNs: BigInt(config.histWindowMs) * 1_000_000n,
      rawLimit: config.rawRateLimit,
      runId: this.spool.runId,
      // --once: points depend only on the capture, so importing it again overwrites instead of adding up.
      importEvery: config.once ? MAX_PENDING_EVENTS : undefined,
      budget: this.budget,
    };
    this.aggregator = new Aggregator(aggregation, this.stages.aggregate);
    this.tlsAggregator = new Aggregator({ ...aggregation, kind: 'tls' }, this.stages.aggregate);
    const tlsHelp = 'TLS handshakes read from the probe (tls lines) and aggregated, by result (tls_handshake_hist counts every one; tls_handshake is rate-limited like tcp_connect)';
    this.tlsHandshakes = { ok: m.counter('tcplat_tls_handshakes_total', tlsHelp, { result: 'ok' }), failed: m.counter('tcplat_tls_handshakes_total', tlsHelp, { result: 'failed' }) };
    const clock = deps.clock ?? wallNs;
    this.textParser = config.source === 'probe' || config.source === 'ndjson' ? null : new TextParser(config.source as TextTool, clock);
    this.command =
      deps.command ??
      sourceCommand({
        source: config.source,
        sourceCmd: config.sourceCmd,
        probe: config.probe,
        selfPid: process.pid,
        excludePids: config.excludePids,
        probeMode: config.probeMode,
        probeClose: config.probeClose,
        probeZeroWindows: config.probeZeroWindows,
        probeTls: config.probeTls,
        histIntervalMs: config.histWindowMs,
      });
    this.source = new SourceSupervisor({ command: this.command, once: config.once, log: this.log, onLine: (l) => this.line(l) });
    this.registerGauges();
  }

  private registerGauges(): void {
    const m = this.metrics;
    m.gauge('tcplat_source_lines_total', 'Lines read from the source', () => this.source.state.lines);
    m.gauge('tcplat_source_restarts_total', 'Source restarts', () => this.source.state.restarts);
    m.gauge('tcplat_source_running', '1 while the source process runs', () => (this.source.state.running ? 1 : 0));
    m.gauge('tcplat_source_long_lines_dropped_total', 'Source lines over 1 MiB, dropped', () => this.source.state.longLinesDropped);
    m.gauge('tcplat_probe_kernel_dropped', 'Events the probe lost in the kernel (ring buffer full), from its stats lines, summed over probe runs', () => this.probeRuns.dropped);
    const reasonsOf = (kinds: readonly string[]) =>
      [...this.probeRuns.reasons].flatMap(([k, value]) => {
        const [kind, reason] = k.split(':');
        return kinds.includes(kind) ? [{ kind, reason, value }] : [];
      });
    m.gauge('tcplat_probe_kernel_lost', 'Probe v2 loss counters summed over probe runs: kind=drop (attempts lost, by reason) and kind=missed (hook runs the kernel skipped)', () =>
      reasonsOf(['drop', 'missed']).map(({ kind, reason, value }) => ({ labels: { kind, reason }, value })),
    );
    m.gauge('tcplat_probe_tls_handshakes', "TLS handshakes the probe reported, summed over probe runs, by result (ok, failed; unjoined: of those, reported without their socket, dst 'unknown')", () =>
      reasonsOf(['tls']).map(({ reason, value }) => ({ labels: { result: reason }, value })),
    );
    m.gauge('tcplat_probe_tls_lost', 'TLS handshakes the probe could not report, summed over probe runs: kind=drop (ring buffer full) and kind=not_reported (role_unknown: the SSL* was set up before the probe attached)', () =>
      reasonsOf(['tls_drop', 'tls_not_reported']).map(({ kind, reason, value }) => ({ labels: { kind: kind.slice(4), reason }, value })),
    );
    m.gauge('tcplat_probe_tls_files', "Files the probe's TLS discovery looked at in its current run, by outcome: attached (OpenSSL uprobes on it), not_openssl, go_crypto_tls and java (not covered), attach_failed, unreadable (bpf/README.md)", () =>
      Object.entries(this.probeTls?.files ?? {}).map(([outcome, value]) => ({ labels: { outcome }, value })),
    );
    m.gauge('tcplat_probe_tls_on', "1 while the probe's TLS uprobes run, 0 when they could not be loaded or the probe runs with --tls off (--probe-tls=off)", () => (this.probeTls?.on ? 1 : 0));
    m.gauge('tcplat_probe_runs_total', 'Probe processes whose stats lines the agent read (each restart starts its counters at 0)', () => this.probeRuns.runs);
    m.gauge('tcplat_pipeline_pending_events', 'Events in memory not yet spooled (aggregation)', () => this.pendingEvents);
    const sp = () => this.spool.stats;
    const byReason = (f: (d: SpoolStats['dropped'][DropReason]) => number) => () =>
      (Object.keys(sp().dropped) as DropReason[]).map((reason) => ({ labels: { reason }, value: f(sp().dropped[reason]) }));
    m.gauge('tcplat_spool_bytes', 'Payload bytes stored in the spool (what --spool-max-bytes caps)', () => sp().bytes);
    m.gauge('tcplat_spool_pending_lines', 'Lines waiting to be written (stored, or held in memory while the disk refuses them)', () => this.spool.lines);
    m.gauge('tcplat_spool_pending_batches', 'Batches waiting to be written (stored, or held in memory)', () => this.spool.records);
    m.gauge('tcplat_spool_held_batches', 'Batches held in memory because the disk refused them (retried every second)', () => sp().pendingRecords);
    m.gauge('tcplat_spool_held_bytes', 'Bytes held in memory because the disk refused them', () => sp().pendingBytes);
    m.gauge('tcplat_spool_dropped_batches_total', 'Batches that left the spool unwritten, by reason (cap: oldest dropped at the size cap; pending_full: memory bound while the disk refused; unstored_at_close)', byReason((d) => d.records));
    m.gauge('tcplat_spool_dropped_lines_total', 'Lines that left the spool unwritten, by reason', byReason((d) => d.lines));
    m.gauge('tcplat_spool_dropped_bytes_total', 'Bytes that left the spool unwritten, by reason', byReason((d) => d.bytes));
    m.gauge('tcplat_spool_store_failures_total', 'Batch stores the disk refused, by reason (disk_full, io_error, other); the batch is kept in memory and retried', () =>
      Object.entries(sp().storeFailures).map(([reason, value]) => ({ labels: { reason }, value })),
    );
    m.gauge('tcplat_spool_replayed_lines_total', 'Lines found in the spool at start (left by an earlier run)', () => sp().replayedLines);
    m.gauge('tcplat_spool_run_id', 'This run id (grows by one per start; histogram timestamps use it)', () => this.spool.runId);
    m.gauge('tcplat_source_pauses_total', 'Times the source was not read because batches waited for a slow spool disk (back-pressure)', () => this.sourcePauses);
    m.gauge('tcplat_flush_max_seconds', 'Longest flush so far (aggregate + encode + hand-off to the spool worker; the event loop waits meanwhile)', () => this.flushMaxMs / 1000);
    m.gauge('tcplat_event_loop_delay_max_seconds', 'Largest event-loop delay seen (perf_hooks monitorEventLoopDelay)', () => this.loopDelay.max / 1e9);
    m.gauge('tcplat_lag_seconds', 'Age of the oldest batch not yet written to InfluxDB', () => this.lagSeconds());
    m.gauge('tcplat_session_direction_guesses_total', 'tcplife rows whose direction (opened or accepted) had no evidence: guessed (both ends seen: the lower port listens; one end: opened)', () => this.enricher.sessionGuesses);
    m.gauge('tcplat_cgroup_walks_total', 'Walks of the cgroup v2 hierarchy to resolve new cgroup ids', () => this.cgroups?.stats.walks ?? 0);
    m.gauge('tcplat_cgroup_unresolved_total', 'Events whose cgroup id was not (or no longer) in the cgroup v2 hierarchy: no container or cgroup: rule for them', () => this.cgroups?.stats.unresolved ?? 0);
    m.gauge('tcplat_ts_collisions_total', 'Points moved by 1 ns because their series already had a point at that time', () => this.aggregator.collisions + this.tlsAggregator.collisions);
    m.gauge('tcplat_raw_unchecked_total', 'Raw/session/TLS points older than the unique-timestamp memory (300 s of event time), written unchecked', () => this.aggregator.unchecked + this.tlsAggregator.unchecked);
  }

  /** Events held by both aggregators (connects and the rest; TLS handshakes). */
  private get pendingEvents(): number {
    return this.aggregator.pending + this.tlsAggregator.pending;
  }

  lagSeconds(): number {
    const oldest = this.spool.oldestMs;
    return oldest !== null ? Math.max(0, (Date.now() - oldest) / 1000) : 0;
  }

  start(): void {
    this.log.info(
      { source: this.config.source, command: describeCommand(this.command), spool: this.spool.dir, runId: this.spool.runId, once: this.config.once },
      'agent starting',
    );
    this.loopDelay.enable();
    this.flushTimer = setInterval(() => this.flush(false), this.config.flushIntervalMs);
    this.rollup?.start();
    this.writer.kick();
    this.source.start();
  }

  /** parse -> enrich -> aggregate for one source line. */
  line(text: string): void {
    const parse = this.stages.parse;
    parse.received.inc();
    let ev: SourceEvent;
    if (this.textParser) {
      const r = this.textParser.parse(text);
      if (r.kind !== 'event') {
        if (r.kind === 'error') {
          parse.drop(r.reason);
          if (r.message) this.parseError(r.reason, r.message);
        } else if (r.kind === 'skip' && r.reason !== 'empty') parse.drop(`skip_${r.reason}`);
        else if (r.kind === 'skip') parse.drop('empty');
        return;
      }
      ev = r.event;
    } else if (isHistLine(text)) {
      // --probe-mode hist: one exact histogram per key and probe window, no per-attempt lines.
      const r = parseHistLine(text);
      if (!r.ok) {
        parse.drop(r.reason);
        this.parseError(r.reason, r.message);
        return;
      }
      ev = r.value;
    } else {
      const r = parseProbeLine(text);
      if (!r.ok) {
        parse.drop(r.error.reason);
        if (r.error.reason !== 'empty') this.parseError(r.error.reason, r.error.message);
        return;
      }
      if (r.value.type === 'stats') {
        // Probe v2 names its run (started_ns); older probes are told apart by the agent's restarts.
        const started = /"started_ns":(\d+)/.exec(text)?.[1];
        const extra = lossReasons(text);
        this.probeTls = extra.tls;
        this.probeStatsLine(started ?? this.source.state.starts, r.value.events, r.value.dropped, r.value.tsNs, extra.reasons);
        parse.drop('stats_line');
        return;
      }
      // Hist lines took parse/hist.ts above: anything else here but a connect, close or tls line is not ours to read.
      if (r.value.type !== 'connect' && r.value.type !== 'close' && r.value.type !== 'tls') {
        parse.drop('type');
        return;
      }
      ev = r.value;
    }
    if (ev.tsNs > MAX_TIME_NS) {
      // InfluxDB stores int64 ns: a later time would make it refuse the whole batch.
      parse.drop('ts_out_of_range');
      this.parseError('ts_out_of_range', `timestamp ${ev.tsNs} ns is beyond what InfluxDB can store (year 2262)`);
      return;
    }
    parse.emitted.inc();
    const e = this.enricher.enrich(ev);
    if (ev.type === 'session') {
      for (const s of this.enricher.takeSessions()) {
        this.lastEventNs = s.tsNs;
        this.aggregator.add(s);
      }
    }
    if (!e) return;
    this.lastEventNs = e.tsNs;
    if (e.type === 'tls') {
      // Rare (clients keep their TLS connections open): kept off the connect path below.
      this.tlsAggregator.add(e);
      this.tlsHandshakes[e.result].inc();
      this.stream.tls(e);
      if (this.tlsAggregator.pending >= MAX_PENDING_EVENTS) this.flush(false);
      return;
    }
    this.aggregator.add(e as EnrichedEvent);
    if (e.type === 'connect') this.stream.event(e);
    else if (e.type === 'close') this.stream.closeEvent(e);
    // An import reads far faster than the flush interval: bound what waits in memory.
    if (this.aggregator.pending >= MAX_PENDING_EVENTS) this.flush(false);
  }

  private parseError(reason: string, message: string): void {
    // Counted by reason in /metrics; logged once per burst; an import ends with a summary.
    this.refusals.add(reason, message, this.source.state.lines);
  }

  private probeStatsLine(run: string | number, events: number, dropped: number, tsNs: bigint, reasons: Map<string, number>): void {
    // Cumulative per probe process: a restarted probe starts again from 0 (see ProbeRunStats).
    const u = this.probeRuns.update(run, events, dropped, reasons);
    const r = this.probeRuns;
    this.probeStats = { events: r.events, dropped: r.dropped, atNs: tsNs.toString(), runs: r.runs, run: r.current };
    if (u.newlyDropped > 0) {
      this.log.warn(
        { dropped: r.dropped, newlyDropped: u.newlyDropped, runDropped: dropped, runs: r.runs },
        `the probe lost ${u.newlyDropped} events in the kernel (${r.dropped} in all since the agent started): raise its --ringbuf-mb`,
      );
    }
  }

  /** aggregate -> encode -> spool: turn what is due into line protocol, in batches of <= 5,000 lines. */
  flush(final: boolean): void {
    const t0 = performance.now();
    if (this.config.source === 'probe') this.cgroups?.tick();
    // tcplife rows held for evidence of their direction: at most a few seconds, all of them at the end.
    for (const s of this.enricher.takeSessions(final ? 'all' : 'expired')) this.aggregator.add(s);
    this.aggregator.flush((p) => this.encode(p), final);
    this.tlsAggregator.flush((p) => this.encode(p), final);
    this.sealBatch();
    if (process.memoryUsage().heapUsed > HEAP_SOFT_LIMIT) collectGarbage();
    this.flushMaxMs = Math.max(this.flushMaxMs, performance.now() - t0);
  }

  private encode(p: Emitted): void {
    const enc = this.stages.encode;
    enc.received.inc();
    let line: string;
    try {
      line = 'raw' in p ? connectLine(p) : encodePoint(p);
    } catch (e) {
      enc.drop(e instanceof LineProtocolError ? 'line_protocol' : 'error');
      this.log.warn({ err: (e as Error).message, measurement: 'raw' in p ? MEASUREMENT.connect : p.measurement }, 'cannot encode a point; dropped');
      return;
    }
    enc.emitted.inc();
    if (this.config.once && !('raw' in p) && ROLLED_UP_MEASUREMENTS.includes(p.measurement as HistMeasurement) && p.timeNs !== undefined) {
      const ms = Number(BigInt(p.timeNs) / 1_000_000n);
      if (!this.importSpan) this.importSpan = { fromMs: ms, toMs: ms + 1 };
      else {
        if (ms < this.importSpan.fromMs) this.importSpan.fromMs = ms;
        if (ms + 1 > this.importSpan.toMs) this.importSpan.toMs = ms + 1;
      }
    }
    this.batch += line + '\n';
    this.batchLines++;
    if (this.batchLines >= MAX_BATCH_LINES) this.sealBatch();
  }

  private sealBatch(): void {
    if (this.batchLines === 0) return;
    const text = this.batch;
    const lines = this.batchLines;
    this.batch = '';
    this.batchLines = 0;
    const sp = this.stages.spool;
    sp.received.inc(lines);
    // The worker stores it (or holds it in memory while the disk refuses it); the event loop goes on.
    this.spool.append(text, lines).then(
      () => {
        sp.emitted.inc(lines);
        this.writer.kick();
      },
      (e: Error) => {
        // Only when the spool's worker itself is gone: the lines are lost, counted and said.
        sp.drop('spool_error', lines);
        this.log.error({ err: e.message, lines }, `cannot append to the spool in ${this.spool.dir}; ${lines} lines lost`);
      },
    );
    this.backPressure();
  }

  /**
   * A slow disk must not make batches pile up in memory: past the backlog bound, stop reading the source
   * (its pipe fills; the probe counts what its ring buffer cannot hold), resume below half of it.
   */
  backPressure(): void {
    const backlog = this.spool.appendingBytes;
    if (!this.sourcePaused && backlog > this.appendBacklogBytes) {
      this.sourcePaused = true;
      this.sourcePauses++;
      this.source.pause();
      if (this.sourcePauses === 1 || this.sourcePauses % 100 === 0) {
        this.log.warn({ backlogBytes: backlog, pauses: this.sourcePauses }, 'the spool disk is slower than the source: not reading the source until the spool catches up');
      }
    } else if (this.sourcePaused && backlog <= this.appendBacklogBytes / 2) {
      this.sourcePaused = false;
      this.source.resume();
    }
  }

  /** /readyz: the source runs (or, in --once, has not failed) and the writer is healthy. */
  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    const s = this.source.state;
    if (!s.running && !(this.config.once && s.lastExit?.code === 0)) {
      reasons.push(s.starts === 0 ? 'source not started' : `source not running (last exit: ${JSON.stringify(s.lastExit)}; ${s.startError ?? ''})`.trim());
    }
    const held = this.spool.stats.pendingRecords;
    if (held > 0) reasons.push(`spool: the disk refuses batches (${held} held in memory, retried every second; see tcplat_spool_store_failures_total)`);
    if (this.writer.state.configError) reasons.push(this.writer.state.configError);
    else if (!this.writer.state.healthy) reasons.push(`InfluxDB writes failing: ${this.writer.state.lastError}`);
    return { ready: reasons.length === 0, reasons };
  }

  status(): Record<string, unknown> {
    const s = this.source.state;
    return {
      version: 1,
      uptime_s: (Date.now() - this.startedMs) / 1000,
      host: this.config.host,
      source: {
        kind: this.config.source,
        command: describeCommand(this.command),
        running: s.running,
        pid: s.pid,
        starts: s.starts,
        restarts: s.restarts,
        last_exit: s.lastExit,
        next_start_ms: s.nextStartMs,
        error: s.startError,
        lines: s.lines,
        stderr_tail: s.stderrTail,
        text_columns: this.textParser?.columns,
        probe_stats: this.probeStats,
        probe_tls: this.probeTlsStatus(),
        cgroups: this.cgroups?.state ?? null,
        last_event_ns: this.lastEventNs?.toString() ?? null,
      },
      pipeline: {
        pending_events: this.pendingEvents,
        tls_handshakes: { ok: this.tlsHandshakes.ok.value, failed: this.tlsHandshakes.failed.value },
        batch_lines: this.batchLines,
        stages: Object.fromEntries(
          Object.entries(this.stages).map(([name, st]) => [name, { received: st.received.value, emitted: st.emitted.value, dropped: st.droppedCount() }]),
        ),
      },
      spool: { dir: this.spool.dir, run_id: this.spool.runId, ...this.spool.snapshot() },
      series: this.budget.status(),
      writer: { target: this.describeTarget(), ...this.writer.state, lag_s: this.lagSeconds() },
      rollup: this.rollup ? this.rollup.status() : { enabled: false, reason: this.config.once ? 'import (--once): its range is rolled up when it ends' : '--no-rollup' },
      readiness: this.readiness(),
      metrics: this.metrics.snapshot(),
    };
  }

  /** /api/status source.probe_tls: the probe's TLS coverage (files by outcome) and its handshake counts. */
  private probeTlsStatus(): Record<string, unknown> | null {
    const t = this.probeTls;
    if (!t) return this.config.source === 'probe' && !this.config.probeTls ? { on: false, reason: '--probe-tls=off' } : null;
    const sum = (kind: string) => Object.fromEntries([...this.probeRuns.reasons].filter(([k]) => k.startsWith(kind + ':')).map(([k, v]) => [k.slice(kind.length + 1), v]));
    return { on: t.on, files: t.files, handshakes: sum('tls'), drops: sum('tls_drop'), not_reported: sum('tls_not_reported') };
  }

  private describeTarget(): string {
    const t = this.config.target;
    return t.version === 1 ? `InfluxDB 1.x ${t.url} db=${t.db}` : `InfluxDB 2.x ${t.url} org=${t.org} bucket=${t.bucket}`;
  }

  /** --once: roll up the import's range (this host, every rolled-up measurement), chunk by chunk. */
  private async rollupImport(): Promise<{ fromMs: number; toMs: number; points: number; error: string | null } | null> {
    const span = this.importSpan;
    if (!span) return null;
    const store = rollupStore(this.config.target, { rp: this.config.rollup.rp, bucket: this.config.rollup.bucket });
    let points = 0;
    try {
      const ensured = await tryEnsureRollupStore(store, DEFAULT_ROLLUP_RETENTION);
      if (ensured.ok) this.log.info({}, `rollups: ${ensured.message}`);
      else this.log.warn({}, `rollups: ${ensured.message}; trying the rollups anyway`);
      for (const [a, b] of chunks(span.fromMs, span.toMs, LIVE_CHUNK_MS)) {
        for (const measurement of ROLLED_UP_MEASUREMENTS) {
          points += (await rollupRange({ store, measurement, fromMs: Math.max(a, span.fromMs), toMs: Math.min(b, span.toMs), host: this.config.host })).points;
        }
      }
    } catch (e) {
      return { ...span, points, error: (e as Error).message };
    }
    this.log.info({ fromMs: span.fromMs, toMs: span.toMs, points }, `rollups: the import's range ${new Date(span.fromMs).toISOString()} .. ${new Date(span.toMs).toISOString()} is rolled up (${points} points)`);
    return { ...span, points, error: null };
  }

  /** p99 of the spool's append + commit (fsync) times, ms, from /metrics' histogram bucket bounds. */
  private appendP99Ms(): number | null {
    const h = this.metrics.histogram('tcplat_spool_append_seconds', '', []);
    if (h.count === 0) return null;
    let cum = 0;
    for (let i = 0; i < h.bounds.length; i++) {
      cum += h.counts[i];
      if (cum >= 0.99 * h.count) return h.bounds[i] * 1000;
    }
    return Number.POSITIVE_INFINITY;
  }

  /** True when every event read so far is on disk and nothing is waiting in memory. */
  get quiescent(): boolean {
    return this.pendingEvents === 0 && this.batchLines === 0 && this.enricher.heldSessions === 0 && this.spool.appending === 0;
  }

  /**
   * Stop the source, flush everything in memory to the spool, then give the writer until the deadline to
   * send it; whatever is left stays spooled for the next start.
   */
  async shutdown(deadlineMs: number): Promise<{ drained: boolean }> {
    if (this.shuttingDown) return { drained: false };
    this.shuttingDown = true;
    await this.source.stop(Math.max(100, Math.min(2000, deadlineMs - Date.now())));
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = null;
    this.flush(true);
    // The final flush's batches reach the worker (within the deadline: a hung disk must not hang the exit).
    const left = Math.max(0, deadlineMs - Date.now());
    await Promise.race([this.spool.settled(), new Promise((r) => setTimeout(r, left).unref())]);
    this.refusals.flush();
    this.budget.flushLog();
    const drained = await this.writer.drain(deadlineMs);
    await this.writer.stop();
    // Dirty windows stay marked in the state file: the next start rolls them up.
    await this.rollup?.stop();
    this.stream.close();
    this.loopDelay.disable();
    await this.spool.close();
    if (!drained) {
      this.log.warn({ spooledLines: this.spool.lines, dir: this.spool.dir }, `shutdown deadline reached: ${this.spool.lines} lines stay in the spool and are sent at the next start`);
    }
    return { drained };
  }

  /**
   * --once: run the source to its end, flush, wait until InfluxDB has everything. Returns the exit code:
   * 0 when all was written, 1 when the source failed or InfluxDB refuses the configuration, 2 when the
   * capture parsed nothing or most of its lines were refused (logged with counts by reason and examples).
   */
  async runOnce(stopSignal: Promise<void>): Promise<number> {
    this.start();
    const ended = await Promise.race([this.source.ended, stopSignal.then(() => null)]);
    if (ended === null) {
      await this.shutdown(Date.now() + 5000);
      return 130;
    }
    if (this.flushTimer) clearInterval(this.flushTimer);
    this.flushTimer = null;
    this.flush(true);
    let stop = false;
    void stopSignal.then(() => (stop = true));
    const drained = await this.writer.drain(Number.POSITIVE_INFINITY, () => stop || this.writer.state.configError !== null);
    const configError = this.writer.state.configError;
    await this.writer.stop();
    this.stream.close();
    this.loopDelay.disable();
    await this.spool.close();
    if (this.config.spoolDirTemporary) {
      // The import's own spool: gone when InfluxDB has everything, else kept so it can be finished.
      if (drained && this.spool.lines === 0) fs.rmSync(this.spool.dir, { recursive: true, force: true });
      else this.log.warn({ dir: this.spool.dir }, `${this.spool.lines} lines of this import stay in ${this.spool.dir}: run the same command with --spool-dir ${this.spool.dir} to send them`);
    }
    const sourceOk = ended.code === 0;
    this.refusals.flush();
    this.budget.flushLog();
    const refused = this.refusals.summary();
    const parsed = this.stages.parse.emitted.value;
    // Rollups of the import's whole range, for this host (exact: every window is recomputed from InfluxDB).
    const rollup = drained && sourceOk && this.config.rollup.enabled ? await this.rollupImport() : null;
    const usage = process.resourceUsage();
    this.log.info(
      {
        lines: this.source.state.lines,
        parsed: this.stages.parse.emitted.value,
        events: this.stages.aggregate.received.value,
        points: this.stages.encode.emitted.value,
        written: this.metrics.get('tcplat_written_lines_total'),
        seriesFolded: this.metrics.get('tcplat_series_folded_total'),
        spooledLeft: this.spool.lines,
        cpuUserMs: usage.userCPUTime / 1000,
        cpuSystemMs: usage.systemCPUTime / 1000,
        maxRssKb: usage.maxRSS,
        flushMaxMs: Math.round(this.flushMaxMs * 10) / 10,
        eventLoopMaxDelayMs: Math.round(this.loopDelay.max / 1e5) / 10,
        spoolAppendP99Ms: this.appendP99Ms(),
        sourceExit: ended.code,
        rollup: rollup ?? (this.config.rollup.enabled ? null : 'off (--no-rollup)'),
        refused: refused.byReason,
      },
      drained ? 'import done' : 'import stopped before InfluxDB had everything; the rest stays in the spool',
    );
    if (configError) this.log.error({}, configError);
    if (!drained || !sourceOk) return 1;
    if (rollup?.error) {
      const from = new Date(rollup.fromMs).toISOString();
      const to = new Date(rollup.toMs).toISOString();
      this.log.error(
        { rollup },
        `import written, but its rollups failed: ${rollup.error}; make them with: tcplat rollup (same --influx-* flags) --host ${this.config.host} --from ${from} --to ${to}`,
      );
      return 1;
    }
    // A capture that parsed nothing, or whose lines were mostly refused, is the wrong file or format: say so.
    if (parsed === 0 || refused.total > parsed) {
      const lines = this.source.state.lines;
      const what = lines === 0 ? 'the source printed no lines' : `${refused.total} of ${lines} lines refused, ${parsed} parsed`;
      this.log.error(
        { lines, parsed, refused: refused.byReason, examples: refused.examples },
        `import failed: ${what}${refused.total > 0 ? ` (by reason: ${this.refusals.describe()})` : ''}; check --source and the capture's format`,
      );
      return 2;
    }
    if (refused.total > 0) {
      this.log.warn({ parsed, refused: refused.byReason, examples: refused.examples }, `import: ${refused.total} lines refused (by reason: ${this.refusals.describe()})`);
    }
    return 0;
  }
}
