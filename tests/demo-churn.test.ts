/**
 * `tcplat demo churn` run for real (issue 15, "the churn metrics for the two demo pools"): its local server,
 * two client pools at the same request rate (one reusing 4 connections, one opening a connection per
 * request), the real probe with close events, the real agent, the real InfluxDB 1.6, `tcplat top --once`
 * against the live agent, and the renderer's lifespan PNGs.
 *
 * Ground truth is what the pools themselves counted (requests, connections opened): the stored connects
 * and closed connections must equal it exactly. The churn metrics are computed as the contract between
 * datasource and renderer says (schema-note: new connections/s = ok connects / I; lifespan percentiles of
 * the summed tcp_session_hist buckets; short-lived share from the 1 s bucket bound): the reusing pool shows
 * long lifespans and few connects/s, the churning one lifespans near the request time and connects/s near
 * its requests/s.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantileFromBuckets, queryInfluxQL, SESSION_BUCKET_BOUNDS_MS, SESSION_BUCKET_FIELDS, type InfluxV1Target } from '@tcplat/core';
import { PROBE } from './agent-support';
import { colourMass, decodePng } from './renderer-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith, missingRootEbpf } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const RATE = 40;
const REQUEST_MS = 20;
const DURATION_S = 30;

function missing(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(PROBE)) return `${PROBE} is not built (make -C bpf)`;
  if (!fs.existsSync(path.join(ROOT, 'agent/dist/cli.js')) || !fs.existsSync(path.join(ROOT, 'renderer/dist/cli.js'))) return 'agent and renderer are not built (npx tsc -b pkg/core agent renderer)';
  return null;
}

interface PoolReport {
  requests: number;
  answered: number;
  failed: number;
  connections: number;
  seconds: number;
}

describeWith(missing(), 'tcplat demo churn, for real', () => {
  let db: InfluxV1Target;
  let out: string;
  let stdout = '';
  let stderr = '';
  let code: number | null = null;
  let summary: { from_ms: number; to_ms: number; pools: Record<'reuse-pool' | 'churn-pool', PoolReport>; png: string[] };

  beforeAll(async () => {
    db = await freshDatabase('demochurn');
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-demo-churn-test-'));
    const child = spawn(
      process.execPath,
      [path.join(ROOT, 'bin/tcplat'), 'demo', 'churn', '--influx-url', db.url, '--influx-db', db.db, '--duration', `${DURATION_S}s`, '--rate', String(RATE), '--request-time', `${REQUEST_MS}ms`, '--max-life', '12s', '--out', out],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    code = await new Promise<number | null>((r) => child.on('close', r));
    const line = stdout.split('\n').find((l) => l.startsWith('{"demo":"churn"'));
    if (code !== 0 || !line) throw new Error(`tcplat demo churn exited with ${code}:\n${stdout}\n${stderr}`);
    summary = JSON.parse(line);
  }, 180_000);

  afterAll(async () => {
    if (db) await dropDatabase(db);
    if (out) fs.rmSync(out, { recursive: true, force: true });
  });

  test('progress on stdout, and everything it started is stopped', () => {
    expect(code).toBe(0);
    expect(stdout).toContain('probe attached, close events on');
    expect(stdout).toContain('done: everything the demo started is stopped');
    // No demo process, agent or probe is left behind (their command lines name the demo's temp dir or the client).
    const ps = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        return '';
      }
    });
    expect(ps.filter((c) => c.includes('demo-churn-client.js') || c.includes('tcplat-demo-churn-'))).toEqual([]);
  });

  /** Per service over the run: ok connects, and the summed lifespan histogram of the connections that closed. */
  async function stored(service: string) {
    const where = `WHERE "service" = '${service}' AND time >= ${summary.from_ms}ms AND time < ${summary.to_ms}ms`;
    const [c] = await queryInfluxQL(db, `SELECT sum("count") FROM "tcp_connect_hist" ${where} AND "result" = 'ok'`);
    const fields = SESSION_BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ');
    const [s] = await queryInfluxQL(db, `SELECT sum("count") AS "count", sum("sum_ms") AS "sum_ms", min("min_ms") AS "min_ms", max("max_ms") AS "max_ms", ${fields} FROM "tcp_session_hist" ${where}`);
    const row = s?.[0];
    const at = (name: string) => Number(row?.values[0][row.columns.indexOf(name)] ?? 0);
    const buckets = SESSION_BUCKET_FIELDS.map(at);
    const closed = at('count');
    const under1s = buckets.slice(0, SESSION_BUCKET_BOUNDS_MS.filter((b) => b <= 1000).length).reduce((a, b) => a + b, 0);
    return {
      connects: Number(c?.[0]?.values[0][1] ?? 0),
      closed,
      p50: quantileFromBuckets(buckets, 0.5, at('min_ms'), at('max_ms'), SESSION_BUCKET_BOUNDS_MS),
      p99: quantileFromBuckets(buckets, 0.99, at('min_ms'), at('max_ms'), SESSION_BUCKET_BOUNDS_MS),
      shortShare: closed > 0 ? under1s / closed : NaN,
    };
  }

  test('the churn metrics of the two pools, from what the agent stored, against what the pools counted', async () => {
    const { 'reuse-pool': reuse, 'churn-pool': churn } = summary.pools;
    // Both pools served their requests (the server answers every one).
    for (const p of [reuse, churn]) {
      expect(p.failed).toBe(0);
      expect(p.answered).toBe(p.requests);
      expect(p.requests).toBeGreaterThan(RATE * DURATION_S * 0.9);
    }
    // The churning pool opened one connection per request; the reusing one 4, replaced every ~12 s.
    expect(churn.connections).toBe(churn.requests);
    expect(reuse.connections).toBeLessThanOrEqual(4 * Math.ceil(DURATION_S / (12 * 0.8)));
    const sc = await stored('churn-pool');
    const sr = await stored('reuse-pool');
    // Exact: every connect seen, every connection's end seen (the pools close all theirs before they report).
    expect(sc.connects).toBe(churn.connections);
    expect(sr.connects).toBe(reuse.connections);
    expect(sc.closed).toBe(churn.connections);
    expect(sr.closed).toBe(reuse.connections);
    // new connections/s over the run: the churning pool's equals its requests/s, the reusing pool's is tiny.
    const churnRate = sc.connects / churn.seconds;
    const reqRate = churn.requests / churn.seconds;
    expect(churnRate).toBeCloseTo(reqRate, 6);
    expect(churnRate).toBeGreaterThan(RATE * 0.85);
    expect(sr.connects / reuse.seconds).toBeLessThan(1);
    // Lifespans: the churning pool's near its request time (the server's 20 ms plus a loaded machine's
    // scheduling), all under a second; the reusing pool's in seconds (its connections live ~12 s). Only the
    // ones the run's end closes can be young (a replacement opened just before it): at most the pool's 4.
    expect(sc.p50).toBeGreaterThanOrEqual(REQUEST_MS);
    expect(sc.p50).toBeLessThan(REQUEST_MS * 10);
    expect(sc.p99).toBeLessThan(1000);
    expect(sc.shortShare).toBe(1);
    expect(sr.p50).toBeGreaterThan(5000);
    expect(sr.shortShare * sr.closed).toBeLessThanOrEqual(4);
    expect(sr.shortShare).toBeLessThan(0.5);
  });

  test('tcplat top --once against the live agent: the churn group tells the pools apart', () => {
    const lines = stdout.split('\n');
    expect(lines.some((l) => /^SERVICE +DESTINATION +NEW\/S +CLOSED\/S +OPEN~ +LIFE-P50 +LIFE-P99 +<1S +RESETS$/.test(l))).toBe(true);
    const row = (svc: string) => {
      const l = lines.find((x) => x.startsWith(svc) && /%/.test(x));
      if (!l) throw new Error(`no churn row for ${svc} in:\n${stdout}`);
      const [, dst, newS, closedS, open, p50, p99, short] = l.trim().split(/\s+/);
      return { dst, newS: Number(newS), closedS: Number(closedS), open: Number(open), p50, p99, short };
    };
    const churn = row('churn-pool');
    expect(churn.dst).toBe('demo-api');
    // top's window is 10 s of a loaded machine's summaries: connects/s near the request rate.
    expect(churn.newS).toBeGreaterThan(RATE * 0.7);
    expect(churn.newS).toBeLessThan(RATE * 1.3);
    expect(churn.p50).toMatch(/^\d+(\.\d)?ms$/);
    expect(churn.short).toBe('100%');
    const reuse = row('reuse-pool');
    expect(reuse.newS).toBeLessThan(2);
    expect(reuse.p50).toMatch(/^\d+\.\d\ds$/);
    expect(reuse.short).toBe('0%');
  });

  test('the two lifespan PNGs: the churning pool low on the lifespan axis, the reusing one high', () => {
    expect(summary.png.map((p) => path.basename(p)).sort()).toEqual(['churn-demo-churn-pool.png', 'churn-demo-reuse-pool.png']);
    const [reusePng, churnPng] = ['reuse-pool', 'churn-pool'].map((s) => fs.readFileSync(path.join(out, `churn-demo-${s}.png`)));
    expect(stdout).not.toContain('(no data');
    const w = 900;
    const h = 480;
    const box = { left: 90, right: w - 100, top: 46, bottom: 44 + Math.floor(((h - 84) * 3) / 4) - 10 };
    const r = decodePng(reusePng);
    const c = decodePng(churnPng);
    expect([r.width, r.height, c.width, c.height]).toEqual([w, h, w, h]);
    const rm = colourMass(r, box);
    const cm = colourMass(c, box);
    expect(rm.count).toBeGreaterThan(50);
    expect(cm.count).toBeGreaterThan(50);
    expect(rm.meanRow).toBeLessThan(cm.meanRow - 0.2 * (box.bottom - box.top));
  });
});
