/**
 * The Python worker pool: real workers, killed and hung on purpose. No InfluxDB needed (a fake source
 * feeds the HTTP tests).
 */
import fs from 'node:fs';
import type { HistRow } from '@tcplat/core';
import type { HistSource } from '../renderer/src/data';
import { PoolOverloadedError, RenderError, WorkerPool } from '../renderer/src/pool';
import { describeWith } from './support/prereq';
import { decodePng, testServer } from './renderer-support';

const PYTHON = '/usr/bin/python3';
const missingPython = fs.existsSync(PYTHON) ? null : `${PYTHON} is missing (Debian python3 with python3-matplotlib: sudo scripts/setup)`;

const message = (extra: Record<string, unknown> = {}) => ({ kind: 'message', width: 300, height: 150, theme: 'dark', title: 't', message: 'hello', ...extra });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await sleep(20);
  }
}

describeWith(missingPython, 'renderer worker pool', () => {
  let pool: WorkerPool;
  beforeAll(async () => {
    pool = new WorkerPool({ python: PYTHON, workers: 1, queue: 1, timeoutMs: 1500 });
    await pool.start();
  });
  afterAll(async () => pool?.close());

  test('draws a PNG of the requested size in a long-lived worker', async () => {
    const a = await pool.render(message());
    const b = await pool.render(message({ width: 333, height: 177 }));
    expect(a.pid).toBe(b.pid); // the same process, no spawn per request
    const img = decodePng(b.png);
    expect([img.width, img.height]).toEqual([333, 177]);
  });

  test('a worker killed mid-request is replaced and the request is retried once', async () => {
    const restarts = pool.restarts;
    const pending = pool.render(message({ delay_ms: 800 }));
    await waitFor(() => pool.busyPids().length === 1);
    const victim = pool.busyPids()[0];
    process.kill(victim, 'SIGKILL');
    const r = await pending;
    expect(r.pid).not.toBe(victim);
    expect(decodePng(r.png).width).toBe(300);
    expect(pool.restarts).toBe(restarts + 1);
    expect((await pool.render(message())).png.length).toBeGreaterThan(100);
  });

  test('a request that kills its worker twice fails cleanly', async () => {
    const pending = pool.render(message({ delay_ms: 800 }));
    let victim = 0;
    for (let i = 0; i < 2; i++) {
      await waitFor(() => pool.busyPids().length === 1 && pool.busyPids()[0] !== victim);
      victim = pool.busyPids()[0];
      process.kill(victim, 'SIGKILL');
    }
    await expect(pending).rejects.toMatchObject({ name: 'RenderError', reason: 'crash' });
    await waitFor(() => pool.stats().ready === 1);
    expect((await pool.render(message())).png.length).toBeGreaterThan(100);
  });

  test('a hung worker is killed at the timeout, its request fails, the next one works', async () => {
    const before = pool.stats().pids[0];
    await expect(pool.render(message({ delay_ms: 5000 }))).rejects.toMatchObject({ reason: 'timeout' });
    await waitFor(() => pool.stats().ready === 1);
    expect(pool.stats().pids[0]).not.toBe(before);
    expect((await pool.render(message())).png.length).toBeGreaterThan(100);
  });

  test('a bad request is an error for that request only', async () => {
    await expect(pool.render({ kind: 'nope' })).rejects.toThrow(RenderError);
    await expect(pool.render({ kind: 'heatmap', width: 100 })).rejects.toMatchObject({ reason: 'render' });
    expect((await pool.render(message())).png.length).toBeGreaterThan(100);
  });

  test('the queue is bounded: beyond it, PoolOverloadedError', async () => {
    const busy = pool.render(message({ delay_ms: 300 }));
    const queued = pool.render(message());
    await expect(pool.render(message())).rejects.toBeInstanceOf(PoolOverloadedError);
    await Promise.all([busy, queued]);
  });

  test('a worker that cannot start fails start() with its reason', async () => {
    const broken = new WorkerPool({ python: PYTHON, script: '/nonexistent/worker.py', workers: 1, queue: 0, timeoutMs: 1000 });
    await expect(broken.start()).rejects.toThrow(/worker\.py/);
    await broken.close();
  });
});

/** A source that answers slowly, so that requests pile up. */
function slowSource(delayMs: number, rows: HistRow[] = []): HistSource {
  return { dialect: 'influxql', describe: () => 'fake', query: async () => (await sleep(delayMs), rows) };
}

describeWith(missingPython, 'renderer service under overload and worker loss', () => {
  test('overload: 429 with Retry-After, never 5xx', async () => {
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--queue', '1', '--cache-mb', '0'], { source: slowSource(400) });
    try {
      const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => srv.get(`/render/heatmap.png?service=s${i}`)));
      const codes = answers.map((a) => a.statusCode).sort();
      expect(codes.filter((c) => c === 200).length).toBeGreaterThanOrEqual(1);
      expect(codes.filter((c) => c === 429).length).toBeGreaterThanOrEqual(1);
      expect(codes.every((c) => c === 200 || c === 429)).toBe(true);
      const rejected = answers.find((a) => a.statusCode === 429)!;
      expect(rejected.headers['retry-after']).toBe('2');
      expect(rejected.json().error).toMatch(/busy/);
      const m = await srv.get('/metrics');
      expect(m.text).toMatch(/tcplat_renderer_rejected_total [1-9]/);
    } finally {
      await srv.close();
    }
  });

  test('identical concurrent requests share one render', async () => {
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--queue', '0', '--cache-mb', '0'], { source: slowSource(300) });
    try {
      const answers = await Promise.all(Array.from({ length: 5 }, () => srv.get('/render/heatmap.png?service=same')));
      expect(answers.map((a) => a.statusCode)).toEqual([200, 200, 200, 200, 200]);
      expect(new Set(answers.map((a) => a.headers.etag)).size).toBe(1);
    } finally {
      await srv.close();
    }
  });

  test('a worker killed while serving an HTTP request: the service recovers', async () => {
    const pool = new WorkerPool({ python: PYTHON, workers: 1, queue: 4, timeoutMs: 10_000 });
    await pool.start();
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--cache-mb', '0'], { source: slowSource(0), pool });
    try {
      // Kill the worker as soon as it takes the request (a render takes tens of ms: poll tightly).
      let killed = 0;
      const killer = setInterval(() => {
        const pids = pool.busyPids();
        if (pids.length && !killed) {
          killed = pids[0];
          process.kill(pids[0], 'SIGKILL');
        }
      }, 1);
      const r = await srv.get('/render/heatmap.png?service=a&width=400&height=200');
      clearInterval(killer);
      // Retried on the replacement worker (or, if the kill came too late, simply served): never a hang or a 5xx.
      expect(r.statusCode).toBe(200);
      expect(decodePng(r.body).width).toBe(400);
      const after = await srv.get('/render/heatmap.png?service=b&width=400&height=200');
      expect(after.statusCode).toBe(200);
      const h = (await srv.get('/healthz')).json();
      expect(h.ok).toBe(true);
      if (killed) expect(h.restarts).toBeGreaterThanOrEqual(1);
    } finally {
      await srv.close();
      await pool.close();
    }
  });
});
