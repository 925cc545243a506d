import fs from 'node:fs';
import fc from 'fast-check';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { queryFlux, queryInfluxQL, quote, type InfluxTarget, type InfluxV1Target } from '@tcplat/core';
import { fluxRows } from '../../../tests/support/flux';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2 } from '../../../tests/support/influx';
import { describeWith } from '../../../tests/support/prereq';
import { Metrics } from '../metrics';
import { Spool } from '../spool/spool';
import { silentLogger, type Logger } from '../types';
import { classify, Writer } from './writer';

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
        if (req.headers['content-encoding'] === 'gzip') {
          try {
            body = zlib.gunzipSync(body);
          } catch (e) {
            // As InfluxDB 1.x's handler (services/httpd/handler.go serveWrite): a body it cannot gunzip is a 400.
            res.writeHead(400, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({ error: (e as Error).message }));
            return;
          }
        }
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

const dirs: string[] = [];
const spools: Spool[] = [];
afterAll(async () => {
  // Each spool runs a worker thread: close them all, or the test process cannot exit.
  await Promise.all(spools.map((sp) => sp.close().catch(() => undefined)));
  dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true }));
});

async function openSpool(...args: Parameters<typeof Spool.open>): Promise<Spool> {
  const sp = await Spool.open(...args);
  spools.push(sp);
  return sp;
}

async function setup(target: InfluxTarget, log: Logger = silentLogger, opts: { timeoutMs?: number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-'));
  dirs.push(dir);
  const spool = await openSpool(dir, { maxBytes: 1 << 30, log });
  const metrics = new Metrics();
  const writer = new Writer(target, spool, { log, metrics, minBackoffMs: 20, maxBackoffMs: 100, random: () => 0.5, timeoutMs: opts.timeoutMs ?? 2000 });
  return { dir, spool, metrics, writer };
}

const lines = (n: number, tag = 'a') => Array.from({ length: n }, (_, i) => `m,t=${tag} f=${i}i ${1_764_100_000_000_000_000n + BigInt(i)}`).join('\n') + '\n';

describe('writer against a fake InfluxDB (a local recording stand-in)', () => {
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

describe('parallel requests (a local stand-in that holds its answers)', () => {
  /** Answers when the test says: counts the requests open at once. */
  class Holding {
    server: http.Server;
    url = '';
    open = 0;
    maxOpen = 0;
    /** Requests open when each one arrived (itself included). */
    openAtArrival: number[] = [];
    stored: string[] = [];
    held: { res: http.ServerResponse; lines: string[] }[] = [];
    constructor(private readonly decide: (n: number, h: Holding) => number | 'hold') {
      this.server = http.createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          const lines = zlib.gunzipSync(Buffer.concat(chunks)).toString().split('\n').filter((l) => l);
          this.open++;
          this.maxOpen = Math.max(this.maxOpen, this.open);
          this.openAtArrival.push(this.open);
          const d = this.decide(this.openAtArrival.length, this);
          if (d === 'hold') this.held.push({ res, lines });
          else this.answer(res, lines, d);
        });
      });
    }
    answer(res: http.ServerResponse, lines: string[], status: number): void {
      this.open--;
      if (status === 204) this.stored.push(...lines);
      res.writeHead(status);
      res.end(status === 204 ? '' : '{"error":"engine: cache full"}');
    }
    release(status: number): void {
      for (const h of this.held.splice(0)) this.answer(h.res, h.lines, status);
    }
    async start(): Promise<this> {
      await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
      this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
      return this;
    }
    async stop(): Promise<void> {
      this.server.closeAllConnections();
      await new Promise<void>((r) => this.server.close(() => r()));
    }
  }

  test('while InfluxDB answers, 4 batches are on their way at once (never more); every line arrives once', async () => {
    const srv = await new Holding(() => 'hold').start();
    try {
      const { spool, writer, metrics } = await setup({ version: 1, url: srv.url, db: 'd' });
      const all: string[] = [];
      for (let b = 0; b < 10; b++) {
        const t = lines(3, `b${b}`);
        all.push(...t.trim().split('\n'));
        await spool.append(t, 3);
      }
      writer.kick();
      // Answer each wave once the writer has filled its slots (or the 10 batches are all out).
      const done = writer.drain(Date.now() + 30_000);
      let answered = 0;
      while (answered < 10) {
        await waitUntil(() => srv.held.length === Math.min(4, 10 - answered), 20_000);
        expect(writer.state.requestsInFlight).toBe(srv.held.length);
        answered += srv.held.length;
        srv.release(204);
      }
      expect(await done).toBe(true);
      await writer.stop();
      expect(srv.maxOpen).toBe(4);
      expect(srv.stored.sort()).toEqual(all.sort());
      expect(metrics.get('tcplat_written_lines_total')).toBe(30);
      expect(spool.snapshot().records).toBe(0);
    } finally {
      await srv.stop();
    }
  }, 40_000);

  test('once InfluxDB fails, one request at a time until it answers again; then parallel again', async () => {
    // 1-4: held, then all answered 500; 5-7: 500 at once (one at a time expected); then 204.
    const srv = await new Holding((n) => (n <= 4 ? 'hold' : n <= 7 ? 500 : 204)).start();
    try {
      const { spool, writer, metrics } = await setup({ version: 1, url: srv.url, db: 'd' });
      const all: string[] = [];
      for (let b = 0; b < 12; b++) {
        const t = lines(2, `b${b}`);
        all.push(...t.trim().split('\n'));
        await spool.append(t, 2);
      }
      writer.kick();
      await waitUntil(() => srv.held.length === 4, 20_000);
      srv.release(500);
      expect(await writer.drain(Date.now() + 30_000)).toBe(true);
      await writer.stop();
      // The failures were probed one at a time: requests 5, 6, 7 and the first success (8) each alone.
      expect(srv.openAtArrival.slice(4, 8)).toEqual([1, 1, 1, 1]);
      expect(metrics.get('tcplat_write_retries_total', { reason: 'http_500' })).toBe(7);
      expect(srv.stored.sort()).toEqual(all.sort());
    } finally {
      await srv.stop();
    }
  }, 40_000);
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

/**
 * A stand-in ("fake InfluxDB") that stores lines and answers as InfluxDB's source does:
 * - 1.x services/httpd/handler.go serveWrite (influxdata/influxdb, 1.x branch): lines that do not parse are
 *   skipped and the rest written, answered 400 {"error":"partial write: unable to parse '<line>': <why>
 *   dropped=0"} (tsdb.PartialWriteError{Reason: parseError}); points the engine refuses (field type
 *   conflict, beyond the retention policy) are dropped and the rest written, answered 400
 *   {"error":"partial write: <why> dropped=N"}; nothing parses: 400 {"error":"unable to parse ..."}.
 * - 2.x http/write_handler.go: a parse error refuses the whole request, 400 {"code":"invalid",
 *   "message":"unable to parse ..."}; a tsdb.PartialWriteError is 422 {"code":"unprocessable entity",
 *   "message":"failure writing points to database: partial write: <why> dropped=N"} and the rest is written.
 * Here a line containing `unparsable` does not parse, one containing `conflict` is refused by the engine.
 */
class FakeInflux extends Recorder {
  stored = new Set<string>();
  version: 1 | 2 = 1;
  constructor() {
    super();
    this.answer = (s) => this.influx(s);
  }
  influx(s: Seen): { status: number; headers?: Record<string, string>; body?: string } {
    const unparsable = s.lines.filter((l) => l.includes('unparsable'));
    const parsed = s.lines.filter((l) => !l.includes('unparsable'));
    const conflict = parsed.filter((l) => l.includes('conflict'));
    const why = (l: string) => `unable to parse '${l}': invalid field format`;
    if (this.version === 2) {
      if (unparsable.length > 0) return { status: 400, body: JSON.stringify({ code: 'invalid', message: unparsable.map(why).join('\n') }) };
      parsed.filter((l) => !l.includes('conflict')).forEach((l) => this.stored.add(l));
      if (conflict.length > 0) {
        const message = `failure writing points to database: partial write: field type conflict: input field "f" on measurement "m" is type float, already exists as type integer dropped=${conflict.length}`;
        return { status: 422, body: JSON.stringify({ code: 'unprocessable entity', message }) };
      }
      return { status: 204 };
    }
    if (parsed.length === 0) return { status: 400, body: JSON.stringify({ error: unparsable.map(why).join('\n') }) };
    parsed.filter((l) => !l.includes('conflict')).forEach((l) => this.stored.add(l));
    if (conflict.length > 0) {
      return { status: 400, body: JSON.stringify({ error: `partial write: field type conflict: input field "f" on measurement "m" is type float, already exists as type integer dropped=${conflict.length}` }) };
    }
    if (unparsable.length > 0) return { status: 400, body: JSON.stringify({ error: `partial write: ${unparsable.map(why).join('\n')} dropped=0` }) };
    return { status: 204 };
  }
}

const mixed = (n: number, bad: Record<number, string>) =>
  Array.from({ length: n }, (_, i) => `m,t=${bad[i] ?? 'ok'} f=${i}i ${1_764_100_000_000_000_000n + BigInt(i)}`);

describe('writer against a fake InfluxDB (a stand-in answering as its source does)', () => {
  let fake: FakeInflux;
  beforeEach(async () => {
    fake = await new FakeInflux().start();
  });
  afterEach(() => fake.stop());

  async function run(version: 1 | 2, batches: string[][], opts: { maxBisectDropped?: number; log?: Logger } = {}) {
    fake.version = version;
    const target: InfluxTarget = version === 1 ? { version: 1, url: fake.url, db: 'd' } : { version: 2, url: fake.url, org: 'o', bucket: 'b', token: 't' };
    const log = opts.log ?? silentLogger;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-'));
    dirs.push(dir);
    const spool = await openSpool(dir, { maxBytes: 1 << 30, log });
    const metrics = new Metrics();
    const writer = new Writer(target, spool, { log, metrics, minBackoffMs: 20, maxBackoffMs: 100, random: () => 0.5, timeoutMs: 2000, maxBisectDropped: opts.maxBisectDropped });
    for (const b of batches) await spool.append(b.join('\n') + '\n', b.length);
    expect(await writer.drain(Date.now() + 20_000)).toBe(true);
    await writer.stop();
    const deadFile = path.join(dir, 'dead-letter.lp');
    const dead = fs.existsSync(deadFile) ? fs.readFileSync(deadFile, 'utf8') : '';
    const deadLines = dead.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    return { metrics, dead, deadLines, spool };
  }
  const dropped = (m: Metrics, reason: string) => m.get('tcplat_write_dropped_lines_total', { reason });

  test('1.x 400 partial write (field type conflict, dropped=N): exactly the N refused lines are dead-lettered, the rest stored and counted', async () => {
    const batch = mixed(200, { 17: 'conflict', 18: 'conflict', 150: 'conflict' });
    const { metrics, deadLines, dead } = await run(1, [batch]);
    expect(deadLines.sort()).toEqual([batch[17], batch[18], batch[150]].sort());
    expect(dead).toMatch(/^# .* HTTP 400: .*partial write: field type conflict.*dropped=\d/m);
    expect([...fake.stored].sort()).toEqual(batch.filter((l) => !l.includes('conflict')).sort());
    expect(metrics.get('tcplat_written_lines_total')).toBe(197);
    expect(dropped(metrics, 'refused')).toBe(3);
    expect(metrics.get('tcplat_dead_letter_lines_total')).toBe(3);
  });

  test('1.x 400 partial write with unparsable lines (reported dropped=0): only those lines are refused', async () => {
    const batch = mixed(100, { 0: 'unparsable', 99: 'unparsable' });
    const { metrics, deadLines } = await run(1, [batch]);
    expect(deadLines.sort()).toEqual([batch[0], batch[99]].sort());
    expect(fake.stored.size).toBe(98);
    expect(metrics.get('tcplat_written_lines_total')).toBe(98);
    expect(dropped(metrics, 'refused')).toBe(2);
  });

  test('2.x 422 partial write: the N refused lines found and counted; 2.x 400 (whole request refused) is bisected', async () => {
    const a = mixed(64, { 5: 'conflict' });
    const b = mixed(64, { 40: 'unparsable', 41: 'unparsable' }).map((l) => l.replace(' f=', ' g='));
    const { metrics, deadLines } = await run(2, [a, b]);
    expect(deadLines.sort()).toEqual([a[5], b[40], b[41]].sort());
    expect([...fake.stored].sort()).toEqual([...a, ...b].filter((l) => !/conflict|unparsable/.test(l)).sort());
    expect(metrics.get('tcplat_written_lines_total')).toBe(125);
    expect(dropped(metrics, 'refused')).toBe(3);
  });

  test('a partial write refusing more than maxBisectDropped lines counts N and keeps the part, marked, without bisecting', async () => {
    const bad: Record<number, string> = {};
    for (let i = 0; i < 20; i++) bad[i * 3] = 'conflict';
    const batch = mixed(100, bad);
    const { metrics, dead, deadLines } = await run(1, [batch], { maxBisectDropped: 5 });
    expect(fake.seen).toHaveLength(1);
    expect(dropped(metrics, 'partial_write')).toBe(20);
    expect(metrics.get('tcplat_written_lines_total')).toBe(80);
    expect(deadLines).toEqual(batch);
    expect(dead).toContain('InfluxDB stored all but 20 of these 100 lines and did not say which');
  });

  test('a partial write refusing every line (points beyond the retention policy): found by bisecting when few, counted as InfluxDB says when many', async () => {
    // 1.x answers points older than the retention policy with 400 "partial write: points beyond retention policy dropped=N".
    fake.answer = (s) => {
      const old = s.lines.filter((l) => l.includes('old'));
      s.lines.filter((l) => !l.includes('old')).forEach((l) => fake.stored.add(l));
      return old.length > 0 ? { status: 400, body: JSON.stringify({ error: `partial write: points beyond retention policy dropped=${old.length}` }) } : { status: 204 };
    };
    const few = mixed(6, { 0: 'old', 1: 'old', 2: 'old', 3: 'old', 4: 'old', 5: 'old' });
    const r1 = await run(1, [few], { maxBisectDropped: 10 });
    expect(r1.deadLines.sort()).toEqual([...few].sort());
    expect(dropped(r1.metrics, 'refused')).toBe(6);
    const many = mixed(30, Object.fromEntries(Array.from({ length: 30 }, (_, i) => [i, 'old'])));
    const before = fake.seen.length;
    const r2 = await run(1, [many], { maxBisectDropped: 10 });
    expect(fake.seen.length - before).toBe(1);
    expect(dropped(r2.metrics, 'partial_write')).toBe(30);
    expect(r2.metrics.get('tcplat_written_lines_total')).toBe(0);
    expect(r2.dead).toContain('InfluxDB stored none of these 30 lines');
  });

  test('a 5xx in the middle of a bisection resumes where it stopped: no line counted twice, none lost', async () => {
    const batch = mixed(32, { 3: 'conflict', 30: 'conflict' });
    let n = 0;
    fake.answer = (s) => (++n === 3 || n === 6 ? { status: 500, body: '{"error":"timeout"}' } : fake.influx(s));
    const { metrics, deadLines } = await run(1, [batch]);
    expect(metrics.get('tcplat_write_retries_total', { reason: 'http_500' })).toBe(2);
    expect(deadLines.sort()).toEqual([batch[3], batch[30]].sort());
    expect(metrics.get('tcplat_written_lines_total')).toBe(30);
    expect(dropped(metrics, 'refused')).toBe(2);
  });

  test('the refused lines are in the (synced) dead-letter file before their batch is acked', async () => {
    fake.version = 1;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-'));
    dirs.push(dir);
    const spool = await openSpool(dir, { maxBytes: 1 << 30, log: silentLogger });
    const writer = new Writer({ version: 1, url: fake.url, db: 'd' }, spool, { log: silentLogger, metrics: new Metrics(), minBackoffMs: 20 });
    const batch = mixed(10, { 4: 'unparsable' });
    await spool.append(batch.join('\n') + '\n', 10);
    const seenAtAck: string[] = [];
    const ack = spool.ack.bind(spool);
    spool.ack = (rec) => {
      seenAtAck.push(fs.readFileSync(path.join(dir, 'dead-letter.lp'), 'utf8'));
      return ack(rec);
    };
    expect(await writer.drain(Date.now() + 10_000)).toBe(true);
    await writer.stop();
    expect(seenAtAck).toHaveLength(1);
    expect(seenAtAck[0]).toContain(batch[4]);
  });

  test('refused lines are logged once per burst with counts, and every one is counted', async () => {
    const errors: { obj: object; msg: string }[] = [];
    const log: Logger = { ...silentLogger, error: (obj, msg) => errors.push({ obj, msg: msg ?? '' }) };
    const batches = Array.from({ length: 30 }, (_, k) => mixed(4, { 1: 'unparsable' }).map((l) => l.replace('m,', `m${k},`)));
    const { metrics } = await run(1, batches, { log });
    expect(dropped(metrics, 'refused')).toBe(30);
    // One line for the first refusal; the other 29 are summed up in one line when the writer stops.
    expect(errors).toHaveLength(2);
    expect(errors[0].msg).toMatch(/InfluxDB refused 1 line\(s\) for good \(HTTP 400: .*unable to parse/);
    expect(errors[1].msg).toBe('29 more lines dropped by the writer since the last report (by reason: refused 29)');
  });
});

describe('retry timing against a fake InfluxDB (stand-in): max(backoff, Retry-After), never a fixed fast loop', () => {
  let rec: Recorder;
  beforeEach(async () => {
    rec = await new Recorder().start();
  });
  afterEach(() => rec.stop());

  /** Times between consecutive requests, ms. */
  async function gaps(answers: ((n: number) => { status: number; headers?: Record<string, string>; body?: string })[], minBackoffMs = 20) {
    const at: number[] = [];
    rec.answer = (_s, n) => {
      at.push(Date.now());
      return n <= answers.length ? answers[n - 1](n) : { status: 204 };
    };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-'));
    dirs.push(dir);
    const spool = await openSpool(dir, { maxBytes: 1 << 30, log: silentLogger });
    const metrics = new Metrics();
    const writer = new Writer({ version: 1, url: rec.url, db: 'd' }, spool, { log: silentLogger, metrics, minBackoffMs, maxBackoffMs: 5000, random: () => 0.5, timeoutMs: 5000 });
    await spool.append(lines(1), 1);
    expect(await writer.drain(Date.now() + 30_000)).toBe(true);
    await writer.stop();
    return { gaps: at.slice(1).map((t, i) => t - at[i]), metrics };
  }

  test('429 with Retry-After: 0 backs off exponentially (20 ms base, jittered: 15, 30, 60, 120, 240 ms)', async () => {
    const ra0 = () => ({ status: 429, headers: { 'Retry-After': '0' }, body: '{"error":"too many requests"}' });
    const { gaps: g, metrics } = await gaps([ra0, ra0, ra0, ra0, ra0, ra0]);
    expect(g).toHaveLength(6);
    // Each wait at least the backoff; timers only run late, so lower bounds hold however loaded the machine.
    [15, 30, 60, 120, 240].forEach((min, i) => expect(g[i]).toBeGreaterThanOrEqual(min - 2));
    expect(metrics.get('tcplat_write_retries_total', { reason: 'throttled_429' })).toBe(6);
  });

  test('429 with Retry-After: 1.5 waits 1.5 s; 502 and 504 honour Retry-After; 503 an HTTP date', async () => {
    const date = () => new Date(Date.now() + 2000).toUTCString();
    const { gaps: g, metrics } = await gaps([
      () => ({ status: 429, headers: { 'Retry-After': '1.5' } }),
      () => ({ status: 502, headers: { 'Retry-After': '1' }, body: 'Bad Gateway' }),
      () => ({ status: 504, headers: { 'Retry-After': '1' }, body: 'Gateway Timeout' }),
      () => ({ status: 503, headers: { 'Retry-After': date() } }),
    ]);
    expect(g[0]).toBeGreaterThanOrEqual(1490);
    expect(g[1]).toBeGreaterThanOrEqual(990);
    expect(g[2]).toBeGreaterThanOrEqual(990);
    expect(g[3]).toBeGreaterThanOrEqual(990); // an HTTP date has 1 s resolution: 1-2 s ahead
    for (const r of ['throttled_429', 'throttled_502', 'throttled_504', 'throttled_503']) expect(metrics.get('tcplat_write_retries_total', { reason: r })).toBe(1);
  }, 30_000);

  test('500 ignores Retry-After and uses the backoff', async () => {
    const { gaps: g } = await gaps([() => ({ status: 500, headers: { 'Retry-After': '5' }, body: '{"error":"engine"}' })], 20);
    expect(g[0]).toBeLessThan(2000);
  });
});

describe('the send loop cannot die', () => {
  let rec: Recorder;
  beforeEach(async () => {
    rec = await new Recorder().start();
  });
  afterEach(() => rec.stop());

  test('an exception reading the spool (fake fault: next() throws twice) is logged, counted, backed off from; the batch still arrives', async () => {
    const errors: string[] = [];
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' }, { ...silentLogger, error: (_o, m) => errors.push(m ?? '') });
    await spool.append(lines(3), 3);
    const next = spool.next.bind(spool);
    let failures = 2;
    spool.next = () => {
      if (failures-- > 0) return Promise.reject(new Error('EIO: i/o error, read'));
      return next();
    };
    expect(await writer.drain(Date.now() + 10_000)).toBe(true);
    await writer.stop();
    expect(metrics.get('tcplat_write_loop_errors_total')).toBe(2);
    expect(errors[0]).toMatch(/writer: unexpected error, retrying after a backoff: EIO/);
    expect(rec.seen.flatMap((s) => s.lines)).toEqual(lines(3).trim().split('\n'));
    expect(metrics.get('tcplat_written_lines_total')).toBe(3);
  });

  test('a batch that can never be read back (fake fault: damaged gzip) is counted as unreadable after 3 tries; the next batch is sent', async () => {
    const { spool, writer, metrics } = await setup({ version: 1, url: rec.url, db: 'd' });
    await spool.append(lines(7), 7);
    await spool.append(lines(2), 2);
    // The first row's payload comes back damaged (a fault SQLite would not cause by itself): InfluxDB answers
    // 400 to a body it cannot gunzip, and the writer cannot split it either.
    const next = spool.next.bind(spool);
    let brokenId: number | undefined;
    spool.next = async () => {
      const r = await next();
      if (r && (brokenId === undefined || r.id === brokenId)) {
        brokenId = r.id;
        return { ...r, payload: Buffer.from('not gzip at all') };
      }
      return r;
    };
    expect(await writer.drain(Date.now() + 10_000)).toBe(true);
    await writer.stop();
    expect(metrics.get('tcplat_write_dropped_lines_total', { reason: 'unreadable' })).toBe(7);
    expect(metrics.get('tcplat_written_lines_total')).toBe(2);
  });
});

test('classify: every status sorted', () => {
  expect(classify(204, '', undefined)).toEqual({ kind: 'ok' });
  expect(classify(0, '', undefined)).toEqual({ kind: 'retry', reason: 'network' });
  expect(classify(500, '', 5000)).toEqual({ kind: 'retry', reason: 'http_500' });
  expect(classify(502, '', 1000)).toEqual({ kind: 'retry', reason: 'throttled_502', retryAfterMs: 1000 });
  expect(classify(401, '', undefined)).toEqual({ kind: 'retry', reason: 'auth' });
  expect(classify(404, '', undefined)).toEqual({ kind: 'retry', reason: 'not_found' });
  expect(classify(413, '', undefined)).toEqual({ kind: 'split', reason: 'too_large' });
  expect(classify(400, '{"error":"unable to parse \'x\': bad"}', undefined)).toEqual({ kind: 'split', reason: 'refused' });
  expect(classify(400, '{"error":"partial write: points beyond retention policy dropped=7"}', undefined)).toEqual({ kind: 'partial', dropped: 7 });
  expect(classify(400, `{"error":"partial write: unable to parse 'a': x\\nunable to parse 'b': y dropped=0"}`, undefined)).toEqual({ kind: 'partial', dropped: 2 });
  expect(classify(422, '{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict dropped=1"}', undefined)).toEqual({ kind: 'partial', dropped: 1 });
  expect(classify(405, '', undefined)).toEqual({ kind: 'dead' });
});

describeWith(missingInflux(), 'writer against the real InfluxDB 1.x: partial writes', () => {
  let db: InfluxV1Target;
  beforeEach(async () => {
    db = await freshDatabase('writer');
  });
  afterEach(() => dropDatabase(db));

  test('a 900 KiB service tag (over the 64 KiB key limit) in a batch: only that line is refused and dead-lettered, the rest stored and counted', async () => {
    const errors: string[] = [];
    const { dir, spool, writer, metrics } = await setup(db, { ...silentLogger, error: (_o, m) => errors.push(m ?? '') });
    const batch = Array.from({ length: 50 }, (_, i) => `tcp_connect,service=${i === 17 ? 'x'.repeat(900 << 10) : 's' + (i % 3)} latency_ms=${i}.5 ${1_764_100_000_000_000_000n + BigInt(i)}`);
    await spool.append(batch.join('\n') + '\n', batch.length);
    await spool.append(lines(5), 5);
    expect(await writer.drain(Date.now() + 60_000)).toBe(true);
    await writer.stop();
    const [series] = await queryInfluxQL(db, 'SELECT count(latency_ms) FROM tcp_connect; SELECT count(f) FROM m');
    expect(series[0].values[0][1]).toBe(49);
    expect(metrics.get('tcplat_written_lines_total')).toBe(49 + 5);
    expect(metrics.get('tcplat_write_dropped_lines_total', { reason: 'refused' })).toBe(1);
    const dead = fs.readFileSync(path.join(dir, 'dead-letter.lp'), 'utf8').split('\n');
    expect(dead[0]).toMatch(/^# .* HTTP 400: \{"error":"unable to parse 'tcp_connect,service=xxx.* … .*max key length exceeded: \d+ \\u003e 65535"\}$/);
    expect(dead.slice(1).filter((l) => l !== '')).toEqual([batch[17]]);
    expect(errors[0]).toMatch(/InfluxDB refused 1 line\(s\) for good \(HTTP 400/);
    expect(errors[0].length).toBeLessThan(1000); // InfluxDB echoes the 900 KiB line: the log keeps a bounded excerpt
  }, 90_000);
});

test('a batch appended while the spool answers next() late (its worker thread is busy) is not forgotten', async () => {
  const rec = await new Recorder().start();
  try {
    const { spool, writer } = await setup({ version: 1, url: rec.url, db: 'd' });
    const next = spool.next.bind(spool);
    let first = true;
    // The first next() answers "empty" after a delay during which a batch arrives.
    spool.next = () => {
      if (!first) return next();
      first = false;
      return new Promise((r) => setTimeout(() => r(undefined), 100));
    };
    writer.kick();
    await new Promise((r) => setTimeout(r, 20));
    await spool.append(lines(2), 2);
    writer.kick();
    await waitUntil(() => rec.seen.length === 1, 5000);
    await writer.stop();
    expect(rec.seen[0].lines).toHaveLength(2);
  } finally {
    await rec.stop();
  }
});

async function waitUntil(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('property: under any order of faults every line is stored or dead-lettered exactly once, and counted once (fake InfluxDB)', () => {
  type Fault = 'influx' | '500' | '502' | '429' | '503' | 'hang' | 'reset';
  const faultArb = fc.constantFrom<Fault>('influx', '500', '502', '429', '503', 'hang', 'reset');
  const lineArb = fc.constantFrom('ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'conflict', 'unparsable');
  const caseArb = fc.record({
    version: fc.constantFrom<1 | 2>(1, 2),
    batches: fc.array(fc.array(lineArb, { minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 }),
    faults: fc.array(faultArb, { maxLength: 25 }),
    maxRequestLines: fc.integer({ min: 1, max: 60 }),
  });

  test('seeded random cases, shrunk on failure', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async ({ version, batches, faults, maxRequestLines }) => {
        const fake = await new FakeInflux().start();
        fake.version = version;
        let n = 0;
        const sockets = new Set<import('node:net').Socket>();
        fake.server.on('connection', (s) => sockets.add(s));
        fake.answer = (s) => {
          const f = faults[n++] ?? 'influx';
          if (s.lines.length > maxRequestLines) return { status: 413, body: '{"error":"Request Entity Too Large"}' };
          switch (f) {
            case 'influx':
              return fake.influx(s);
            case '500':
              return { status: 500, body: '{"error":"engine: cache-max-memory-size exceeded"}' };
            case '502':
              return { status: 502, headers: { 'Retry-After': '0' }, body: 'Bad Gateway' };
            case '429':
              return { status: 429, headers: { 'Retry-After': '0.01' }, body: '{"error":"too many requests"}' };
            case '503':
              return { status: 503, headers: { 'Retry-After': new Date(Date.now() - 5000).toUTCString() } };
            case 'hang':
              // InfluxDB may have stored the points and never answered: the retry must not count them twice.
              fake.influx(s);
              return 'hang';
            case 'reset':
              for (const sock of sockets) sock.destroy();
              return 'hang';
          }
        };
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-writer-prop-'));
        dirs.push(dir);
        try {
          const spool = await openSpool(dir, { maxBytes: 1 << 30, log: silentLogger });
          const metrics = new Metrics();
          const target: InfluxTarget = version === 1 ? { version: 1, url: fake.url, db: 'd' } : { version: 2, url: fake.url, org: 'o', bucket: 'b', token: 't' };
          const writer = new Writer(target, spool, { log: silentLogger, metrics, minBackoffMs: 1, maxBackoffMs: 5, timeoutMs: 150 });
          const all: string[] = [];
          for (const [k, b] of batches.entries()) {
            const text = b.map((kind, i) => `m${k},t=${kind} f=${i}i ${1_764_100_000_000_000_000n + BigInt(i)}`);
            all.push(...text);
            await spool.append(text.join('\n') + '\n', text.length);
          }
          expect(await writer.drain(Date.now() + 60_000)).toBe(true);
          await writer.stop();
          const deadFile = path.join(dir, 'dead-letter.lp');
          const dead = fs.existsSync(deadFile) ? fs.readFileSync(deadFile, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#')) : [];
          const bad = all.filter((l) => /conflict|unparsable/.test(l));
          const good = all.filter((l) => !/conflict|unparsable/.test(l));
          // Exactly the refused lines are dead-lettered, each once; every other line is stored.
          expect(dead.sort()).toEqual(bad.sort());
          expect([...fake.stored].sort()).toEqual(good.sort());
          // Counted once each, whatever was retried or re-sent while bisecting.
          expect(metrics.get('tcplat_written_lines_total')).toBe(good.length);
          expect(metrics.get('tcplat_write_dropped_lines_total', { reason: 'refused' })).toBe(bad.length);
          expect(spool.snapshot().records).toBe(0);
        } finally {
          await fake.stop();
        }
      }),
      { seed: Number(process.env.TCPLAT_TEST_SEED ?? 20261207), numRuns: Number(process.env.TCPLAT_TEST_RUNS ?? 40), endOnFailure: false },
    );
  }, 300_000);
});

describeWith(missingInflux2(), 'writer against the real InfluxDB 2.x: 422 partial writes and 400s', () => {
  test('a field type conflict (422, rest stored) and a 900 KiB tag line (400, whole request refused): only those two lines refused', async () => {
    const v2 = await freshBucket('writer');
    const { dir, spool, writer, metrics } = await setup(v2);
    const t0 = 1_764_100_000_000_000_000n;
    await spool.append(`m,s=a f=1i ${t0}\n`, 1); // f is an integer from now on
    const batch = Array.from({ length: 40 }, (_, i) =>
      i === 9 ? `m,s=b f="text" ${t0 + 9n}` : i === 30 ? `m,s=${'x'.repeat(900 << 10)} f=30i ${t0 + 30n}` : `m,s=c${i % 4} f=${i}i ${t0 + BigInt(i)}`,
    );
    await spool.append(batch.join('\n') + '\n', batch.length);
    expect(await writer.drain(Date.now() + 60_000)).toBe(true);
    await writer.stop();
    const csv = await queryFlux(v2, `from(bucket: ${quote('flux-string', v2.bucket)}) |> range(start: 2025-01-01T00:00:00Z) |> filter(fn: (r) => r._measurement == "m") |> group() |> count()`);
    expect(fluxRows(csv)[0]._value).toBe('39'); // 1 + 40 - 2
    expect(metrics.get('tcplat_written_lines_total')).toBe(39);
    expect(metrics.get('tcplat_write_dropped_lines_total', { reason: 'refused' })).toBe(2);
    const dead = fs.readFileSync(path.join(dir, 'dead-letter.lp'), 'utf8');
    expect(dead.split('\n').filter((l) => l !== '' && !l.startsWith('#')).sort()).toEqual([batch[30], batch[9]].sort());
    expect(dead).toMatch(/HTTP 422: \{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict/);
    expect(dead).toMatch(/HTTP 400: \{"code":"invalid","message":"unable to parse 'm,s=xxx.* … .*max key length exceeded/);
  }, 90_000);
});
