import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import type { InfluxTarget } from '@tcplat/core';
import { Metrics } from '../metrics';
import { Spool } from '../spool/spool';
import { silentLogger, type Logger } from '../types';
import { Writer } from './writer';
import { buildAgent } from '../../../tests/agent-support';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  lines: string[];
}

/** A local HTTP server that records every write and answers what the test scripts. */
class Recorder {
  server: http.Server;
  seen: Seen[] = [];
  answer: (s: Seen, n: number) => { status: number; headers?: Record<string, string>; body?: string } | 'hang' = () => ({ status: 204 });
  url = '';
  private hung: http.ServerResponse[] = [];
  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = zlib.gunzipSync(body);
        const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, lines: body.toString().split('\n').filter((l) => l) };
        this.seen.push(s);
        const a = this.answer(s, this.seen.length);
        if (a === 'hang') {
          this.hung.push(res);
          return;
        }
        res.writeHead(a.status, a.headers ?? {});
        res.end(a.body ?? '');
      });
    });
  }
  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }
  async stop(): Promise<void> {
    this.hung.forEach((r) => r.destroy());
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

// The spool's worker runs the compiled worker.js: build it (incremental; serialised across jest workers).
beforeAll(buildAgent, 120_000);

const dirs: string[] = [];
const spools: Spool[] = [];
afterAll(async () => {
  for (const s of spools) await s.close();
  dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

async function setup(target: InfluxTarget, log: Logger = silentLogger, opts: { timeoutMs?: number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-'));
  dirs.push(dir);
  const spool = await Spool.open(dir, { maxBytes: 1 << 30, log });
  spools.push(spool);
  const metrics = new Metrics();
  const writer = new Writer(target, spool, { log, metrics, minBackoffMs: 20, maxBackoffMs: 100, random: () => 0.5, timeoutMs: opts.timeoutMs ?? 2000 });
  return { dir, spool, metrics, writer };
}

const lines = (n: number, tag = 'a') => Array.from({ length: n }, (_, i) => `m,t=${tag} f=${i}i ${1_764_100_000_000_000_000n + BigInt(i)}`).join('\n') + '\n';

describe('writer against a local recording server', () => {
  let rec: Recorder;
  beforeEach(async () => {
    rec = await new Recorder().start();
  });
  afterEach(() => rec.stop());

  test('v1: gzip to /write with db, rp, ns precision and basic auth; 5xx and network errors are retried', async () => {
    rec.answer = (_s, n) => (n <= 2 ? { status: 500, body: '{"error":"engine: cache full"}' } : { status: 204 });
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd b', rp: 'r', user: 'u', password: 'p' });
    await spool.append(lines(3), 3);
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    await writer.stop();
    expect(rec.seen).toHaveLength(3);
    const s = rec.seen[2];
    expect(s.url).toBe('/write?db=d+b&precision=ns&rp=r');
    expect(s.headers['content-encoding']).toBe('gzip');
    expect(s.headers.authorization).toBe('Basic ' + Buffer.from('u:p').toString('base64'));
    expect(s.lines).toHaveLength(3);
    expect(metrics.get('tcplat_write_retries_total', { reason: 'http_500' })).toBe(2);
    expect(metrics.get('tcplat_written_lines_total')).toBe(3);
    expect(spool.snapshot().records).toBe(0);
  });

  test('v2 writer HTTP contract (recording server: no real InfluxDB 2.x here): /api/v2/write, org, bucket, token', async () => {
    const { spool, writer } = await setup({ version: 2, url: rec.url + '/', org: 'my org', bucket: 'tcp/lat', token: 's3cr3t' });
    await spool.append(lines(2), 2);
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    await writer.stop();
    expect(rec.seen).toHaveLength(1);
    const s = rec.seen[0];
    expect(s.method).toBe('POST');
    expect(s.url).toBe('/api/v2/write?org=my+org&bucket=tcp%2Flat&precision=ns');
    expect(s.headers.authorization).toBe('Token s3cr3t');
    expect(s.headers['content-encoding']).toBe('gzip');
    expect(s.headers['content-type']).toMatch(/^text\/plain/);
    expect(s.lines).toEqual(lines(2).trim().split('\n'));
  });

  test('429/503 honour Retry-After', async () => {
    rec.answer = (_s, n) => (n === 1 ? { status: 429, headers: { 'Retry-After': '1' } } : n === 2 ? { status: 503, headers: { 'Retry-After': '0' } } : { status: 204 });
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' });
    await spool.append(lines(1), 1);
    const t0 = Date.now();
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    await writer.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(metrics.get('tcplat_write_retries_total', { reason: 'throttled_429' })).toBe(1);
    expect(metrics.get('tcplat_write_retries_total', { reason: 'throttled_503' })).toBe(1);
  });

  test('413 splits until every part fits; nothing lost, nothing doubled', async () => {
    rec.answer = (s) => (s.lines.length > 3 ? { status: 413, body: '{"error":"Request Entity Too Large"}' } : { status: 204 });
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' });
    await spool.append(lines(10), 10);
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    await writer.stop();
    const accepted = rec.seen.filter((s) => s.lines.length <= 3).flatMap((s) => s.lines);
    expect(accepted.sort()).toEqual(lines(10).trim().split('\n').sort());
    expect(metrics.get('tcplat_write_splits_total')).toBeGreaterThanOrEqual(3);
    expect(metrics.get('tcplat_written_lines_total')).toBe(10);
  });

  test('other 4xx: dead-letter file with InfluxDB message, a log line, and the spool moves on', async () => {
    rec.answer = (s) => (s.lines[0].includes('t=bad') ? { status: 400, body: '{"error":"partial write: field type conflict"}' } : { status: 204 });
    const errors: string[] = [];
    const log: Logger = { ...silentLogger, error: (_o, m) => errors.push(m ?? '') };
    const { dir, spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' }, log);
    await spool.append(lines(2, 'bad'), 2);
    await spool.append(lines(1), 1);
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    await writer.stop();
    const dead = fs.readFileSync(path.join(dir, 'dead-letter.lp'), 'utf8');
    expect(dead).toMatch(/^# .* HTTP 400: \{"error":"partial write: field type conflict"\}\n/);
    expect(dead).toContain(lines(2, 'bad'));
    expect(errors.join('\n')).toMatch(/HTTP 400: .*field type conflict.*dead-letter\.lp/);
    expect(metrics.get('tcplat_dead_letter_lines_total')).toBe(2);
    expect(metrics.get('tcplat_written_lines_total')).toBe(1);
  });

  test('401/403: a clear error, not ready, batches stay spooled until the credentials work', async () => {
    let allow = false;
    rec.answer = () => (allow ? { status: 204 } : { status: 401, body: '{"code":"unauthorized","message":"unauthorized access"}' });
    const errors: string[] = [];
    const log: Logger = { ...silentLogger, error: (_o, m) => errors.push(m ?? '') };
    const { spool, writer } = await setup({ version: 2, url: rec.url, org: 'o', bucket: 'b', token: 'wrong' }, log);
    await spool.append(lines(2), 2);
    expect(await writer.drain(Date.now() + 400)).toBe(false);
    expect(writer.state.healthy).toBe(false);
    expect(writer.state.configError).toMatch(/refused the credentials \(HTTP 401: .*unauthorized access.*\): fix .*--influx-token/);
    expect(errors[0]).toMatch(/batches stay in the spool and are retried/);
    expect(spool.snapshot().lines).toBe(2);
    allow = true;
    expect(await writer.drain(Date.now() + 5000)).toBe(true);
    expect(writer.state.healthy).toBe(true);
    expect(writer.state.configError).toBeNull();
    await writer.stop();
  });

  test('a hung server times out and is retried; stop() leaves the batch spooled', async () => {
    rec.answer = () => 'hang';
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' }, silentLogger, { timeoutMs: 200 });
    await spool.append(lines(1), 1);
    writer.kick();
    await new Promise((r) => setTimeout(r, 700));
    expect(metrics.get('tcplat_write_retries_total', { reason: 'network' })).toBeGreaterThanOrEqual(1);
    expect(writer.state.lastError).toMatch(/no answer from InfluxDB 1.x .* within 200 ms/);
    await writer.stop();
    expect(spool.snapshot().records).toBe(1);
  });
});

test('connection refused is a network error, retried', async () => {
  const rec = await new Recorder().start();
  const url = rec.url;
  await rec.stop();
  const { spool, writer, metrics } = await setup({ version: 1, url, db: 'd' });
  await spool.append(lines(1), 1);
  writer.kick();
  await new Promise((r) => setTimeout(r, 300));
  await writer.stop();
  expect(metrics.get('tcplat_write_retries_total', { reason: 'network' })).toBeGreaterThanOrEqual(2);
  expect(writer.state.lastError).toMatch(/cannot reach InfluxDB 1.x at http:\/\/127.0.0.1:\d+ \(db=d\): fetch failed: .*ECONNREFUSED/);
});
