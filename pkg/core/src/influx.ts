/**
 * Minimal InfluxDB HTTP client shared by agent, renderer and tests: where to write, how to authenticate,
 * and InfluxQL queries for 1.x. Secrets live only in the target object (from env or files), never in
 * log lines: use describeTarget() to print one.
 */
import { ConfigError, type ConfigValues, type OptionSpec } from './config';

export interface InfluxV1Target {
  version: 1;
  url: string;
  db: string;
  rp?: string;
  user?: string;
  password?: string;
}

export interface InfluxV2Target {
  version: 2;
  url: string;
  org: string;
  bucket: string;
  token: string;
}

export type InfluxTarget = InfluxV1Target | InfluxV2Target;

export class InfluxError extends Error {
  constructor(
    message: string,
    /** HTTP status, or 0 when the server could not be reached. */
    readonly status: number,
    readonly body = '',
    /** The server's Retry-After (429/503), in ms, when it sent one. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'InfluxError';
  }
}

/**
 * Retry-After as ms: delta-seconds (RFC 9110; fractional seconds too, as Telegraf reads them) or an HTTP
 * date. Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - nowMs) : undefined;
}

/** fetch's error with its cause (`fetch failed: connect ECONNREFUSED 127.0.0.1:8086`). */
export function fetchFailure(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err.cause?.message ? `${err.message}: ${err.cause.message}` : err.message;
}

/** The message of an InfluxDB 2.x error body (`{"code":...,"message":...}`), else the start of the text. */
export function v2ErrorMessage(text: string): string {
  try {
    const m = (JSON.parse(text) as { message?: unknown }).message;
    if (typeof m === 'string') return m;
  } catch {
    /* not JSON: keep the text */
  }
  return text.slice(0, 300);
}

function base(url: string): string {
  return url.replace(/\/+$/, '');
}

/** A description safe for logs: URL and database/bucket, no credentials. */
export function describeTarget(t: InfluxTarget): string {
  const u = new URL(t.url);
  u.username = '';
  u.password = '';
  const where = t.version === 1 ? `db=${t.db}${t.rp ? ` rp=${t.rp}` : ''}` : `org=${t.org} bucket=${t.bucket}`;
  return `InfluxDB ${t.version}.x at ${base(u.toString())} (${where})`;
}

export function authHeaders(t: InfluxTarget): Record<string, string> {
  if (t.version === 2) return { Authorization: `Token ${t.token}` };
  if (t.user !== undefined && t.user !== '') {
    return { Authorization: 'Basic ' + Buffer.from(`${t.user}:${t.password ?? ''}`).toString('base64') };
  }
  return {};
}

/** The write endpoint with ns precision for a target. */
export function writeUrl(t: InfluxTarget): string {
  if (t.version === 2) {
    const q = new URLSearchParams({ org: t.org, bucket: t.bucket, precision: 'ns' });
    return `${base(t.url)}/api/v2/write?${q}`;
  }
  const q = new URLSearchParams({ db: t.db, precision: 'ns' });
  if (t.rp) q.set('rp', t.rp);
  return `${base(t.url)}/write?${q}`;
}

export interface WriteOptions {
  signal?: AbortSignal;
  /** The body is already gzip-compressed line protocol (sent with Content-Encoding: gzip). */
  gzip?: boolean;
}

/**
 * Write a line-protocol body. Throws InfluxError on any non-2xx answer, with the status, InfluxDB's
 * message and Retry-After (ms) so a caller can sort retry / throttle / split / dead-letter.
 */
export async function writeLines(t: InfluxTarget, body: string | Uint8Array, opts: AbortSignal | WriteOptions = {}): Promise<void> {
  const o: WriteOptions = opts instanceof AbortSignal ? { signal: opts } : opts;
  const headers: Record<string, string> = { ...authHeaders(t), 'Content-Type': 'text/plain; charset=utf-8' };
  if (o.gzip) headers['Content-Encoding'] = 'gzip';
  let res: Response;
  try {
    res = await fetch(writeUrl(t), { method: 'POST', headers, body, signal: o.signal });
  } catch (e) {
    const err = e as Error & { cause?: { message?: string } };
    const why = err.cause?.message ? `${err.message}: ${err.cause.message}` : err.message;
    throw new InfluxError(`cannot reach ${describeTarget(t)}: ${why}`, 0);
  }
  if (res.status >= 200 && res.status < 300) {
    await res.arrayBuffer().catch(() => undefined);
    return;
  }
  const text = await res.text().catch(() => '');
  throw new InfluxError(
    `write to ${describeTarget(t)} failed: HTTP ${res.status}: ${text.trim()}`,
    res.status,
    text,
    parseRetryAfter(res.headers.get('retry-after')),
  );
}

export interface InfluxSeries {
  name: string;
  tags?: Record<string, string>;
  columns: string[];
  values: unknown[][];
}

/** Run InfluxQL statements on a 1.x server (`/query`, epoch=ms unless given). Returns each statement's series. */
export async function queryInfluxQL(
  t: InfluxV1Target,
  q: string,
  opts: { method?: 'GET' | 'POST'; epoch?: 'ns' | 'ms' | 's'; signal?: AbortSignal } = {},
): Promise<InfluxSeries[][]> {
  const params = new URLSearchParams({ db: t.db, q, epoch: opts.epoch ?? 'ms' });
  if (t.rp) params.set('rp', t.rp);
  const method = opts.method ?? 'GET';
  const url = `${base(t.url)}/query` + (method === 'GET' ? `?${params}` : '');
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { ...authHeaders(t), ...(method === 'POST' ? { 'Content-Type': 'application/x-www-form-urlencoded' } : {}) },
      body: method === 'POST' ? params.toString() : undefined,
      signal: opts.signal,
    });
  } catch (e) {
    throw new InfluxError(`cannot reach ${describeTarget(t)}: ${fetchFailure(e)}`, 0);
  }
  const text = await res.text();
  let json: { error?: string; results?: { error?: string; series?: InfluxSeries[] }[] };
  try {
    json = JSON.parse(text);
  } catch {
    throw new InfluxError(`query to ${describeTarget(t)} answered HTTP ${res.status} with non-JSON: ${text.slice(0, 200)}`, res.status, text);
  }
  if (!res.ok || json.error) throw new InfluxError(`query failed: HTTP ${res.status}: ${json.error ?? text.slice(0, 200)}`, res.status, text);
  return (json.results ?? []).map((r) => {
    if (r.error) throw new InfluxError(`query failed: ${r.error}`, res.status, text);
    return r.series ?? [];
  });
}


/**
 * Run a Flux query on a 2.x server (`/api/v2/query`) and return the annotated CSV text. Throws InfluxError
 * with InfluxDB's message on any non-2xx answer (status 0 when unreachable).
 */
export async function queryFlux(t: InfluxV2Target, flux: string, signal?: AbortSignal): Promise<string> {
  const url = `${base(t.url)}/api/v2/query?${new URLSearchParams({ org: t.org })}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { ...authHeaders(t), 'Content-Type': 'application/json', Accept: 'application/csv' },
      body: JSON.stringify({ query: flux, type: 'flux', dialect: { header: true, annotations: ['datatype', 'group', 'default'] } }),
      signal,
    });
  } catch (e) {
    throw new InfluxError(`cannot reach ${describeTarget(t)}: ${fetchFailure(e)}`, 0);
  }
  const text = await res.text();
  if (!res.ok) {
    throw new InfluxError(`Flux query to ${describeTarget(t)} failed: HTTP ${res.status}: ${v2ErrorMessage(text)}`, res.status, text);
  }
  return text;
}

/** The InfluxDB flags shared by `tcplat agent` and `tcplat renderer`. The dialect follows the credentials. */
export const INFLUX_OPTIONS: readonly OptionSpec[] = [
  { name: 'influx-url', type: 'string', arg: 'URL', help: 'InfluxDB base URL', default: 'http://127.0.0.1:8086' },
  { name: 'influx-db', type: 'string', arg: 'DB', help: 'InfluxDB 1.x database (selects v1: /write and InfluxQL)' },
  { name: 'influx-rp', type: 'string', arg: 'RP', help: 'InfluxDB 1.x retention policy (default: the database default)' },
  { name: 'influx-user', type: 'string', arg: 'USER', help: 'InfluxDB 1.x user' },
  { name: 'influx-password', type: 'string', arg: 'PASSWORD', help: 'InfluxDB 1.x password', secret: true },
  { name: 'influx-org', type: 'string', arg: 'ORG', help: 'InfluxDB 2.x organisation (selects v2: /api/v2/write and Flux)' },
  { name: 'influx-bucket', type: 'string', arg: 'BUCKET', help: 'InfluxDB 2.x bucket' },
  { name: 'influx-token', type: 'string', arg: 'TOKEN', help: 'InfluxDB 2.x API token', secret: true },
];

/** Build the target from loaded config values; errors name the missing or conflicting flags. */
export function influxTargetFromConfig(v: ConfigValues): InfluxTarget {
  const url = String(v['influx-url'] ?? '');
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)');
  } catch {
    throw new ConfigError(`--influx-url: expected an http(s) URL such as http://127.0.0.1:8086, got ${JSON.stringify(url)}`);
  }
  const v1 = v['influx-db'] !== undefined;
  const v2 = v['influx-org'] !== undefined || v['influx-bucket'] !== undefined || v['influx-token'] !== undefined;
  if (v1 && v2) throw new ConfigError('give either --influx-db (InfluxDB 1.x) or --influx-org/--influx-bucket/--influx-token (2.x), not both');
  if (v1) {
    const db = String(v['influx-db']);
    if (db === '') throw new ConfigError('--influx-db: the database name is empty');
    if (v['influx-password'] !== undefined && v['influx-user'] === undefined) throw new ConfigError('--influx-password given without --influx-user');
    return {
      version: 1,
      url,
      db,
      rp: v['influx-rp'] as string | undefined,
      user: v['influx-user'] as string | undefined,
      password: v['influx-password'] as string | undefined,
    };
  }
  if (v2) {
    for (const k of ['influx-org', 'influx-bucket', 'influx-token']) {
      if (v[k] === undefined || v[k] === '') throw new ConfigError(`InfluxDB 2.x needs --${k} (with --influx-org, --influx-bucket and --influx-token)`);
    }
    return { version: 2, url, org: String(v['influx-org']), bucket: String(v['influx-bucket']), token: String(v['influx-token']) };
  }
  throw new ConfigError('no InfluxDB database: give --influx-db DB (InfluxDB 1.x) or --influx-org, --influx-bucket and --influx-token (2.x)');
}
