/** `tcplat agent` options: one schema for flags, TCPLAT_* env and the config file (pkg/core loadConfig). */
import os from 'node:os';
import path from 'node:path';
import {
  ConfigError,
  INFLUX_OPTIONS,
  influxTargetFromConfig,
  loadConfig,
  type InfluxTarget,
  type LoadedConfig,
  type OptionSpec,
} from '@tcplat/core';
import { parseRules, type Rules } from './enrich/rules';
import { SOURCES, type SourceKind } from './sources/commands';

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { name: 'source', type: 'enum', values: SOURCES, default: 'probe', help: 'what to read: our eBPF probe, a BCC/libbpf-tools tool, or probe-format NDJSON (stdin unless --source-cmd)' },
  { name: 'source-cmd', type: 'string', arg: 'CMD', help: "shell command run instead of the source's own (another tool path or flags, or 'cat capture.txt' to import)" },
  { name: 'probe', type: 'string', arg: 'PATH', help: 'tcplat-probe binary (default: bpf/tcplat-probe of this checkout)' },
  { name: 'once', type: 'bool', default: false, help: 'import mode: process the source until it ends, write everything, exit' },
  ...INFLUX_OPTIONS,
  { name: 'spool-dir', type: 'string', arg: 'DIR', default: '/var/lib/tcplat/spool', help: 'durable spool (SQLite; batches wait here until InfluxDB has them); one process at a time. With --once the default is a fresh temporary directory, removed when the import is done' },
  { name: 'spool-max-bytes', type: 'int', arg: 'BYTES', min: 1 << 20, default: 1 << 30, help: 'spool size cap; beyond it the oldest batches are dropped (counted, logged)' },
  { name: 'listen', type: 'hostport', arg: 'HOST:PORT', default: '127.0.0.1:7070', help: 'HTTP API address (/healthz /readyz /metrics /api/status /api/stream)' },
  { name: 'api-token', type: 'string', arg: 'TOKEN', secret: true, help: 'bearer token for the HTTP API; required when --listen is not a loopback address' },
  { name: 'flush-interval', type: 'duration', arg: 'DURATION', default: '1s', help: 'how often points are batched, spooled and sent' },
  { name: 'hist-window', type: 'duration', arg: 'DURATION', default: '10s', help: 'tcp_connect_hist window (event time)' },
  { name: 'raw-rate-limit', type: 'int', arg: 'N', min: 0, default: 10_000, help: 'raw tcp_connect points per second of event time; beyond it a weighted sample (0 = no limit)' },
  { name: 'host', type: 'string', arg: 'NAME', default: os.hostname(), help: 'value of the host tag' },
  { name: 'exclude-pid', type: 'list', arg: 'PID', default: [], help: "processes whose connects are not recorded (repeatable or comma-separated; the agent's own always are), e.g. the pipeline's other services" },
  { name: 'log-level', type: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info', help: 'log level (logs are JSON lines on stderr)' },
];

export const AGENT_SUMMARY = [
  'Runs a collector (the tcplat eBPF probe, or BCC/libbpf-tools tcplife, tcpstates, tcpconnlat), parses, enriches',
  'and aggregates what it prints, and writes tcp_connect, tcp_connect_hist and tcp_session to InfluxDB through a',
  'durable on-disk spool. Service and destination mapping rules live in the config file (sections services and',
  'destinations, see agent/README.md).',
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
  once: boolean;
  target: InfluxTarget;
  spoolDir: string;
  /** --once without --spool-dir: a fresh directory of its own, removed when the import is done. */
  spoolDirTemporary: boolean;
  spoolMaxBytes: number;
  listen: { host: string; port: number };
  apiToken?: string;
  flushIntervalMs: number;
  histWindowMs: number;
  rawRateLimit: number;
  host: string;
  /** Besides the agent itself: pids whose connects are never recorded. */
  excludePids: number[];
  logLevel: string;
  rules: Rules;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
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
  const apiToken = v['api-token'] as string | undefined;
  if (!isLoopback(listen.host) && !apiToken) {
    throw new ConfigError(`--listen ${listen.host}:${listen.port} is not a loopback address: give --api-token (or --api-token-file) so the API is not open to the network`);
  }
  return {
    source: v.source as SourceKind,
    sourceCmd: v['source-cmd'] as string | undefined,
    probe: v.probe as string | undefined,
    once: v.once === true,
    target,
    ...spoolDir(c),
    spoolMaxBytes: v['spool-max-bytes'] as number,
    listen,
    apiToken,
    flushIntervalMs: flush,
    histWindowMs: windowMs,
    rawRateLimit: v['raw-rate-limit'] as number,
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
