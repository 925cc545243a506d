#!/usr/bin/env node
'use strict';
/**
 * What the lifespan chart (issue 15) costs against the connect heatmap on the same amount of data, in one
 * run, interleaved: 25 h of 10 s tcp_session_hist and tcp_connect_hist points of 4 series (2 services x
 * 2 destinations) and the rollups of both (as the agent makes them), the renderer started by bin/tcplat
 * (--cache-mb 0, 2 workers), then uncached p50/p95 of heatmap.png and lifespan.png at 1 h and 24 h (both read
 * the 10 min rollups at 24 h), with the ratio lifespan / heatmap and the load average at the start and end.
 * --no-session-rollups writes tcp_connect_hist's rollups only: the lifespans then read the 10 s data, as
 * before tcp_session_hist was rolled up (the baseline).
 * Usage: node renderer/bench/bench-lifespan.js --influx-url URL [--n 15] [--no-session-rollups]
 */
const { spawn } = require('node:child_process');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const core = require(path.join(root, 'pkg/core/dist'));

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const INFLUX = arg('influx-url');
if (!INFLUX) {
  console.error('bench-lifespan: --influx-url is required (e.g. $(scripts/influxdb1 start /tmp/x))');
  process.exit(2);
}
const N = Number(arg('n', '15'));
const SESSION_ROLLUPS = !process.argv.includes('--no-session-rollups');
const DB = 'bench_lifespan';
const W = 10_000;
const HOUR = 3_600_000;
const END = Math.floor(Date.now() / W) * W;
const START = END - 25 * HOUR;
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
const pct = (xs, q) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)];

async function seed(target) {
  await core.queryInfluxQL({ ...target, db: '' }, `CREATE DATABASE ${core.quote('influxql-ident', DB)}`, { method: 'POST' });
  await core.queryInfluxQL({ ...target, db: '' }, `CREATE RETENTION POLICY ${core.quote('influxql-ident', core.ROLLUP_RP)} ON ${core.quote('influxql-ident', DB)} DURATION INF REPLICATION 1`, { method: 'POST' });
  const points = [];
  let x = 7;
  const r = () => (x = (x * 16807) % 2147483647) / 2147483647;
  for (let t = START; t < END; t += W) {
    const ns = BigInt(t) * 1_000_000n;
    for (const service of ['rails', 'nest']) {
      for (const dst of ['pg:5432', 'api:443']) {
        const life = service === 'rails' ? () => 15 + 30 * r() : () => 20_000 + 600_000 * r();
        const n = service === 'rails' ? 40 : 2;
        const buckets = new Array(core.SESSION_BUCKET_COUNT).fill(0);
        let sum = 0;
        let min = Infinity;
        let max = -Infinity;
        const h = new core.Histogram();
        for (let i = 0; i < n; i++) {
          const l = life();
          buckets[core.sessionBucketIndex(l)]++;
          sum += l;
          min = Math.min(min, l);
          max = Math.max(max, l);
          h.add(0.1 + 0.2 * r());
        }
        points.push(core.sessionHistPoint({ host: 'h1', service, dst }, { count: n, sumMs: sum, minMs: min, maxMs: max, buckets, retrans: 0, resetsIn: 0, resetsOut: 0 }, ns));
        points.push(core.histPoint({ host: 'h1', service, dst, result: 'ok' }, h, ns));
      }
    }
  }
  const write = async (t, ps) => {
    for (let i = 0; i < ps.length; i += 5000) await core.writeLines(t, core.encodePoints(ps.slice(i, i + 5000)));
  };
  await write(target, points);
  const rolled = SESSION_ROLLUPS ? points : points.filter((p) => p.measurement === core.MEASUREMENT.connectHist);
  await write({ ...target, rp: core.ROLLUP_RP }, core.ROLLUP_WINDOWS.flatMap((w) => core.rollupHistPoints(rolled, w.name)));
  return points.length;
}

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function main() {
  const target = { version: 1, url: INFLUX, db: DB };
  console.error(`bench-lifespan: seeding (load ${load()})`);
  const n = await seed(target);
  console.error(`bench-lifespan: ${n} points written`);
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(root, 'bin/tcplat'), 'renderer', '--influx-url', INFLUX, '--influx-db', DB, '--listen', `127.0.0.1:${port}`, '--cache-mb', '0', '--workers', '2', '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; i < 150; i++) {
      try {
        if ((await fetch(`${base}/healthz`)).ok) break;
      } catch {
        /* starting */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const cases = [];
    for (const range of [HOUR, 24 * HOUR]) for (const route of ['heatmap', 'lifespan']) cases.push({ route, range, ms: [], level: '' });
    const startLoad = load();
    // Warm-up, then interleaved rounds: each round renders every case once, so load changes hit all alike.
    for (let round = -1; round < N; round++) {
      for (const c of cases) {
        const from = END - c.range;
        const qs = `service=rails&from=${from}&to=${END}&width=1000&height=${c.route === 'lifespan' ? 500 : 400}${c.route === 'heatmap' ? '&overlay=p50,p99' : ''}`;
        const t0 = performance.now();
        const res = await fetch(`${base}/render/${c.route}.png?${qs}`);
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`${c.route}: HTTP ${res.status}`);
        if (round >= 0) c.ms.push(performance.now() - t0);
        c.level = res.headers.get('x-tcplat-resolution') ?? '';
      }
    }
    const out = [];
    for (const c of cases) out.push({ route: `${c.route}.png`, range_h: c.range / HOUR, level: c.level, p50_ms: +pct(c.ms, 0.5).toFixed(1), p95_ms: +pct(c.ms, 0.95).toFixed(1) });
    for (const o of out) {
      const h = out.find((x) => x.route === 'heatmap.png' && x.range_h === o.range_h);
      o.ratio_p50_vs_heatmap = +(o.p50_ms / h.p50_ms).toFixed(2);
    }
    console.table(out);
    console.log(JSON.stringify({ n: N, session_rollups: SESSION_ROLLUPS, load_start: startLoad, load_end: load(), results: out }));
  } finally {
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    await core.queryInfluxQL({ ...target, db: '' }, `DROP DATABASE ${core.quote('influxql-ident', DB)}`, { method: 'POST' }).catch(() => {});
  }
}

main().catch((e) => {
  console.error(`bench-lifespan: ${e.message}`);
  process.exit(1);
});
