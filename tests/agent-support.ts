/**
 * Helpers for the agent's end-to-end tests: run the real `tcplat agent` (bin/tcplat -> agent/dist), read
 * its API, build probe-format NDJSON, query InfluxDB.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { queryInfluxQL, type InfluxV1Target } from '@tcplat/core';

export const ROOT = path.resolve(__dirname, '..');
export const PROBE = path.join(ROOT, 'bpf', 'tcplat-probe');

/** Compile pkg/core and agent (incremental; serialised across jest workers). */
export function buildAgent(): void {
  execFileSync('flock', ['/tmp/tcplat-agent-build.lock', 'npx', 'tsc', '-b', 'pkg/core', 'agent'], { cwd: ROOT, stdio: 'inherit' });
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tcplat-${prefix}-`));
}

export interface ProbeEventInput {
  tsNs: bigint;
  latencyNs?: number;
  result?: string;
  errno?: number;
  synRetrans?: number;
  pid?: number;
  comm?: string;
  family?: 'ipv4' | 'ipv6';
  daddr?: string;
  dport?: number;
  sport?: number;
}

/** One line as bpf/tcplat-probe prints it (ts_ns written as an exact integer). */
export function probeLine(e: ProbeEventInput): string {
  const o = {
    type: 'connect',
    ts_ns: '@TS@',
    latency_ns: e.latencyNs ?? 100_000,
    result: e.result ?? 'ok',
    errno: e.errno ?? 0,
    syn_retrans: e.synRetrans ?? 0,
    pid: e.pid ?? 4242,
    tid: e.pid ?? 4242,
    comm: e.comm ?? 'ruby',
    cgroup_id: 1,
    family: e.family ?? 'ipv4',
    saddr: e.family === 'ipv6' ? '::1' : '127.0.0.1',
    sport: e.sport ?? 40000,
    daddr: e.daddr ?? '10.0.0.5',
    dport: e.dport ?? 5432,
  };
  return JSON.stringify(o).replace('"@TS@"', e.tsNs.toString());
}

export interface RunningAgent {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  status: () => Promise<AgentStatus>;
  exited: Promise<number | null>;
  /** SIGKILL the agent and its source's process group. */
  kill9: () => Promise<void>;
  /** SIGTERM, wait for exit. */
  stop: () => Promise<number | null>;
}

export interface AgentStatus {
  source: { running: boolean; pid: number | null; lines: number; stderr_tail: string[] };
  pipeline: { pending_events: number; batch_lines: number; stages: Record<string, { received: number; emitted: number; dropped: number }> };
  spool: { records: number; lines: number; appendedLines: number; replayedLines: number; run_id: number; appending: number; pendingRecords: number; storeFailures: Record<string, number> };
  writer: { healthy: boolean; lastError: string | null };
  metrics: Record<string, number>;
}

export function agentArgs(target: InfluxV1Target, spoolDir: string, extra: string[]): string[] {
  return ['agent', '--influx-url', target.url, '--influx-db', target.db, '--spool-dir', spoolDir, '--listen', '127.0.0.1:0', '--host', 'testhost', ...extra];
}

/** Run `tcplat agent` to completion (--once); returns its exit code and stderr. */
export function runAgentOnce(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'tcplat'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tcplat agent did not finish within ${timeoutMs} ms; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stderr });
    });
  });
}

/**
 * Start a long-running `tcplat agent`; resolves once its API answers. `wrapper` runs it through another
 * command that ends by exec'ing its arguments (e.g. a shell that joins a cgroup, then `unshare`).
 */
export async function startAgent(args: string[], wrapper: string[] = []): Promise<RunningAgent> {
  const argv = [...wrapper, process.execPath, path.join(ROOT, 'bin', 'tcplat'), ...args];
  const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  let lastSourcePid: number | null = null;
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  const url = await waitFor(async () => {
    const m = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
    if (child.exitCode !== null) throw new Error(`agent exited early (${child.exitCode}):\n${stderr}`);
    return m ? m[1] : null;
  }, 20_000);
  const status = async (): Promise<AgentStatus> => {
    const s = (await (await fetch(`${url}/api/status`)).json()) as AgentStatus;
    if (s.source.pid) lastSourcePid = s.source.pid;
    return s;
  };
  await status();
  return {
    child,
    url,
    stderr: () => stderr,
    status,
    exited,
    kill9: async () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      if (lastSourcePid) {
        try {
          process.kill(-lastSourcePid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await exited;
    },
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

export async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs: number, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null && v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
      if ((e as Error).message.startsWith('agent exited early')) throw e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Rows of one InfluxQL statement as objects (time in ns as a string-safe number is not needed here). */
export async function rows(t: InfluxV1Target, q: string): Promise<Record<string, unknown>[]> {
  const [series] = await queryInfluxQL(t, q, { epoch: 'ns' });
  const out: Record<string, unknown>[] = [];
  for (const s of series ?? []) {
    for (const v of s.values) {
      const r: Record<string, unknown> = { ...(s.tags ?? {}) };
      s.columns.forEach((c, i) => (r[c] = v[i]));
      out.push(r);
    }
  }
  return out;
}

/** A single number from an aggregate query (0 when there are no points). */
export async function scalar(t: InfluxV1Target, q: string): Promise<number> {
  const r = await rows(t, q);
  if (r.length === 0) return 0;
  const k = Object.keys(r[0]).find((c) => c !== 'time')!;
  return Number(r[0][k]);
}
