/**
 * The Python worker pool: real workers, killed and hung on purpose. No InfluxDB needed (a fake source
 * feeds the HTTP tests).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUCKET_COUNT, type HistRow } from '@tcplat/core';
import { heatmapChart, yEdgesMs } from '../renderer/src/charts';
import type { HistSource } from '../renderer/src/data';
import { DEFAULT_LIMITS, parseRenderParams } from '../renderer/src/params';
import { CRASH_FREE_RESTARTS, NO_WORKER_WAIT_MS, PoolOverloadedError, RenderError, residentBytes, WORKER_SCRIPT, WorkerPool } from '../renderer/src/pool';
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

  test('a kept heatmap figure draws the same PNG, byte for byte, as a new worker, request after request', async () => {
    const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
    const H = 3_600_000;
    const chart = (raw: Record<string, string | string[]>, seed: number) => {
      const p = parseRenderParams('heatmap', raw, DEFAULT_LIMITS, NOW);
      const rows: HistRow[] = [];
      for (let t = p.binFromMs, i = 0; t < p.binToMs; t += p.windowMs, i++) {
        if ((i + seed) % 11 === 3) continue; // a few empty bins
        const k = (i * 7 + seed) % 20;
        rows.push({ timeMs: t, tags: {}, values: { count: 3 + k, min_ms: 0.05, max_ms: 900, 'le_0.063': 1, [`le_${[0.4, 1, 2.5][i % 3]}`]: 2 + k, le_1000: seed % 3 === 0 ? 0 : 1 } });
      }
      return heatmapChart(p, rows).request;
    };
    const big = { width: '1000', height: '400' };
    const requests: Record<string, unknown>[] = [
      chart({ ...big, from: String(NOW - 24 * H) }, 1),
      chart({ ...big, from: String(NOW - H), overlay: ['p50', 'p99'] }, 2),
      chart({ ...big, from: String(NOW - 24 * H), scale: 'linear' }, 3),
      chart({ ...big, from: String(NOW - 6 * H), tz: 'Europe/Berlin', title: `a title too long for the panel ${'x'.repeat(150)}` }, 4),
      chart({ ...big, from: String(NOW - 24 * H), overlay: ['max'] }, 5),
      chart({ ...big, from: String(NOW - 20_000) }, 6), // two bins
      message(),
      chart({ ...big, from: String(NOW - 24 * H), theme: 'light', service: ['rails', 'nest'] }, 7),
      // More sizes than the worker keeps figures for: the first one is dropped and built again.
      chart({ width: '400', height: '300', from: String(NOW - 2 * H) }, 8),
      chart({ width: '600', height: '300', from: String(NOW - 2 * H), overlay: ['p90'] }, 9),
      chart({ width: '700', height: '300', from: String(NOW - 2 * H) }, 10),
      chart({ width: '800', height: '300', from: String(NOW - 31 * 24 * H) }, 11),
      { ...chart({ ...big, from: String(NOW - H) }, 12), counts: [1, 2, 3] }, // fails half-way: figures are dropped
      chart({ ...big, from: String(NOW - 24 * H) }, 13),
      chart({ ...big, from: String(NOW - H), overlay: ['p50', 'p90', 'p99', 'max'] }, 14),
      chart({ ...big, from: String(NOW - H) }, 15),
    ];
    const kept = new WorkerPool({ python: PYTHON, workers: 1, queue: 0, timeoutMs: 20_000 });
    // A worker replaced after every render: each request drawn on new figures in a new process.
    const fresh = new WorkerPool({ python: PYTHON, workers: 1, queue: 1, timeoutMs: 20_000, maxRenders: 1 });
    try {
      await Promise.all([kept.start(), fresh.start()]);
      const pids = new Set<number>();
      let previous: Buffer | null = null;
      for (const [i, req] of requests.entries()) {
        const a = await kept.render(req).catch((e: RenderError) => e);
        const b = await fresh.render(req).catch((e: RenderError) => e);
        if (a instanceof RenderError || b instanceof RenderError) {
          expect([i, a instanceof RenderError && a.reason, b instanceof RenderError && b.reason]).toEqual([12, 'render', 'render']);
          continue;
        }
        pids.add(a.pid);
        expect([i, a.png.equals(b.png)]).toEqual([i, true]);
        if (previous) expect(a.png.equals(previous)).toBe(false);
        previous = a.png;
      }
      expect(pids.size).toBe(1);
    } finally {
      await Promise.all([kept.close(), fresh.close()]);
    }
  }, 120_000);

  test('a kept heatmap figure keeps its own tick labels when the colour range changes', () => {
    // The colour bar sets its ticks again on every new range: labels must stay ours (1, 10, 100, 1k), never
    // Matplotlib's defaults (mathtext "$10^{2}$", shown literally as mathtext is off).
    const req = (top: number) => ({ kind: 'heatmap', width: 800, height: 400, theme: 'dark', tz: 'UTC', title: 't', subtitle: 's', from_ms: 0, to_ms: 120_000, window_ms: 60_000, bins: 2, y_edges_ms: yEdgesMs(), counts: [top, ...Array(2 * BUCKET_COUNT - 1).fill(1)], overlays: {}, scale: 'log' });
    const script = [
      'import json, sys',
      `sys.path.insert(0, ${JSON.stringify(path.dirname(WORKER_SCRIPT))})`,
      'import worker',
      'out = []',
      'for req in json.loads(sys.stdin.read()):',
      '    fig = worker.render_heatmap(req)',
      '    worker.png(fig)',
      '    t = worker.TEMPLATES[next(reversed(worker.TEMPLATES))]',
      '    out.append([[x.get_text() for x in t.cb.ax.get_yticklabels()], [x.get_text() for x in t.ax.get_yticklabels()]])',
      'print(json.dumps(out))',
    ].join('\n');
    const r = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify([req(5), req(50_000), req(3)]), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as [string[], string[]][];
    expect(out).toHaveLength(3);
    for (const [colour, latency] of out) {
      expect(colour.length).toBeGreaterThan(0);
      for (const l of colour) expect(l).toMatch(/^\d+(\.\d+)?[kMG]?$/);
      expect(latency).toEqual(['10 µs', '100 µs', '1 ms', '10 ms', '100 ms', '1 s', '10 s']);
    }
    expect(out[1][0]).toContain('10k');
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

describeWith(missingPython, 'renderer worker restart policy and memory', () => {
  test('a kill storm: workers come back at once, requests never hang, no crash-loop back-off', async () => {
    const pool = new WorkerPool({ python: PYTHON, workers: 2, queue: 4, timeoutMs: 3000 });
    await pool.start();
    try {
      // 4 s of SIGKILL to every worker every 50 ms (starting ones included), while a client keeps asking.
      let storming = true;
      let kills = 0;
      const killer = setInterval(() => {
        for (const pid of pool.stats().pids) {
          try {
            process.kill(pid, 'SIGKILL');
            kills++;
          } catch {
            /* already gone */
          }
        }
      }, 50);
      const outcomes: { ms: number; ok: boolean }[] = [];
      const client = (async () => {
        while (storming) {
          const t0 = performance.now();
          const ok = await pool.render(message()).then(
            () => true,
            (e: Error) => (expect(e).toBeInstanceOf(RenderError), false),
          );
          outcomes.push({ ms: performance.now() - t0, ok });
          expect(pool.stats().crashLoop).toBe(false);
        }
      })();
      await sleep(4000);
      clearInterval(killer);
      storming = false;
      await client;
      const t0 = Date.now();
      await waitFor(() => pool.stats().ready === 2, 30_000);
      const recoveredMs = Date.now() - t0;
      // eslint-disable-next-line no-console
      console.log(`kill storm: ${kills} kills, ${outcomes.length} requests (${outcomes.filter((o) => o.ok).length} ok), slowest ${Math.max(...outcomes.map((o) => o.ms)).toFixed(0)} ms; both workers ready ${recoveredMs} ms after; load ${os.loadavg()[0].toFixed(1)}`);
      expect(kills).toBeGreaterThan(10);
      // Each request settled: drawn, or failed in bounded time (it waited for a worker that was killed again).
      expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(2 * NO_WORKER_WAIT_MS + 5000);
      // Restarted at once: the time to start Python, not a back-off of 8 s and more.
      expect(recoveredMs).toBeLessThan(15_000);
      expect(pool.stats().crashLoop).toBe(false);
      expect((await pool.render(message())).png.length).toBeGreaterThan(100);
    } finally {
      await pool.close();
    }
  }, 90_000);

  test('a worker that crashes on every request: a few immediate restarts, then back-off and fast failures', async () => {
    // A real process that crashes (exit code 3) whenever it is given a request, after saying it is ready.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-crash-'));
    const script = path.join(dir, 'crash.py');
    fs.writeFileSync(
      script,
      ['import json, struct, sys', 'h = json.dumps({"ready": True}).encode()', 'sys.stdout.buffer.write(struct.pack(">II", len(h), 0) + h)', 'sys.stdout.buffer.flush()', 'sys.stdin.buffer.read(4)', 'sys.exit(3)'].join('\n'),
    );
    const pool = new WorkerPool({ python: PYTHON, script, workers: 1, queue: 2, timeoutMs: 5000 });
    try {
      await pool.start();
      const reasons: string[] = [];
      for (let i = 0; i < 3; i++) reasons.push(await pool.render(message()).then(() => 'ok', (e: RenderError) => e.reason));
      // Each request is tried twice (two crashes): the crash-free restarts are used up.
      expect(reasons[0]).toBe('crash');
      expect(pool.stats().crashLoop).toBe(true);
      // Now with no worker ready, a request fails at once with the reason, instead of waiting.
      const t0 = performance.now();
      const e = await pool.render(message()).catch((x: RenderError) => x);
      expect(performance.now() - t0).toBeLessThan(500);
      expect(e).toMatchObject({ name: 'RenderError', reason: 'start' });
      expect((e as Error).message).toMatch(/keep crashing .*exited \(code 3\)/);
      // Backing off: over 3 s, far fewer restarts than an immediate-restart loop would make.
      const restarts = pool.restarts;
      await sleep(3000);
      expect(pool.restarts - restarts).toBeLessThanOrEqual(3);
      expect(pool.restarts).toBeGreaterThan(CRASH_FREE_RESTARTS);
    } finally {
      await pool.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test('a dozen maximum-size heatmaps do not leave the worker hundreds of MB larger; --worker-max-rss recycles it', async () => {
    const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
    const big = (i: number) => {
      const p = parseRenderParams('heatmap', { width: String(DEFAULT_LIMITS.maxWidth - i), height: String(DEFAULT_LIMITS.maxHeight - i), from: String(NOW - 86_400_000) }, DEFAULT_LIMITS, NOW);
      const rows: HistRow[] = [];
      for (let t = p.binFromMs, k = 0; t < p.binToMs; t += p.windowMs, k++) rows.push({ timeMs: t, tags: {}, values: { count: 5 + (k % 9), min_ms: 0.05, max_ms: 900, 'le_0.4': 2 + (k % 9), le_1000: 3 } });
      return heatmapChart(p, rows).request;
    };
    const pool = new WorkerPool({ python: PYTHON, workers: 1, queue: 1, timeoutMs: 60_000 });
    try {
      await pool.start();
      await pool.render(message());
      const pid = pool.stats().pids[0];
      const baseline = residentBytes(pid);
      let peak = 0;
      for (let i = 0; i < 12; i++) {
        await pool.render(big(i));
        peak = Math.max(peak, residentBytes(pid));
      }
      const after = residentBytes(pid);
      // eslint-disable-next-line no-console
      console.log(`worker RSS: ${(baseline / 2 ** 20).toFixed(0)} MiB after a small render, ${(after / 2 ** 20).toFixed(0)} MiB after 12 maximum-size heatmaps (peak seen ${(peak / 2 ** 20).toFixed(0)} MiB)`);
      expect(pool.stats().pids[0]).toBe(pid);
      expect(after - baseline).toBeLessThan(100 * 2 ** 20);
    } finally {
      await pool.close();
    }
    // Recycling by RSS: with a limit below what a worker needs at all, each one is retired after a render.
    const tight = new WorkerPool({ python: PYTHON, workers: 1, queue: 1, timeoutMs: 20_000, maxRssBytes: 1 << 20 });
    try {
      await tight.start();
      const a = await tight.render(message());
      await waitFor(() => tight.stats().ready === 1 && tight.stats().pids[0] !== a.pid, 30_000);
      const b = await tight.render(message());
      expect(b.pid).not.toBe(a.pid);
      expect(tight.rssRetirements).toBeGreaterThanOrEqual(1);
      expect(tight.restarts).toBe(0); // planned, not counted as a crash
    } finally {
      await tight.close();
    }
  }, 240_000);
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
      const m = (await srv.get('/metrics')).text;
      expect(m).toContain('tcplat_renderer_workers_crash_loop 0'); // a one-off kill is not a crash loop
      expect(m).toMatch(/tcplat_renderer_worker_rss_retirements_total \d/);
    } finally {
      await srv.close();
      await pool.close();
    }
  });
});
