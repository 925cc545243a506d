#!/usr/bin/env node
'use strict';
/**
 * Storage per host per day of raw points, 10 s histograms and each rollup, measured on the real InfluxDB 1.x
 * (Debian's influxd, a private one started here with snapshots and full compactions after 1 s of quiet, so
 * the TSM files on disk are what a day of data settles to).
 *
 * One host, one day, in the agent's schema: `--series` histogram series (service x dst x result) with a
 * point in a 10 s window with probability `--density`, each holding the events of that window; raw
 * tcp_connect points at `--raw-rate` per second. Each kind goes into a database of its own so `du` of its
 * shard directory is its size; the rollups are made by the agent's engine (agent/src/rollup/engine.ts),
 * then each level is copied into its own database with SELECT INTO (tags kept with GROUP BY *).
 *
 * `--measurement tcp_session_hist` (or tls_handshake_hist) measures that histogram and its rollups instead
 * (tcp_session_hist: one series per service x dst, lifespans, retrans and resets); `--raw-rate 0` skips raw.
 *
 *   node scripts/rollup-storage.js [--series 60] [--density 0.7] [--raw-rate 5] [--seed 1] [--measurement M]
 * Needs `npm run build` (agent/dist, pkg/core/dist). Prints a table (bytes on disk, points, bytes/point,
 * per host per day).
 */
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const net = require('node:net');

const root = path.resolve(__dirname, '..');
const core = require(path.join(root, 'pkg/core/dist/index.js'));
const engine = require(path.join(root, 'agent/dist/rollup/engine.js'));

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const SERIES = opt('series', 60);
const DENSITY = opt('density', 0.7);
const RAW_RATE = opt('raw-rate', 5);
const SEED = opt('seed', 1);
const DAY = 86_400_000;
const MEASUREMENT = (() => {
  const i = args.indexOf('--measurement');
  const m = i >= 0 ? args[i + 1] : core.MEASUREMENT.connectHist;
  if (!core.ROLLED_UP_MEASUREMENTS.includes(m)) {
    console.error(`rollup-storage: --measurement: one of ${core.ROLLED_UP_MEASUREMENTS.join(', ')}`);
    process.exit(2);
  }
  return m;
})();

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });

const du = (dir) => (fs.existsSync(dir) ? Number(execFileSync('du', ['-sb', dir]).toString().split('\t')[0]) : 0);

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-rollup-storage-'));
  const port = await freePort();
  const rpc = await freePort();
  fs.writeFileSync(
    path.join(dir, 'influxdb.conf'),
    `reporting-disabled = true
bind-address = "127.0.0.1:${rpc}"
[meta]
  dir = "${dir}/meta"
[data]
  dir = "${dir}/data"
  wal-dir = "${dir}/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "1s"
  compact-full-write-cold-duration = "1s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:${port}"
  log-enabled = false
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
`,
  );
  const influxd = spawn('influxd', ['-config', path.join(dir, 'influxdb.conf')], { stdio: ['ignore', 'ignore', fs.openSync(path.join(dir, 'influxd.log'), 'a')] });
  const url = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${url}/ping`)).ok) break;
      } catch {
        /* starting */
      }
      if (i > 150) throw new Error(`influxd did not start (log: ${dir}/influxd.log)`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const t = (db) => ({ version: 1, url, db });
    const q = (db, text) => core.queryInfluxQL(t(db), text, { method: 'POST' });
    for (const db of ['raw', 'hist10s', 'r1m', 'r10m', 'r1h']) await q('', `CREATE DATABASE ${db}`);
    const r = rng(SEED);
    const day0 = Math.floor((Date.now() - 3 * DAY) / DAY) * DAY;
    const services = Array.from({ length: Math.max(1, Math.round(SERIES / 6)) }, (_, i) => `svc-${i}`);
    const series = [];
    for (const service of services) for (const dst of ['10.0.3.17:5432', 'redis.internal:6379']) for (const result of ['ok', 'refused', 'timeout']) series.push({ host: 'node-1', service, dst, result });
    series.length = Math.min(series.length, SERIES);
    const session = MEASUREMENT === core.MEASUREMENT.sessionHist;
    // tcp_session_hist has no result tag: one series per service x dst.
    const histSeries = session ? series.filter((x) => x.result === 'ok').map(({ host, service, dst }) => ({ host, service, dst, result: 'ok' })) : series;

    // 10 s histograms.
    let lines = [];
    let histPoints = 0;
    const flush = async (db) => {
      if (lines.length) await core.writeLines(t(db), lines.join('\n') + '\n');
      lines = [];
    };
    for (let w = day0; w < day0 + DAY; w += 10_000) {
      for (const s of histSeries) {
        if (r() > (s.result === 'ok' ? DENSITY : DENSITY / 4)) continue;
        const n = 1 + Math.floor(r() * 8);
        if (session) {
          const lifespans = Array.from({ length: n }, () => Math.exp(Math.log(5) + r() * 12));
          const buckets = new Array(core.SESSION_BUCKET_COUNT).fill(0);
          for (const l of lifespans) buckets[core.sessionBucketIndex(l)]++;
          const h = { count: n, sumMs: lifespans.reduce((a, b) => a + b, 0), minMs: Math.min(...lifespans), maxMs: Math.max(...lifespans), buckets, retrans: Math.floor(r() * 3), resetsIn: r() < 0.1 ? 1 : 0, resetsOut: 0 };
          lines.push(core.encodePoint(core.sessionHistPoint({ host: s.host, service: s.service, dst: s.dst }, h, BigInt(w) * 1_000_000n + 1_000_000n)));
        } else {
          const h = new core.Histogram();
          for (let i = 0; i < n; i++) h.add(s.result === 'timeout' ? 1000 + r() * 2000 : Math.exp(Math.log(0.4) + r() * 2.5));
          lines.push(core.encodePoint(core.histPoint(s, h, BigInt(w) * 1_000_000n + 1_000_000n, r() < 0.05 ? 1 : 0, MEASUREMENT === core.MEASUREMENT.tlsHist ? MEASUREMENT : core.MEASUREMENT.connectHist)));
        }
        histPoints++;
        if (lines.length >= 5000) await flush('hist10s');
      }
    }
    await flush('hist10s');

    // Raw points.
    let rawPoints = 0;
    const stepNs = RAW_RATE > 0 ? BigInt(Math.round(1e9 / RAW_RATE)) : 0n;
    for (let ns = BigInt(day0) * 1_000_000n; stepNs > 0n && ns < BigInt(day0 + DAY) * 1_000_000n; ns += stepNs) {
      const s = series[Math.floor(r() * series.length)];
      lines.push(
        core.connectLine({ ...s, comm: 'ruby', family: 'ipv4', latencyNs: Math.round(Math.exp(Math.log(0.4) + r() * 2.5) * 1e6), synRetrans: 0, pid: 1000 + Math.floor(r() * 50), sport: 30000 + Math.floor(r() * 30000), timeNs: ns + BigInt(Math.floor(r() * 1000)) }),
      );
      rawPoints++;
      if (lines.length >= 5000) await flush('raw');
    }
    await flush('raw');

    // Rollups, by the engine, then each level into its own database.
    const store = engine.rollupStore(t('hist10s'));
    await engine.ensureRollupStore(store, { retention: '0' });
    const counts = {};
    for (const [a, b] of engine.chunks(day0, day0 + DAY, 6 * 3_600_000)) {
      const res = await engine.rollupRange({ store, measurement: MEASUREMENT, fromMs: a, toMs: b });
      for (const l of res.levels) counts[l.window] = (counts[l.window] ?? 0) + l.points;
    }
    for (const w of core.ROLLUP_WINDOWS) {
      const m = core.rollupMeasurement(MEASUREMENT, w.name);
      await q('hist10s', `SELECT * INTO "r${w.name}"."autogen"."${m}" FROM "hist10s"."${core.ROLLUP_RP}"."${m}" GROUP BY *`);
    }
    // Let snapshots and full compactions settle: sizes stop moving.
    let last = '';
    for (let i = 0; i < 120; i++) {
      await new Promise((res) => setTimeout(res, 2000));
      const now = ['raw', 'hist10s', 'r1m', 'r10m', 'r1h'].map((db) => du(path.join(dir, 'data', db, 'autogen'))).join(',');
      const wal = du(path.join(dir, 'wal'));
      if (now === last && wal < 200_000) break;
      last = now;
    }
    const rows = [
      ...(rawPoints > 0 ? [['raw tcp_connect', 'raw', rawPoints, `${RAW_RATE}/s`]] : []),
      [`${MEASUREMENT} (10 s)`, 'hist10s', histPoints, `${histSeries.length} series`],
      ...core.ROLLUP_WINDOWS.map((w) => [core.rollupMeasurement(MEASUREMENT, w.name), `r${w.name}`, counts[w.name], '']),
    ];
    const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
    console.log(`InfluxDB 1.x (${execFileSync('influxd', ['version']).toString().trim()}), one host, one day; load average ${load}`);
    console.log('| data | points per day | bytes on disk (TSM) | bytes/point | per host per day |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const [name, db, points, note] of rows) {
      const bytes = du(path.join(dir, 'data', db, 'autogen'));
      const mb = bytes / 1e6;
      console.log(`| ${name}${note ? ` (${note})` : ''} | ${points} | ${bytes} | ${(bytes / points).toFixed(1)} | ${mb >= 1 ? mb.toFixed(1) + ' MB' : (bytes / 1e3).toFixed(0) + ' kB'} |`);
    }
  } finally {
    influxd.kill('SIGTERM');
    await new Promise((res) => influxd.on('exit', res));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`rollup-storage: ${e.message}`);
  process.exit(1);
});
