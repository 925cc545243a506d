/**
 * Rollups of tls_handshake_hist and tcp_session_hist on the real InfluxDB 1.x and 2.x (issue 14): points in
 * the agent's schema (pkg/core histPoint with the TLS measurement, sessionHistPoint: lifespan buckets,
 * retrans, resets, zero windows; late points stamped window start + k ns as the agent writes them), then
 * - `tcplat rollup` (the CLI) backfills history written before any rollup, its progress naming each
 *   measurement; every level of both holds exactly the sums of the 10 s points (counts, every bucket,
 *   retrans/resets/zero windows exactly, sum_ms within float rounding, min_ms the min, max_ms the max);
 *   run again, the same;
 * - late points written into an old window after its rollup: the live job, told of the delivered batch
 *   (the gzipped line protocol the writer hands it), recomputes that window of both at every level.
 * The expected sums are computed here from the points written, not by the database.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import {
  encodePoint,
  Histogram,
  histPoint,
  MEASUREMENT,
  Metrics,
  ROLLUP_WINDOWS,
  SESSION_BUCKET_FIELDS,
  sessionBucketIndex,
  sessionHistPoint,
  writeLines,
  type InfluxTarget,
  type Point,
  type RollupWindowName,
} from '@tcplat/core';
import { rollupStore } from '../agent/src/rollup/engine';
import { RollupJob } from '../agent/src/rollup/job';
import { main as rollupCli } from '../agent/src/rollup/cli';
import { silentLogger } from '../agent/src/types';
import { tmpDir } from './agent-support';
import { diffSums, rng, storedRollup } from './rollup-support';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2 } from './support/influx';
import { describeWith } from './support/prereq';

const T0 = Math.floor((Date.now() - 9 * 86_400_000) / 86_400_000) * 86_400_000;
const FROM = T0 + 17 * 60_000 + 30_000;
const TO = T0 + 2 * 3_600_000 + 5 * 60_000;
const HOSTS = ['web-1', 'web 2,x'];

/** TLS handshakes and closed sessions per 10 s window, some series with a second (late) point at + k ns. */
function seed(fromMs: number, toMs: number, hosts: string[], seedN: number, density = 0.35, lateNs = 0n): Point[] {
  const r = rng(seedN);
  const out: Point[] = [];
  for (let t = Math.ceil(fromMs / 10_000) * 10_000; t < toMs; t += 10_000)
    for (const host of hosts)
      for (const service of ['api', 'worker'])
        for (const dst of ['pg:5432', '10.0.0.9:443']) {
          const copies = r() < 0.1 ? 2 : 1;
          for (let k = 0; k < copies; k++) {
            const ns = BigInt(t) * 1_000_000n + BigInt(k) + lateNs;
            for (const result of ['ok', 'failed'] as const) {
              if (r() > density) continue;
              const h = new Histogram();
              const n = 1 + Math.floor(r() * 12);
              for (let i = 0; i < n; i++) h.add(result === 'ok' ? 2 + r() ** 2 * 400 : r() * 30);
              out.push(histPoint({ host, service, dst, result }, h, ns, 0, MEASUREMENT.tlsHist));
            }
            if (r() > density) continue;
            const lifespans = Array.from({ length: 1 + Math.floor(r() * 15) }, () => r() ** 4 * 3_600_000);
            const buckets = new Array<number>(SESSION_BUCKET_FIELDS.length).fill(0);
            for (const l of lifespans) buckets[sessionBucketIndex(l)]++;
            const zero = r() < 0.5 ? { zeroWindows: Math.floor(r() * 4) } : {};
            out.push(
              sessionHistPoint(
                { host, service, dst },
                {
                  count: lifespans.length,
                  sumMs: lifespans.reduce((a, b) => a + b, 0),
                  minMs: Math.min(...lifespans),
                  maxMs: Math.max(...lifespans),
                  buckets,
                  retrans: Math.floor(r() * 5),
                  resetsIn: Math.floor(r() * 2),
                  resetsOut: Math.floor(r() * 2),
                  ...zero,
                },
                ns,
              ),
            );
          }
        }
  return out;
}

async function write(t: InfluxTarget, pts: readonly Point[]): Promise<string> {
  const body = pts.map(encodePoint).join('\n') + '\n';
  await writeLines(t, body);
  return body;
}

const key = (tags: Record<string, string | undefined>, ms: number) =>
  JSON.stringify([
    ms,
    Object.entries(tags)
      .filter(([, v]) => v !== undefined && v !== '')
      .sort(),
  ]);

/**
 * What every rollup of `measurement` at `windowMs` must hold: every field of the points summed, but min_ms
 * (the min) and max_ms (the max). Written out here, not taken from ROLLUP_SCHEMAS (which this tests).
 */
function expected(pts: readonly Point[], measurement: string, windowMs: number): Map<string, Record<string, number>> {
  const agg = { get: (f: string) => (f === 'min_ms' ? 'min' : f === 'max_ms' ? 'max' : 'sum') };
  const out = new Map<string, Record<string, number>>();
  for (const p of pts) {
    if (p.measurement !== measurement) continue;
    const ms = Math.floor(Number(BigInt(p.timeNs!) / 1_000_000n) / windowMs) * windowMs;
    const k = key(p.tags as Record<string, string>, ms);
    const s = out.get(k) ?? {};
    for (const [f, raw] of Object.entries(p.fields)) {
      const v = typeof raw === 'object' && raw !== null && 'value' in raw ? Number((raw as { value: unknown }).value) : Number(raw);
      const a = agg.get(f);
      s[f] = s[f] === undefined ? v : a === 'min' ? Math.min(s[f], v) : a === 'max' ? Math.max(s[f], v) : s[f] + v;
    }
    out.set(k, s);
  }
  return out;
}

/** One rollup level of a measurement as stored, keyed like expected(). */
function stored(t: InfluxTarget, measurement: string, w: RollupWindowName): Promise<Map<string, Record<string, number>>> {
  return storedRollup(t, w, T0 - 3_600_000, T0 + 6 * 3_600_000, false, measurement, key);
}

const MEASUREMENTS = [MEASUREMENT.tlsHist, MEASUREMENT.sessionHist] as const;

async function checkAll(t: InfluxTarget, pts: readonly Point[]): Promise<void> {
  for (const m of MEASUREMENTS)
    for (const w of ROLLUP_WINDOWS) {
      const got = await stored(rollupStore(t).rollup, m, w.name);
      expect({ m, level: w.name, diffs: diffSums(expected(pts, m, w.ms), got, { extraFields: true }) }).toEqual({ m, level: w.name, diffs: [] });
      expect(got.size).toBeGreaterThan(0);
    }
}

function suite(name: string, missing: () => string | null, target: () => Promise<InfluxTarget>, cleanup: (t: InfluxTarget) => Promise<void>) {
  describeWith(missing(), `rollups of tls_handshake_hist and tcp_session_hist on ${name} (real server)`, () => {
    let t: InfluxTarget;
    const pts = seed(FROM, TO, HOSTS, 16);
    afterAll(async () => {
      if (t) await cleanup(t);
    });

    test('tcplat rollup backfills both, naming each in its progress; every level holds the exact sums (min/max kept); again: the same; late points: the live job recomputes their window', async () => {
      t = await target();
      await write(t, pts);
      // Both measurements really carry what the rollups must keep apart and add up.
      expect(pts.some((p) => p.measurement === MEASUREMENT.sessionHist && 'zero_windows' in p.fields)).toBe(true);
      expect(pts.some((p) => p.measurement === MEASUREMENT.tlsHist && p.tags?.result === 'failed')).toBe(true);
      const flags = t.version === 1 ? ['--influx-url', t.url, '--influx-db', t.db] : ['--influx-url', t.url, '--influx-org', t.org, '--influx-bucket', t.bucket, '--influx-token', t.token];
      let stderr = '';
      const io = { stderr: { write: (x: string) => ((stderr += x), true) }, stdout: { write: () => true } } as unknown as { stderr: NodeJS.WritableStream; stdout: NodeJS.WritableStream };
      const args = [...flags, '--to', String(TO), '--chunk', '1h'];
      expect(await rollupCli(args, io)).toBe(0);
      for (const m of MEASUREMENTS) {
        expect(stderr).toMatch(new RegExp(`${m} in .*: .* in 3 chunk\\(s\\) of 1h, 2 host\\(s\\)`));
        expect(stderr).toMatch(new RegExp(`${m} chunk 3/3 .*: \\d+ points \\(1m \\d+, 10m \\d+, 1h \\d+\\)`));
        expect(stderr).toMatch(new RegExp(`${m} done: \\d+ points in 3 chunk\\(s\\)`));
      }
      expect(stderr).toContain(`no tcp_connect_hist points in`);
      await checkAll(t, pts);
      const firstRun = stderr.match(/done: \d+ points/g);
      stderr = '';
      expect(await rollupCli(args, io)).toBe(0);
      expect(stderr.match(/done: \d+ points/g)).toEqual(firstRun);
      await checkAll(t, pts);

      // Late points of web-1 into an old window, rolled up hours ago: stale until the live job runs.
      const lateFrom = T0 + 40 * 60_000;
      const late = seed(lateFrom, lateFrom + 10_000, ['web-1'], 61, 1, 7n);
      const body = await write(t, late);
      const all = [...pts, ...late];
      expect(diffSums(expected(all, MEASUREMENT.sessionHist, 60_000), await stored(rollupStore(t).rollup, MEASUREMENT.sessionHist, '1m'), { extraFields: true }).length).toBeGreaterThan(0);
      const dir = tmpDir('rollup-more');
      const job = new RollupJob({ store: rollupStore(t), host: 'web-1', intervalMs: 3_600_000, dir, log: silentLogger, metrics: new Metrics() });
      // What the writer hands it once InfluxDB accepted the batch: the gzipped lines (no tcp_connect_hist in it).
      await job.delivered({ payload: zlib.gzipSync(body) } as never);
      expect(job.dirtyWindows).toBe(1);
      await job.catchUp();
      expect(job.status()).toMatchObject({ errors: 0, dirty_windows: 0, windows_rolled_up: 1 });
      await checkAll(t, all);

      // A batch with only tcp_session_hist lines marks only that measurement: the job recomputes its rollups
      // and reads nothing of the others (a tls_handshake_hist point written behind its back into the same
      // window stays out of the rollups until a batch of tls lines marks it).
      const w2 = T0 + 100 * 60_000;
      const sessionOnly = seed(w2, w2 + 10_000, ['web-1'], 62, 1, 9n).filter((p) => p.measurement === MEASUREMENT.sessionHist);
      const tlsBehind = seed(w2, w2 + 10_000, ['web-1'], 63, 1, 11n).filter((p) => p.measurement === MEASUREMENT.tlsHist);
      expect(sessionOnly.length).toBeGreaterThan(0);
      expect(tlsBehind.length).toBeGreaterThan(0);
      const sessionBody = await write(t, sessionOnly);
      const tlsBody = await write(t, tlsBehind);
      const all2 = [...all, ...sessionOnly, ...tlsBehind];
      await job.delivered({ payload: zlib.gzipSync(sessionBody) } as never);
      await job.catchUp();
      expect(diffSums(expected(all2, MEASUREMENT.sessionHist, 60_000), await stored(rollupStore(t).rollup, MEASUREMENT.sessionHist, '1m'), { extraFields: true })).toEqual([]);
      expect(diffSums(expected(all2, MEASUREMENT.tlsHist, 60_000), await stored(rollupStore(t).rollup, MEASUREMENT.tlsHist, '1m'), { extraFields: true }).length).toBeGreaterThan(0);
      await job.delivered({ payload: zlib.gzipSync(tlsBody) } as never);
      await job.catchUp();
      await checkAll(t, all2);
      await job.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }, 240_000);
  });
}

suite('InfluxDB 1.x', missingInflux, () => freshDatabase('rollupmore'), (t) => dropDatabase(t as never));
suite('InfluxDB 2.x', () => missingInflux2(), () => freshBucket('rollupmore'), async () => undefined);
