/** `tcplat agent` options: one schema for flags, TCPLAT_* env and the config file (pkg/core loadConfig). */
import os from 'node:os';
import path from 'node:path';
import {
  checkExposureIfLiteral,
  checkHttpLimits,
  ConfigError,
  HTTP_OPTIONS,
  httpLimitsFromConfig,
  INFLUX_OPTIONS,
  influxTargetFromConfig,
  loadConfig,
  parseTokens,
  type HttpLimits,
  type InfluxTarget,
  type LoadedConfig,
  type OptionSpec,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
} from '@tcplat/core';
import { parseRules, type Rules } from './enrich/rules';
import { PROBE_MODES, SOURCES, type ProbeMode, type SourceKind } from './sources/commands';
import { AGENT_BODY_LIMIT } from './app';
import { DEFAULT_STREAM_LIMITS, type StreamLimits } from './stream';

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { name: 'source', type: 'enum', values: SOURCES, default: 'probe', help: 'what to read: our eBPF probe, a BCC/libbpf-tools tool, or probe-format NDJSON (stdin unless --source-cmd)' },
  { name: 'source-cmd', type: 'string', arg: 'CMD', help: "shell command run instead of the source's own (another tool path or flags, or 'cat capture.txt' to import)" },
  { name: 'probe', type: 'string', arg: 'PATH', help: 'tcplat-probe binary (default: bpf/tcplat-probe of this checkout)' },
  {
    name: 'probe-mode',
    type: 'enum',
    values: PROBE_MODES,
    default: 'stream',
    help: 'stream: one line per connect (raw tcp_connect points and histograms); hist: the probe keeps exact histograms in the kernel and prints them each --hist-window (tcp_connect_hist only, no raw points, lowest cost)',
  },
  {
    name: 'probe-close',
    type: 'bool',
    default: false,
    help: "stream mode: the probe also reports each outbound connection's end (lifespan, bytes, retransmits, who closed it: tcp_session and tcp_session_hist). Off by default: on a loopback storm it doubles the probe's kernel time per connect (2.3 us against 1.1 us, bpf/README.md); without it the probe runs with --no-close",
  },
  {
    name: 'probe-zero-windows',
    type: 'bool',
    default: false,
    help: 'close events (implies --probe-close) also count the times the peer advertised a zero window (zero_windows in tcp_session and tcp_session_hist); runs the probe with --zero-windows, which costs on every received segment (bpf/README.md)',
  },
  {
    name: 'probe-tls',
    type: 'bool',
    default: true,
    help: "the probe also times every client TLS handshake made through OpenSSL (the host's and containers' libssl, node's built-in OpenSSL: tls_handshake and tls_handshake_hist). Costs ~2.0 us per hooked OpenSSL handshake call (uprobes; bpf/README.md), nothing on processes that make no TLS handshake; hosts without libssl or node run on without it. --probe-tls=off runs the probe with --tls off",
  },
  { name: 'once', type: 'bool', default: false, help: "import mode: process the source until it ends, write everything, roll up the import's range, exit (0 done; 1 source failed, InfluxDB refuses the configuration, or the rollups failed (the data is written; the log names the tcplat rollup command that finishes them); 2 nothing parsed or most lines refused). Re-importing a capture writes the same points" },
  ...INFLUX_OPTIONS,
  { name: 'spool-dir', type: 'string', arg: 'DIR', default: '/var/lib/tcplat/spool', help: 'durable spool (SQLite; batches wait here until InfluxDB has them); one process at a time. With --once the default is a fresh temporary directory, removed when the import is done' },
  { name: 'spool-max-bytes', type: 'int', arg: 'BYTES', min: 1 << 20, default: 1 << 30, help: 'spool size cap; beyond it the oldest batches are dropped (counted, logged)' },
  { name: 'listen', type: 'hostport', arg: 'HOST:PORT', default: '127.0.0.1:7070', help: 'HTTP API address (/healthz /readyz /metrics /api/status /api/stream)' },
  { name: 'api-token', type: 'string', arg: 'TOKEN', secret: true, help: 'bearer token for the HTTP API (at least 16 characters); required unless --listen resolves only to loopback addresses' },
  ...HTTP_OPTIONS,
  { name: 'stream-max-clients', type: 'int', arg: 'N', min: 1, max: 10_000, default: DEFAULT_STREAM_LIMITS.maxClients, help: '/api/stream clients at once; more get 503' },
  { name: 'stream-buffer', type: 'int', arg: 'BYTES', min: 4096, max: 64 << 20, default: DEFAULT_STREAM_LIMITS.bufferBytes, help: 'bytes queued per /api/stream client; a client this far behind skips frames (counted)' },
  { name: 'stream-stall', type: 'duration', arg: 'DURATION', default: '10s', help: 'an /api/stream client whose queue stays full this long is disconnected (counted)' },
  { name: 'flush-interval', type: 'duration', arg: 'DURATION', default: '1s', help: 'how often points are batched, spooled and sent' },
  { name: 'hist-window', type: 'duration', arg: 'DURATION', default: '10s', help: 'tcp_connect_hist window (event time)' },
  { name: 'raw-rate-limit', type: 'int', arg: 'N', min: 0, default: 10_000, help: 'raw tcp_connect points per second of event time; beyond it a weighted sample (0 = no limit)' },
  { name: 'max-series', type: 'int', arg: 'N', min: 0, default: 2000, help: 'cardinality budget: series per measurement on this host within --series-horizon; beyond it new series are folded into dst=other (then service=other), every event still counted (0 = no budget)' },
  { name: 'series-horizon', type: 'duration', arg: 'DURATION', default: '1h', help: 'a series not written for this long (event time) frees its slot in the --max-series budget' },
  { name: 'rollup-interval', type: 'duration', arg: 'DURATION', default: '30s', help: 'how often the windows of delivered tcp_connect_hist points are rolled up (1m, 10m, 1h; see tcplat rollup --help)' },
  { name: 'no-rollup', type: 'bool', default: false, help: 'do not make rollups (live or, with --once, of the import); tcplat rollup can make them later' },
  { name: 'rollup-rp', type: 'string', arg: 'RP', default: ROLLUP_RP, help: 'InfluxDB 1.x retention policy of the rollups (created with 400d when missing)' },
  { name: 'rollup-bucket', type: 'string', arg: 'BUCKET', help: `InfluxDB 2.x bucket of the rollups (default: --influx-bucket + "${ROLLUP_BUCKET_SUFFIX}"; must exist, the token needs write on it)` },
  { name: 'host', type: 'string', arg: 'NAME', default: os.hostname(), help: 'value of the host tag' },
  { name: 'exclude-pid', type: 'list', arg: 'PID', default: [], help: "processes whose connects are not recorded (repeatable or comma-separated; the agent's own always are), e.g. the pipeline's other services" },
  { name: 'log-level', type: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info', help: 'log level (logs are JSON lines on stderr)' },
];

export const AGENT_SUMMARY = [
  'Runs a collector (the tcplat eBPF probe, or BCC/libbpf-tools tcplife, tcpstates, tcpconnlat), parses, enriches',
  'and aggregates what it prints, and writes tcp_connect, tcp_connect_hist, tcp_session, tcp_session_hist,',
  'tls_handshake and tls_handshake_hist to InfluxDB through a durable on-disk spool. Service and destination',
  'mapping rules live in the config file (sections services and destinations, see agent/README.md).',
].join('\n');

export const AGENT_FOOTER = [
  'examples:',
  '  tcplat agent --source probe --influx-url http://127.0.0.1:8086 --influx-db tcplat',
  "  tcplat agent --source tcplife --source-cmd '/usr/sbin/tcplife -T' --influx-db tcplat",
  "  tcplat agent --source ndjson --source-cmd 'cat capture.ndjson' --once --influx-db tcplat",
].join('\n');

export interface AgentConfig {
  source: SourceKind;
  sourceCmd?: string;
  probe?: string;
  probeMode: ProbeMode;
  /** Stream mode: the probe reports close events (else it runs with --no-close). */
  probeClose: boolean;
  /** The probe counts zero windows per connection (--zero-windows). */
  probeZeroWindows: boolean;
  /** The probe times TLS handshakes (its --tls on, the default). */
  probeTls: boolean;
  once: boolean;
  target: InfluxTarget;
  spoolDir: string;
  /** --once without --spool-dir: a fresh directory of its own, removed when the import is done. */
  spoolDirTemporary: boolean;
  spoolMaxBytes: number;
  listen: { host: string; port: number };
  apiToken?: string;
  http: HttpLimits;
  stream: StreamLimits;
  flushIntervalMs: number;
  histWindowMs: number;
  rawRateLimit: number;
  /** The cardinality budget: series per measurement within the horizon (0 = none). */
  maxSeries: number;
  seriesHorizonMs: number;
  /** Rollups: off with --no-rollup; where they go (1.x RP, 2.x bucket; undefined: the default). */
  rollup: { enabled: boolean; intervalMs: number; rp: string; bucket?: string };
  host: string;
  /** Besides the agent itself: pids whose connects are never recorded. */
  excludePids: number[];
  logLevel: string;
  rules: Rules;
}

function probeMode(mode: ProbeMode, source: SourceKind): ProbeMode {
  if (mode === 'hist' && source !== 'probe' && source !== 'ndjson') {
    throw new ConfigError(`--probe-mode hist: only for --source probe (the BCC/libbpf-tools tools print rows, not histograms); got --source ${source}`);
  }
  return mode;
}

/**
 * An import (--once) gets a spool directory of its own unless --spool-dir is given: it must never share a
 * live agent's (which would refuse it anyway: the spool is locked), and needs no root.
 */
function spoolDir(c: LoadedConfig): { spoolDir: string; spoolDirTemporary: boolean } {
  if (c.values.once === true && (c.sources['spool-dir'] ?? 'default') === 'default') {
    return { spoolDir: path.join(os.tmpdir(), `tcplat-import-${process.pid}-${Date.now().toString(36)}`), spoolDirTemporary: true };
  }
  return { spoolDir: String(c.values['spool-dir']), spoolDirTemporary: false };
}

function seriesHorizon(ms: number): number {
  if (!(ms >= 60_000)) throw new ConfigError(`--series-horizon: at least 1m (series are remembered by the second of event time), got ${ms} ms`);
  return ms;
}

function rollupConfig(v: Record<string, unknown>): AgentConfig['rollup'] {
  const intervalMs = v['rollup-interval'] as number;
  if (!(intervalMs >= 1000)) throw new ConfigError(`--rollup-interval: at least 1s, got ${intervalMs} ms`);
  const rp = String(v['rollup-rp']);
  if (rp === '') throw new ConfigError('--rollup-rp: empty');
  const bucket = v['rollup-bucket'] === undefined ? undefined : String(v['rollup-bucket']);
  if (bucket === '') throw new ConfigError('--rollup-bucket: empty');
  return { enabled: v['no-rollup'] !== true, intervalMs, rp, bucket };
}

/** Validate loaded values into an AgentConfig; every error names the bad key. */
export function agentConfig(c: LoadedConfig): AgentConfig {
  const v = c.values;
  const target = influxTargetFromConfig(v);
  const flush = v['flush-interval'] as number;
  const windowMs = v['hist-window'] as number;
  if (!(flush >= 10)) throw new ConfigError(`--flush-interval: must be at least 10ms, got ${flush} ms`);
  if (!(windowMs >= 1000) || !Number.isInteger(windowMs)) throw new ConfigError(`--hist-window: must be a whole number of milliseconds, at least 1s; got ${windowMs} ms`);
  const host = String(v.host ?? '');
  if (host === '') throw new ConfigError('--host: the host tag must not be empty');
  const listen = v.listen as { host: string; port: number };
  const apiToken = parseTokens('api-token', v['api-token'] as string | undefined)[0];
  // A listen name (not an IP literal) is resolved and checked by the server before it listens.
  checkExposureIfLiteral(listen, apiToken !== undefined, 'api-token');
  const http = httpLimitsFromConfig(v, AGENT_BODY_LIMIT);
  const httpError = checkHttpLimits(http);
  if (httpError) throw new ConfigError(httpError);
  const stallMs = v['stream-stall'] as number;
  if (!(stallMs >= 1000)) throw new ConfigError(`--stream-stall: at least 1s, got ${stallMs} ms`);
  return {
    source: v.source as SourceKind,
    sourceCmd: v['source-cmd'] as string | undefined,
    probe: v.probe as string | undefined,
    probeMode: probeMode(v['probe-mode'] as ProbeMode, v.source as SourceKind),
    // Zero windows are counted per close event: asking for them turns close events on.
    probeClose: v['probe-close'] === true || v['probe-zero-windows'] === true,
    probeZeroWindows: v['probe-zero-windows'] === true,
    probeTls: v['probe-tls'] !== false,
    once: v.once === true,
    target,
    ...spoolDir(c),
    spoolMaxBytes: v['spool-max-bytes'] as number,
    listen,
    apiToken,
    http,
    stream: { maxClients: v['stream-max-clients'] as number, bufferBytes: v['stream-buffer'] as number, stallMs },
    flushIntervalMs: flush,
    histWindowMs: windowMs,
    rawRateLimit: v['raw-rate-limit'] as number,
    maxSeries: v['max-series'] as number,
    seriesHorizonMs: seriesHorizon(v['series-horizon'] as number),
    rollup: rollupConfig(v),
    host,
    excludePids: (v['exclude-pid'] as string[]).map((p) => {
      const n = Number(p);
      if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`--exclude-pid: expected a process id, got ${JSON.stringify(p)}`);
      return n;
    }),
    logLevel: String(v['log-level']),
    rules: parseRules(c.file, c.filePath),
  };
}

export function loadAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { loaded: LoadedConfig; config: AgentConfig | null } {
  const loaded = loadConfig(AGENT_OPTIONS, argv, env, ['services', 'destinations']);
  if (loaded.help) return { loaded, config: null };
  return { loaded, config: agentConfig(loaded) };
}
