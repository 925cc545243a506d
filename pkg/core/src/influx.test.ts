import http from 'node:http';
import zlib from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { InfluxError, parseRetryAfter, writeLines, type InfluxV2Target } from './influx';

describe('parseRetryAfter', () => {
  test('seconds and HTTP dates', () => {
    expect(parseRetryAfter('7')).toBe(7000);
    expect(parseRetryAfter(' 0 ')).toBe(0);
    const now = Date.UTC(2026, 0, 1, 0, 0, 0);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 31 Dec 2025 23:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});

describe('writeLines against a local recording server', () => {
  let server: http.Server;
  let url = '';
  const seen: { url: string; headers: http.IncomingHttpHeaders; body: Buffer }[] = [];
  let reply: { status: number; headers?: Record<string, string>; body?: string } = { status: 204 };
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(reply.status, reply.headers ?? {});
        res.end(reply.body ?? '');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  test('gzip body, v2 endpoint and token; errors carry status, message and Retry-After', async () => {
    const t: InfluxV2Target = { version: 2, url, org: 'o rg', bucket: 'b', token: 'tok' };
    reply = { status: 204 };
    await writeLines(t, zlib.gzipSync('m f=1i 1\n'), { gzip: true });
    const r = seen.at(-1)!;
    expect(r.url).toBe('/api/v2/write?org=o+rg&bucket=b&precision=ns');
    expect(r.headers.authorization).toBe('Token tok');
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(r.body).toString()).toBe('m f=1i 1\n');

    reply = { status: 429, headers: { 'Retry-After': '3' }, body: '{"code":"too many requests"}' };
    const err = await writeLines(t, 'm f=1i 1\n').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InfluxError);
    expect((err as InfluxError).status).toBe(429);
    expect((err as InfluxError).retryAfterMs).toBe(3000);
    expect((err as InfluxError).message).toContain('too many requests');
  });
});
