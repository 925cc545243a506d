#!/usr/bin/env node
'use strict';
/**
 * Benchmark of `tcplat renderer` (npm run bench:renderer; scripts/bench-renderer starts the InfluxDB).
 * One run, same data: uncached heatmap p50/p95 at 1 h, 6 h and 24 h; cached p50; 8 concurrent clients;
 * the seed's design (a fresh Python + pandas + Matplotlib process per request, same query, same picture
 * size); RSS of the service and its workers over 1,000 renders.
 *
 * Scale (issue 14): 30 d of one host and 7 d of a service on 20 hosts, written in the agent's schema (10 s
 * tcp_connect_hist points, up to an hour past the start of the run so that charts ending now are live)
 * AND their rollups (1 min, 10 min, 1 h: summed here from the points written, into
 * the retention policy tcplat_rollups; then the fleet rollups, summed over hosts, made by the real
 * `tcplat rollup --fleet-only` as users make them), rendered uncached and compared with the 1 h render of the same host
 * measured in the same run, interleaved (target: each at most 3x).
 *
 * Flags: --influx-url URL (required) --renders N (default 1000) --n N (samples per range, default 25)
 *        --seed-only (write the data set and exit: for looking at it by hand)
 *        --scale-only (only the scale figures) --no-scale (skip them) --scale-n N (samples each, default 9)
 *        --scale-ahead-h H (write the scale data H hours past the start, default 1) --no-scale-seed (reuse it)
 *        --scale-settle-s S (wait before measuring, default 60)
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const core = require(path.join(root, 'pkg/core/dist'));
const { parseRenderParams, DEFAULT_LIMITS } = require(path.join(root, 'renderer/dist/params'));
const { chartQuery, heatmapChart } = require(path.join(root, 'renderer/dist/charts'));
const { influxSource } = require(path.join(root, 'renderer/dist/data'));

function flag(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const INFLUX = flag('influx-url');
if (!INFLUX) {
  console.error('bench-renderer: --influx-url is required (scripts/bench-renderer starts a throwaway InfluxDB)');
  process.exit(2);
}
const RENDERS = Number(flag('renders', '1000'));
const N = Number(flag('n', '25'));
const SEED_N = Math.min(N, 12);
const PYTHON = '/usr/bin/python3';
const DB = 'bench_renderer';
const HOUR = 3_600_000;
const WINDOW = 10_000;
const END = Math.floor(Date.now() / WINDOW) * WINDOW;
const START = END - 25 * HOUR;
const W = 1000;
const H = 400;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
};
const fmt = (ms) => `${ms.toFixed(ms < 10 ? 2 : 1)} ms`;
const log = (...a) => console.error('bench-renderer:', ...a);

/** A deterministic generator, so every run measures the same data. */
function rng(seed) {
  let s = seed;
  return () => (s = (s * 16807) % 2147483647) / 2147483647;
}

async function seed(target) {
  await core.queryInfluxQL({ ...target, db: '' }, `CREATE DATABASE ${core.quote('influxql-ident', DB)}`, { method: 'POST' });
  const r = rng(42);
  const series = [];
  for (const host of ['h1', 'h2']) {
    series.push({ host, service: 'rails', dst: 'pg:5432', n: 12, lat: () => (r() < 0.05 ? 1000 + 80 * r() : 0.25 + 0.3 * r()) });
    series.push({ host, service: 'rails', dst: 'redis:6379', n: 20, lat: () => 0.06 + 0.05 * r() });
    series.push({ host, service: 'nest', dst: 'pg:5432', n: 25, lat: () => 0.15 * Math.exp(r()) });
    series.push({ host, service: 'nest', dst: 'redis:6379', n: 15, lat: () => 0.07 + 0.04 * r() });
    series.push({ host, service: 'rails', dst: 'pg:5432', result: 'refused', n: 1, lat: () => 0.04 });
  }
  let points = [];
  let total = 0;
  for (let t = START; t < END; t += WINDOW) {
    for (const s of series) {
      const h = new core.Histogram();
      const n = Math.round(s.n * (0.5 + r()));
      for (let i = 0; i < n; i++) h.add(s.lat());
      points.push(core.histPoint({ host: s.host, service: s.service, dst: s.dst, result: s.result ?? 'ok' }, h, BigInt(t) * 1_000_000n));
      total++;
    }
    if (points.length >= 10_000) {
      await core.writeLines(target, core.encodePoints(points));
      points = [];
    }
  }
  if (points.length) await core.writeLines(target, core.encodePoints(points));
  return total;
}

/** Scale data: 30 d of one host (3 series: ok to pg, ok to redis, refused to pg), 7 d of a service on 20 hosts (2 series each: ok to pg and to redis). */
const SCALE = {
  solo: { service: 'batch', hosts: ['solo'], days: 30 },
  fleet: { service: 'fleet', hosts: Array.from({ length: 20 }, (_, i) => `f${String(i + 1).padStart(2, '0')}`), days: 7 },
};

/**
 * Write the scale data: per hour, every series' 10 s windows (the agent's histPoint), then the rollups of
 * exactly those points (core.rollupHistPoints: one point per series per window, counts summed, min of
 * mins, max of maxes) into the rollup retention policy. Hours are whole rollup windows, so every rollup
 * point is complete.
 */
async function seedScale(target) {
  await core.queryInfluxQL(target, `CREATE RETENTION POLICY ${core.quote('influxql-ident', core.ROLLUP_RP)} ON ${core.quote('influxql-ident', DB)} DURATION INF REPLICATION 1`, { method: 'POST' });
  const rollupTarget = { ...target, rp: core.ROLLUP_RP };
  const r = rng(7);
  const series = [];
  for (const set of Object.values(SCALE)) {
    for (const host of set.hosts) {
      const from = END - set.days * 24 * HOUR - HOUR;
      series.push({ from, host, service: set.service, dst: 'pg:5432', n: 10, lat: () => (r() < 0.03 ? 1000 + 80 * r() : 0.25 + 0.3 * r()) });
      series.push({ from, host, service: set.service, dst: 'redis:6379', n: 15, lat: () => 0.06 + 0.05 * r() });
      if (set.hosts.length === 1) series.push({ from, host, service: set.service, dst: 'pg:5432', result: 'refused', n: 1, lat: () => 0.04 });
    }
  }
  const first = Math.floor(Math.min(...series.map((s) => s.from)) / HOUR) * HOUR;
  // Written an hour past the start of the run, so that charts ending "now" (while the run goes on) are live
  // charts: their newest windows are read from the finer levels (planHistParts), as in production.
  const until = SCALE_END;
  let raw = 0;
  let rolled = 0;
  let pending = [];
  const flush = async (force) => {
    if (pending.length >= 4 || (force && pending.length)) {
      await Promise.all(pending);
      pending = [];
    }
  };
  for (let hour = first; hour < until; hour += HOUR) {
    const points = [];
    for (const s of series) {
      if (hour + HOUR <= s.from) continue;
      for (let t = Math.max(hour, Math.ceil(s.from / WINDOW) * WINDOW); t < Math.min(hour + HOUR, until); t += WINDOW) {
        const h = new core.Histogram();
        const n = Math.round(s.n * (0.5 + r()));
        if (n === 0) continue; // the agent writes no window without connects
        for (let i = 0; i < n; i++) h.add(s.lat());
        points.push(core.histPoint({ host: s.host, service: s.service, dst: s.dst, result: s.result ?? 'ok' }, h, BigInt(t) * 1_000_000n));
      }
    }
    const rollups = core.ROLLUP_WINDOWS.flatMap((w) => core.rollupHistPoints(points, w.name));
    raw += points.length;
    rolled += rollups.length;
    for (let i = 0; i < points.length; i += 10_000) pending.push(core.writeLines(target, core.encodePoints(points.slice(i, i + 10_000))));
    pending.push(core.writeLines(rollupTarget, core.encodePoints(rollups)));
    await flush(false);
  }
  await flush(true);
  return { raw, rolled };
}

/** `tcplat rollup --fleet-only` over everything written (the real CLI): its seconds; throws when it fails. */
function fleetRollup() {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'bin/tcplat'), 'rollup', '--influx-url', INFLUX, '--influx-db', DB, '--fleet-only', '--chunk', '168h', '--to', String(SCALE_END)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('exit', (code) => {
      const lines = err.trim().split('\n');
      log(`tcplat rollup: ${lines.at(-1)}`);
      if (code === 0) resolve((performance.now() - t0) / 1000);
      else reject(new Error(`tcplat rollup --fleet-only exited ${code}: ${lines.slice(-3).join(' / ')}`));
    });
  });
}

function freePort() {
  return new Promise((resolve) => {
    const s = require('node:net').createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

/** Renderers this run started: stopped on SIGINT/SIGTERM too, so that no server or worker outlives the run. */
const started = new Set();
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const c of started) c.kill('SIGTERM');
    process.exit(130);
  });
}

async function startRenderer(extra) {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(root, 'bin/tcplat'), 'renderer', '--influx-url', INFLUX, '--influx-db', DB, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn', ...extra], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  started.add(child);
  child.once('exit', () => started.delete(child));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) return { child, base };
    } catch {
      /* not up yet */
    }
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error('renderer did not start');
}

function stopRenderer(r) {
  return new Promise((resolve) => {
    r.child.once('exit', resolve);
    r.child.kill('SIGTERM');
    setTimeout(() => r.child.kill('SIGKILL'), 15_000).unref();
  });
}

/** RSS (KiB) of a process and its children (the Python workers). */
function treeRssKiB(pid) {
  const rss = (p) => {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  };
  let total = rss(pid);
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) total += rss(Number(d));
    } catch {
      /* gone */
    }
  }
  return total;
}

async function timed(url) {
  const t0 = performance.now();
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  const ms = performance.now() - t0;
  if (res.status !== 200 || body.subarray(1, 4).toString() !== 'PNG') throw new Error(`${url}: HTTP ${res.status} ${body.toString().slice(0, 200)}`);
  const fleet = res.headers.get('x-tcplat-fleet-rollups') === 'true';
  return { ms, timing: res.headers.get('server-timing') ?? '', level: (res.headers.get('x-tcplat-resolution') ?? '') + (fleet ? ' fleet' : '') };
}

const SCALE_END = END + Number(flag('scale-ahead-h', '1')) * HOUR;
/** A live chart: from now-R to now, resolved by the renderer at each request (the cache is off). */
const scaleUrl = (base, set, rangeH) => `${base}/render/heatmap.png?service=${SCALE[set].service}&from=now-${rangeH}h&to=now&width=${W}&height=${H}`;

/**
 * Uncached renders of the scale data, interleaved request by request (1 h of the one host, then 30 d of it,
 * then 7 d of the 20-host service), so that load from anything else weighs on all three alike.
 */
async function scaleFigures(base, n) {
  const kinds = [
    ['1h', 'solo', 1],
    ['30d', 'solo', 30 * 24],
    ['7d20', 'fleet', 7 * 24],
  ];
  const xs = { '1h': [], '30d': [], '7d20': [] };
  const levels = {};
  const timing = {};
  for (const [, set, h] of kinds) await timed(scaleUrl(base, set, h)); // warm-up
  for (let i = 1; i <= n; i++) {
    for (const [k, set, h] of kinds) {
      const r = await timed(scaleUrl(base, set, h));
      xs[k].push(r.ms);
      levels[k] = r.level;
      timing[k] = r.timing;
    }
  }
  const out = { n, load1: require('node:os').loadavg()[0] };
  for (const k of Object.keys(xs)) out[k] = { p50: pct(xs[k], 0.5), best: Math.min(...xs[k]), level: levels[k], lastServerTiming: timing[k] };
  out.ratio30d = out['30d'].p50 / out['1h'].p50;
  out.ratio7d20 = out['7d20'].p50 / out['1h'].p50;
  return out;
}

const heatmapUrl = (base, rangeH, i = 0) => `${base}/render/heatmap.png?service=rails&from=${END - rangeH * HOUR - i * WINDOW}&to=${END - i * WINDOW}&width=${W}&height=${H}`;

/** The seed's design: same query and bins, then a fresh Python + pandas + pyplot process per request. */
async function seedDesign(source, rangeH, i = 0) {
  const t0 = performance.now();
  const p = parseRenderParams('heatmap', { service: 'rails', from: String(END - rangeH * HOUR - i * WINDOW), to: String(END - i * WINDOW), width: String(W), height: String(H) }, DEFAULT_LIMITS, END);
  const rows = await source.query(chartQuery(p));
  const chart = heatmapChart(p, rows);
  const png = await new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [path.join(__dirname, 'seed_plotter.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const out = [];
    child.stdout.on('data', (c) => out.push(c));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`seed_plotter exited ${code}`))));
    child.stdin.end(JSON.stringify(chart.request));
  });
  if (png.subarray(1, 4).toString() !== 'PNG') throw new Error('seed design produced no PNG');
  return performance.now() - t0;
}

async function main() {
  const target = { version: 1, url: INFLUX, db: DB };
  const hasPandas = (await new Promise((resolve) => spawn(PYTHON, ['-c', 'import pandas'], { stdio: 'ignore' }).on('exit', (c) => resolve(c === 0))));
  log(`seeding 25 h of tcp_connect_hist (10 s windows, 10 series) into ${INFLUX} db=${DB}`);
  let t = performance.now();
  const points = await seed(target);
  log(`seeded ${points} points in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const results = { machine: { cpus: require('node:os').cpus().length, node: process.version, loadavgAtStart: require('node:os').loadavg()[0] }, points, hasPandas };

  if (!process.argv.includes('--no-scale')) {
    let seeded = { raw: 0, rolled: 0 };
    if (process.argv.includes('--no-scale-seed')) log('scale data: reusing what an earlier run (with --scale-ahead-h covering now) wrote into this InfluxDB');
    else {
      log(`seeding the scale data: 30 d of one host, 7 d of a service on 20 hosts, and their rollups`);
      t = performance.now();
      seeded = await seedScale(target);
      log(`seeded ${seeded.raw} 10 s points and ${seeded.rolled} rollup points in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      // The fleet rollups (summed over hosts, no host tag), made as users make them: tcplat rollup.
      t = performance.now();
      seeded.fleetSeconds = await fleetRollup();
      log(`made the fleet rollups with tcplat rollup --fleet-only in ${seeded.fleetSeconds.toFixed(1)} s`);
    }
    // InfluxDB compacts what was just written for a while: give it a minute before measuring.
    await sleep(Number(flag('scale-settle-s', '60')) * 1000);
    // Then drop what lies in the future (10 s points and rollups), so that, as in production, the newest
    // data of a chart ending now is the last few seconds, and rollup windows that contain now are partial.
    await core.queryInfluxQL(target, `DELETE FROM /^tcp_connect_hist/ WHERE time > ${Date.now()}ms`, { method: 'POST' });
    const r = await startRenderer(['--cache-mb', '0', '--query-timeout', '120s']);
    try {
      const sc = await scaleFigures(r.base, Number(flag('scale-n', '9')));
      // The same charts from the per-host rollups only (before the fleet rollups), 5 samples each.
      const perHost = await startRenderer(['--cache-mb', '0', '--no-fleet-rollups', '--query-timeout', '120s']);
      try {
        sc.perHost = await scaleFigures(perHost.base, 5);
      } finally {
        await stopRenderer(perHost);
      }
      const noRollups = await startRenderer(['--cache-mb', '0', '--rollups', 'none', '--query-timeout', '120s']);
      try {
        // The same charts from the 10 s data only (what they cost before the rollups), 3 samples each.
        sc.without = await scaleFigures(noRollups.base, 3);
      } finally {
        await stopRenderer(noRollups);
      }
      results.scale = { ...seeded, ...sc };
      console.log('');
      console.log(`scale (uncached heatmap ${W}x${H}, p50 of ${sc.n} interleaved; 1-min load average ${sc.load1.toFixed(1)}):`);
      for (const [k, name] of [
        ['1h', '1 h, one host'],
        ['30d', '30 d, one host'],
        ['7d20', '7 d, a service on 20 hosts'],
      ]) {
        const ratio = k === '1h' ? '' : `  ${(sc[k].p50 / sc['1h'].p50).toFixed(1)}x the 1 h render (target <= 3x: ${sc[k].p50 / sc['1h'].p50 <= 3 ? 'met' : 'MISSED'})`;
        const before = `; per-host rollups only: ${fmt(sc.perHost[k].p50)} = ${(sc.perHost[k].p50 / sc.perHost['1h'].p50).toFixed(1)}x (load ${sc.perHost.load1.toFixed(1)}); 10 s data only: ${fmt(sc.without[k].p50)} = ${(sc.without[k].p50 / sc.without['1h'].p50).toFixed(1)}x (load ${sc.without.load1.toFixed(1)})`;
        console.log(`  ${name.padEnd(28)} ${fmt(sc[k].p50).padStart(10)} (best ${fmt(sc[k].best)}, read ${sc[k].level})${ratio}${before}`);
      }
    } finally {
      await stopRenderer(r);
    }
    if (process.argv.includes('--scale-only')) {
      fs.mkdirSync(path.join(root, 'test-output'), { recursive: true });
      fs.writeFileSync(path.join(root, 'test-output/bench-renderer-scale.json'), JSON.stringify(results, null, 2) + '\n');
      return results.scale.ratio30d <= 3 && results.scale.ratio7d20 <= 3 ? 0 : 1;
    }
  }

  const uncached = await startRenderer(['--cache-mb', '0']);
  try {
    for (let i = 0; i < 5; i++) await timed(heatmapUrl(uncached.base, 1, i)); // warm-up
    // Uncached renders and the seed's design, interleaved request by request, so that load from anything
    // else on the machine weighs on both sides alike.
    const source = influxSource(target, 30_000);
    results.uncached = {};
    results.seed = {};
    for (const rangeH of [1, 6, 24]) {
      const xs = [];
      const seedXs = [];
      const pairs = []; // seed / ours, request by request: robust to load that comes and goes
      let timing = '';
      for (let i = 0; i < N; i++) {
        const r = await timed(heatmapUrl(uncached.base, rangeH, i));
        xs.push(r.ms);
        timing = r.timing;
        if (rangeH !== 6 && i < SEED_N) {
          seedXs.push(await seedDesign(source, rangeH, i));
          pairs.push(seedXs[seedXs.length - 1] / r.ms);
        }
      }
      results.uncached[`${rangeH}h`] = { p50: pct(xs, 0.5), p95: pct(xs, 0.95), n: xs.length, lastServerTiming: timing };
      log(`uncached ${rangeH} h: p50 ${fmt(pct(xs, 0.5))}, p95 ${fmt(pct(xs, 0.95))} (${timing})`);
      if (seedXs.length) {
        results.seed[`${rangeH}h`] = { p50: pct(seedXs, 0.5), p95: pct(seedXs, 0.95), n: seedXs.length, pairedRatioMedian: pct(pairs, 0.5) };
        log(`seed design ${rangeH} h: p50 ${fmt(pct(seedXs, 0.5))}, p95 ${fmt(pct(seedXs, 0.95))}`);
      }
    }

    // 8 concurrent clients, mixed ranges, uncached: every answer must be a PNG.
    {
      const lat = [];
      let errors = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: 8 }, async (_, c) => {
          for (let i = 0; i < 12; i++) {
            try {
              lat.push((await timed(heatmapUrl(uncached.base, [1, 6, 24][(c + i) % 3], 100 + c * 20 + i))).ms);
            } catch (e) {
              errors++;
              log(`concurrent request failed: ${e.message}`);
            }
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      results.concurrent = { clients: 8, requests: 96, errors, p50: pct(lat, 0.5), p95: pct(lat, 0.95), rps: 96 / secs };
      log(`8 clients: ${errors} errors, p50 ${fmt(pct(lat, 0.5))}, p95 ${fmt(pct(lat, 0.95))}, ${(96 / secs).toFixed(1)} renders/s`);
    }

    // RSS over RENDERS uncached renders (service + workers), two at a time.
    {
      const pid = uncached.child.pid;
      const before = treeRssKiB(pid);
      let max = before;
      let done = 0;
      let errors = 0;
      const t0 = performance.now();
      await Promise.all(
        [0, 1].map(async (c) => {
          while (done < RENDERS) {
            const i = done++;
            try {
              await timed(heatmapUrl(uncached.base, 1, 1000 + (i % 500) * 2 + c));
            } catch {
              errors++;
            }
            if (i % 50 === 0) max = Math.max(max, treeRssKiB(pid));
          }
        }),
      );
      const after = treeRssKiB(pid);
      results.rss = { renders: RENDERS, errors, beforeMiB: before / 1024, afterMiB: after / 1024, maxMiB: Math.max(max, after) / 1024, growthPct: ((after - before) / before) * 100, secs: (performance.now() - t0) / 1000 };
      log(`RSS over ${RENDERS} renders: ${(before / 1024).toFixed(1)} -> ${(after / 1024).toFixed(1)} MiB (${results.rss.growthPct.toFixed(1)} %), ${errors} errors`);
    }
  } finally {
    await stopRenderer(uncached);
  }

  const cached = await startRenderer(['--cache-mb', '64']);
  try {
    const url = heatmapUrl(cached.base, 24);
    await timed(url);
    const xs = [];
    for (let i = 0; i < 300; i++) xs.push((await timed(url)).ms);
    results.cached = { p50: pct(xs, 0.5), p95: pct(xs, 0.95), n: xs.length };
    log(`cached 24 h: p50 ${fmt(pct(xs, 0.5))}, p95 ${fmt(pct(xs, 0.95))}`);
  } finally {
    await stopRenderer(cached);
  }

  results.machine.loadavgAtEnd = require('node:os').loadavg()[0];
  const ratio = results.seed['1h'].p50 / results.uncached['1h'].p50;
  const ratio24 = results.seed['24h'].p50 / results.uncached['24h'].p50;
  results.speedup = { '1h': ratio, '24h': ratio24 };
  const ok = {
    speedup: ratio >= 5 && ratio24 >= 5,
    cached: results.cached.p50 <= 10,
    concurrency: results.concurrent.errors === 0,
    rss: results.rss.growthPct <= 10 && results.rss.errors === 0,
  };
  if (results.scale) ok.scale = results.scale.ratio30d <= 3 && results.scale.ratio7d20 <= 3;
  results.targets = ok;
  const rows = [
    ['heatmap 1000x400, service=rails', 'p50', 'p95'],
    ['uncached 1 h', fmt(results.uncached['1h'].p50), fmt(results.uncached['1h'].p95)],
    ['uncached 6 h', fmt(results.uncached['6h'].p50), fmt(results.uncached['6h'].p95)],
    ['uncached 24 h', fmt(results.uncached['24h'].p50), fmt(results.uncached['24h'].p95)],
    ['cached (24 h)', fmt(results.cached.p50), fmt(results.cached.p95)],
    ['8 concurrent clients, mixed', fmt(results.concurrent.p50), fmt(results.concurrent.p95)],
    [`seed design 1 h (spawn python${hasPandas ? ' + pandas' : ', NO pandas'} + pyplot)`, fmt(results.seed['1h'].p50), fmt(results.seed['1h'].p95)],
    [`seed design 24 h`, fmt(results.seed['24h'].p50), fmt(results.seed['24h'].p95)],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  console.log('');
  console.log(`machine: ${results.machine.cpus} cores, 1-min load average ${results.machine.loadavgAtStart.toFixed(1)} at start, ${results.machine.loadavgAtEnd.toFixed(1)} at end (other work on the machine slows both sides)`);
  for (const r of rows) console.log(`${r[0].padEnd(w0)}  ${r[1].padStart(10)}  ${r[2].padStart(10)}`);
  console.log('');
  console.log(`uncached p50 vs seed design: ${ratio.toFixed(1)}x faster at 1 h, ${ratio24.toFixed(1)}x at 24 h  (target >= 5x at 1 h and at 24 h: ${ok.speedup ? 'met' : 'MISSED'})`);
  console.log(`  median of request-by-request ratios (interleaved): ${results.seed['1h'].pairedRatioMedian.toFixed(1)}x at 1 h, ${results.seed['24h'].pairedRatioMedian.toFixed(1)}x at 24 h`);
  console.log(`cached p50 ${fmt(results.cached.p50)}  (target <= 10 ms: ${ok.cached ? 'met' : 'MISSED'})`);
  console.log(`8 concurrent clients: ${results.concurrent.errors} errors of 96, ${results.concurrent.rps.toFixed(1)} renders/s  (target 0 errors: ${ok.concurrency ? 'met' : 'MISSED'})`);
  console.log(
    `RSS over ${results.rss.renders} renders: ${results.rss.beforeMiB.toFixed(1)} -> ${results.rss.afterMiB.toFixed(1)} MiB, ${results.rss.growthPct.toFixed(1)} %, peak ${results.rss.maxMiB.toFixed(1)} MiB  (target <= 10 %: ${ok.rss ? 'met' : 'MISSED'})`,
  );
  fs.mkdirSync(path.join(root, 'test-output'), { recursive: true });
  fs.writeFileSync(path.join(root, 'test-output/bench-renderer.json'), JSON.stringify(results, null, 2) + '\n');
  return Object.values(ok).every(Boolean) ? 0 : 1;
}

if (process.argv.includes('--seed-only')) seed({ version: 1, url: INFLUX, db: DB }).then(() => process.exit(0));
else main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`bench-renderer: ${e.stack ?? e}`);
    process.exit(1);
  },
);
