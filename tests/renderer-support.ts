/**
 * Helpers for the renderer's end-to-end tests and benchmark: seed tcp_connect_hist exactly as the agent
 * writes it (histPoint + the line-protocol encoder), build an app on the test InfluxDB, and decode PNGs
 * to check what the picture shows.
 */
import http from 'node:http';
import zlib from 'node:zlib';
import { encodePoints, Histogram, histPoint, loadConfig, writeLines, type ConnectResult, type InfluxV1Target, type Point } from '@tcplat/core';
import type { FastifyInstance } from 'fastify';
import { buildApp, type BuildOptions } from '../renderer/src/app';
import { RENDERER_OPTIONS, rendererConfig } from '../renderer/src/config';

export interface SeedSeries {
  host?: string;
  service: string;
  dst: string;
  result?: ConnectResult;
  /** Latency (ms) of the i-th connect in window w. */
  latency: (i: number, w: number) => number;
  perWindow: number;
}

/**
 * One point per series per window, stamped at the window start, like the agent; `lateExtra` adds a second
 * point inside the same window (start + 1 ns) with one more connect, like the agent's late events.
 */
export function seedPoints(series: SeedSeries[], fromMs: number, toMs: number, windowMs = 10_000, lateExtra = false): Point[] {
  const points: Point[] = [];
  for (let t = Math.ceil(fromMs / windowMs) * windowMs, w = 0; t < toMs; t += windowMs, w++) {
    for (const s of series) {
      const h = new Histogram();
      for (let i = 0; i < s.perWindow; i++) h.add(s.latency(i, w));
      const tags = { host: s.host ?? 'h1', service: s.service, dst: s.dst, result: s.result ?? 'ok' };
      const startNs = BigInt(t) * 1_000_000n;
      points.push(histPoint(tags, h, startNs));
      if (lateExtra) {
        const late = new Histogram();
        late.add(s.latency(s.perWindow, w));
        points.push(histPoint(tags, late, startNs + 1n));
      }
    }
  }
  return points;
}

export async function writePoints(target: InfluxV1Target, points: Point[]): Promise<void> {
  for (let i = 0; i < points.length; i += 5000) await writeLines(target, encodePoints(points.slice(i, i + 5000)));
}

export interface Answer {
  statusCode: number;
  headers: Record<string, string>;
  body: Buffer;
  text: string;
  json(): any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface TestServer {
  app: FastifyInstance;
  base: string;
  request(method: string, path: string, opts?: { headers?: Record<string, string>; body?: unknown }): Promise<Answer>;
  get(path: string, headers?: Record<string, string>): Promise<Answer>;
  close(): Promise<void>;
}

/**
 * Build the renderer on a test database and listen on a free loopback port. Real HTTP rather than
 * app.inject(): light-my-request loads the ESM-only `cookie` package, which jest's CommonJS runtime cannot.
 */
export async function testServer(target: { url: string; db: string }, flags: string[] = [], deps: Partial<BuildOptions> = {}): Promise<TestServer> {
  const { values } = loadConfig(RENDERER_OPTIONS, ['--influx-url', target.url, '--influx-db', target.db, '--log-level', 'silent', ...flags], {});
  const config = rendererConfig(values);
  const app = await buildApp({ config, ...deps });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  // A new connection per request (agent: false): a pooled keep-alive connection that the server closes
  // after its 5 s keep-alive timeout, while a loaded test process has not yet dropped it, would reset the
  // next request (ECONNRESET) — a race of the test client, not of the renderer.
  const request = (method: string, path: string, opts: { headers?: Record<string, string>; body?: unknown } = {}): Promise<Answer> =>
    new Promise<Answer>((resolve, reject) => {
      const payload = opts.body !== undefined ? Buffer.from(JSON.stringify(opts.body)) : undefined;
      const req = http.request(
        base + path,
        { method, agent: false, headers: { ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}), ...opts.headers } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
            const text = body.toString('utf8');
            resolve({ statusCode: res.statusCode!, headers, body, text, json: () => JSON.parse(text) });
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  return { app, base, request, get: (path, headers) => request('GET', path, { headers }), close: () => app.close() };
}

export interface Image {
  width: number;
  height: number;
  /** RGBA, 4 bytes per pixel, row-major. */
  rgba: Buffer;
}

/** Width and height from a PNG's IHDR, without decoding it; throws when it is not a PNG. */
export function pngSize(buf: Buffer): { width: number; height: number } {
  if (buf.length < 24 || buf.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a' || buf.subarray(12, 16).toString('latin1') !== 'IHDR') throw new Error('not a PNG');
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

/** Decode an 8-bit, non-interlaced RGB/RGBA PNG (what Matplotlib's Agg writes). */
export function decodePng(buf: Buffer): Image {
  if (buf.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a') throw new Error('not a PNG');
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.subarray(pos + 4, pos + 8).toString('latin1');
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      const depth = data[8];
      const colour = data[9];
      if (depth !== 8 || (colour !== 6 && colour !== 2) || data[12] !== 0) throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${data[12]}`);
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = Buffer.alloc(width * height * 4);
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? line[x - channels] : 0;
      const b = prev[x];
      const c = x >= channels ? prev[x - channels] : 0;
      let add = 0;
      if (filter === 1) add = a;
      else if (filter === 2) add = b;
      else if (filter === 3) add = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        add = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[x] = (line[x] + add) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      out[o] = line[x * channels];
      out[o + 1] = line[x * channels + 1];
      out[o + 2] = line[x * channels + 2];
      out[o + 3] = channels === 4 ? line[x * channels + 3] : 255;
    }
    prev = line;
  }
  return { width, height, rgba: out };
}

/**
 * Where the colour mass of a heatmap lies: the mean row (0 = top) of strongly coloured pixels inside a
 * box, and how many there are. Grey pixels (background, grid, text) are ignored.
 */
export function colourMass(img: Image, box: { left: number; right: number; top: number; bottom: number }): { count: number; meanRow: number } {
  let count = 0;
  let sum = 0;
  for (let y = box.top; y < box.bottom; y++) {
    for (let x = box.left; x < box.right; x++) {
      const o = (y * img.width + x) * 4;
      const r = img.rgba[o];
      const g = img.rgba[o + 1];
      const b = img.rgba[o + 2];
      if (Math.max(r, g, b) - Math.min(r, g, b) > 60) {
        count++;
        sum += y;
      }
    }
  }
  return { count, meanRow: count ? sum / count : NaN };
}
