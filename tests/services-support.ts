/**
 * Helpers for the hardening tests of both services: start the real `tcplat agent` / `tcplat renderer`
 * (bin/tcplat -> dist) as child processes, optionally under a file-descriptor limit or inside namespaces,
 * and talk to them over fresh connections (no keep-alive pool whose sockets a test's own attack might close).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..');
export const TCPLAT = path.join(ROOT, 'bin', 'tcplat');

export interface Service {
  child: ChildProcess;
  url: string;
  pid: number;
  output: () => string;
  exited: Promise<number | null>;
  stop: () => Promise<void>;
}

/**
 * Spawn `prefix... node bin/tcplat args...` and wait until its log names the address it listens on.
 * `prefix` runs the service under prlimit, unshare, ... (argv of a wrapper that execs the rest).
 */
export async function startService(args: string[], opts: { prefix?: string[]; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Service> {
  const argv = [...(opts.prefix ?? []), process.execPath, TCPLAT, ...args];
  const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  const end = Date.now() + (opts.timeoutMs ?? 60_000);
  let url: string | null = null;
  while (!url) {
    const m = /(?:Server listening at|serving on) (http:\/\/[^\s"]+)/.exec(out);
    if (m) url = m[1];
    else if (child.exitCode !== null) throw new Error(`${args[0]} exited early (${child.exitCode}):\n${out}`);
    else if (Date.now() > end) {
      child.kill('SIGKILL');
      throw new Error(`${args[0]} did not start listening in time:\n${out}`);
    }
    else await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    url,
    pid: child.pid!,
    output: () => out,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/** Run `tcplat args...` to its end (it is expected to refuse to start); its exit code and output. */
export function runToExit(args: string[], opts: { prefix?: string[]; timeoutMs?: number } = {}): Promise<{ code: number | null; output: string }> {
  return runCommand([...(opts.prefix ?? []), process.execPath, TCPLAT, ...args], opts.timeoutMs);
}

/** Run a command to its end: exit code and stdout + stderr. */
export function runCommand(argv: string[], timeoutMs = 60_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${argv.join(' ')} did not exit within ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, output: out });
    });
  });
}

export interface Reply {
  status: number;
  body: string;
  ms: number;
}

/** One GET on a new connection (agent: false), with a deadline. */
export function get(url: string, headers: Record<string, string> = {}, timeoutMs = 20_000): Promise<Reply> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Resident memory of a process in bytes (/proc/PID/status VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** One value of a Prometheus text exposition, e.g. metric(text, 'tcplat_http_connections_closed_total{reason="evicted"}'). */
export function metric(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return NaN;
}
