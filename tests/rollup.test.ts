/**
 * Rollups on the real InfluxDB 1.x and 2.x: every level's sums equal the 10 s data's (counts and every
 * bucket exactly, sum_ms within float rounding, min/max exactly), for several hosts, services and results;
 * a backfill after the fact, run twice (idempotent); late points written into an old window after its
 * rollup was made, recomputed by the live job from the writer's delivery marks. The fleet rollups (summed
 * over hosts, no host tag) equal the sum of every host's 10 s data the same way, after a backfill, after
 * late points (`tcplat rollup --fleet-only`), and while `tcplat rollup --fleet-only --follow` runs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FLEET_ROLLUP_WINDOWS, Metrics, ROLLUP_WINDOWS, type InfluxTarget } from '@tcplat/core';
import { chunks, ensureRollupStore, rollupFleetRange, rollupRange, rollupStore, type RollupStore } from '../agent/src/rollup/engine';
import { RollupJob, STATE_FILE } from '../agent/src/rollup/job';
import { main as rollupCli } from '../agent/src/rollup/cli';
import { silentLogger } from '../agent/src/types';
import { tmpDir } from './agent-support';
import { diffSums, expectedSums, LEVELS, seedPoints, storedRollup, writeSeed, type SeedPoint } from './rollup-support';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2 } from './support/influx';
import { describeWith } from './support/prereq';

// Some days ago, inside the rollups' 400 d retention whatever the clock says.
const T0 = Math.floor((Date.now() - 10 * 86_400_000) / 86_400_000) * 86_400_000;
// Not aligned to any rollup window: the engine widens it.
const FROM = T0 + 25 * 60_000 + 20_000;
const TO = T0 + 2 * 3_600_000 + 40 * 60_000;
const HOSTS = ['web-1', 'web-2', 'db proxy,3'];

async function checkAll(store: RollupStore, pts: readonly SeedPoint[], host?: string): Promise<void> {
  for (const w of LEVELS) {
    const stored = await storedRollup(store.rollup, w.name, T0 - 3_600_000, T0 + 6 * 3_600_000);
    const want = expectedSums(pts, w.ms, host);
    expect({ level: w.name, diffs: diffSums(want, stored) }).toEqual({ level: w.name, diffs: [] });
    expect(stored.size).toBeGreaterThan(0);
  }
}

/** The fleet rollups hold the sums over every host of the 10 s data, per service, dst, result (no host tag). */
async function checkFleet(store: RollupStore, pts: readonly SeedPoint[]): Promise<void> {
  for (const name of FLEET_ROLLUP_WINDOWS) {
    const ms = ROLLUP_WINDOWS.find((w) => w.name === name)!.ms;
    const stored = await storedRollup(store.rollup, name, T0 - 3_600_000, T0 + 6 * 3_600_000, true);
    expect({ level: `fleet ${name}`, diffs: diffSums(expectedSums(pts, ms, undefined, true), stored) }).toEqual({ level: `fleet ${name}`, diffs: [] });
    // Fewer series than the per-host rollup: the point of it.
    expect(stored.size).toBeGreaterThan(0);
    expect(stored.size).toBeLessThan(expectedSums(pts, ms).size);
  }
}

async function backfill(store: RollupStore): Promise<number> {
  let points = 0;
  for (const [a, b] of chunks(FROM, TO, 3_600_000)) points += (await rollupRange({ store, fromMs: a, toMs: b })).points;
  return points;
}

async function backfillFleet(store: RollupStore): Promise<number> {
  let points = 0;
  for (const [a, b] of chunks(FROM, TO, 3_600_000)) points += (await rollupFleetRange({ store, fromMs: a, toMs: b, hosts: HOSTS })).points;
  return points;
}

function captureIo(signal?: AbortSignal) {
  const io = { out: '', stderr: { write: (x: string) => ((io.out += x), true) }, stdout: { write: () => true }, signal };
  return io as typeof io & { stderr: NodeJS.WritableStream; stdout: NodeJS.WritableStream };
}

function suite(name: string, missing: () => string | null, target: () => Promise<InfluxTarget>, cleanup: (t: InfluxTarget) => Promise<void>) {
  describeWith(missing(), `rollups on ${name} (real server)`, () => {
    let t: InfluxTarget;
    let store: RollupStore;
    const pts = seedPoints({ fromMs: FROM, toMs: TO, hosts: HOSTS, seed: 14 });

    beforeAll(async () => {
      t = await target();
      store = rollupStore(t);
      await ensureRollupStore(store, { retention: '400d' });
      // History written before any rollup existed.
      await writeSeed(t, pts);
    }, 120_000);
    afterAll(async () => {
      if (t) await cleanup(t);
    });

    test('a backfill after the fact gives every level the exact sums of the 10 s data; running it again changes nothing', async () => {
      const first = await backfill(store);
      await checkAll(store, pts);
      const second = await backfill(store);
      expect(second).toBe(first);
      await checkAll(store, pts);
      // The fleet rollups, from the per-host ones, twice: the same exact sums.
      const fleetFirst = await backfillFleet(store);
      await checkFleet(store, pts);
      expect(await backfillFleet(store)).toBe(fleetFirst);
      await checkFleet(store, pts);
    }, 180_000);

    test('late points written into an old window after its rollup: the live job recomputes that window at every level', async () => {
      await backfill(store);
      // A late point of an existing series and one of a new series, 2 h after the window was rolled up.
      const late = seedPoints({ fromMs: T0 + 40 * 60_000, toMs: T0 + 40 * 60_000 + 10_000, hosts: ['web-1'], seed: 99, density: 1, services: ['api', 'late-svc'] }).map(
        (p) => ({ ...p, timeNs: p.timeNs + 7n }),
      );
      await writeSeed(t, late);
      const all = [...pts, ...late];
      // Before the job runs, the stored rollups are stale: the test would see it.
      const stale = diffSums(expectedSums(all, 60_000), await storedRollup(store.rollup, '1m', T0 - 3_600_000, T0 + 6 * 3_600_000));
      expect(stale.length).toBeGreaterThan(0);

      const dir = tmpDir('rollup-job');
      const job = new RollupJob({ store, host: 'web-1', intervalMs: 3_600_000, dir, log: silentLogger, metrics: new Metrics() });
      // What the writer reports for the delivered batch: the hist lines' windows.
      job.deliveredWindows([T0 + 40 * 60_000]);
      // The state file now names that window, so a crash here would recompute it at the next start.
      expect(JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')).rolledUpToMs).toBe(T0 + 40 * 60_000);
      await job.catchUp();
      expect(job.status()).toMatchObject({ errors: 0, dirty_windows: 0, windows_rolled_up: 1 });
      await checkAll(store, all);
      await job.stop();
      fs.rmSync(dir, { recursive: true, force: true });

      // The fleet rollups are stale until re-summed (no agent writes them) ...
      await backfillFleet(store);
      const lateFleet = seedPoints({ fromMs: T0 + 50 * 60_000, toMs: T0 + 50 * 60_000 + 10_000, hosts: ['web-2'], seed: 98, density: 1, services: ['api'] }).map((p) => ({ ...p, timeNs: p.timeNs + 9n }));
      await writeSeed(t, lateFleet);
      const all2 = [...all, ...lateFleet];
      await rollupRange({ store, fromMs: T0 + 50 * 60_000, toMs: T0 + 51 * 60_000, host: 'web-2' });
      const stale2 = diffSums(expectedSums(all2, 600_000, undefined, true), await storedRollup(store.rollup, '10m', T0 - 3_600_000, T0 + 6 * 3_600_000, true));
      expect(stale2.length).toBeGreaterThan(0);
      // ... by tcplat rollup --fleet-only over the late window: exact again, the late points of both hosts in.
      const io = captureIo();
      const flags = t.version === 1 ? ['--influx-url', t.url, '--influx-db', t.db] : ['--influx-url', t.url, '--influx-org', t.org, '--influx-bucket', t.bucket, '--influx-token', t.token];
      expect(await rollupCli([...flags, '--fleet-only', '--from', String(T0), '--to', String(T0 + 3_600_000), '--chunk', '1h'], io)).toBe(0);
      expect(io.out).toMatch(/chunk 1\/1 .*: \d+ points \(fleet 10m \d+, fleet 1h \d+\)/);
      await checkFleet(store, all2);
    }, 180_000);

    test('tcplat rollup (the CLI, host by host) over history written before any rollup: the same exact sums; the hosts are listed', async () => {
      const t2 = await target();
      try {
        await writeSeed(t2, pts);
        const flags =
          t2.version === 1
            ? ['--influx-url', t2.url, '--influx-db', t2.db]
            : ['--influx-url', t2.url, '--influx-org', t2.org, '--influx-bucket', t2.bucket, '--influx-token', t2.token];
        let stderr = '';
        const io = { stderr: { write: (x: string) => ((stderr += x), true) }, stdout: { write: () => true } } as unknown as { stderr: NodeJS.WritableStream; stdout: NodeJS.WritableStream };
        const code = await rollupCli([...flags, '--to', String(TO), '--chunk', '1h'], io);
        expect([code, stderr]).toEqual([0, expect.stringMatching(/tcp_connect_hist in .* in 3 chunk\(s\) of 1h, 3 host\(s\), into the .*\n(tcp_connect_hist chunk \d\/3 .*\n){3}tcplat rollup: tcp_connect_hist done: \d+ points in 3 chunk\(s\)/s)]);
        // The other rolled-up measurements have no points here: each says so, and the run goes on.
        expect(stderr).toMatch(/no tls_handshake_hist points in .*: nothing to roll up\n.*no tcp_session_hist points in .*: nothing to roll up/s);
        await checkAll(rollupStore(t2), pts);
        await checkFleet(rollupStore(t2), pts);
        expect(stderr).toMatch(/chunk 1\/3 .*\(1m \d+, 10m \d+, 1h \d+, fleet 10m \d+, fleet 1h \d+\)/);
      } finally {
        await cleanup(t2);
      }
    }, 180_000);

    test('tcplat rollup --fleet-only --follow: each round re-sums the recent windows, so a late point of any host reaches the fleet rollups', async () => {
      const t3 = await target();
      const ac = new AbortController();
      try {
        const s3 = rollupStore(t3);
        await ensureRollupStore(s3, { retention: '400d' });
        await writeSeed(t3, pts);
        for (const [a, b] of chunks(FROM, TO, 3_600_000)) await rollupRange({ store: s3, fromMs: a, toMs: b });
        const flags = t3.version === 1 ? ['--influx-url', t3.url, '--influx-db', t3.db] : ['--influx-url', t3.url, '--influx-org', t3.org, '--influx-bucket', t3.bucket, '--influx-token', t3.token];
        const io = captureIo(ac.signal);
        // The data is days old: look back far enough to cover it (in production, the last few hours).
        const lookback = `${Math.ceil((Date.now() - T0) / 3_600_000) + 1}h`;
        const run = rollupCli([...flags, '--fleet-only', '--follow', '1s', '--follow-lookback', lookback], io);
        const rounds = async (n: number) => {
          for (let i = 0; i < 600 && (io.out.match(/follow .* points/g) ?? []).length < n; i++) await new Promise((r) => setTimeout(r, 100));
        };
        await rounds(1);
        await checkFleet(s3, pts);
        // A late point of one host, rolled up per host (what that host's agent does live), then a round.
        const late = seedPoints({ fromMs: T0 + 70 * 60_000, toMs: T0 + 70 * 60_000 + 10_000, hosts: ['web-1'], seed: 97, density: 1, services: ['api'] }).map((p) => ({ ...p, timeNs: p.timeNs + 5n }));
        await writeSeed(t3, late);
        await rollupRange({ store: s3, fromMs: T0 + 70 * 60_000, toMs: T0 + 71 * 60_000, host: 'web-1' });
        const seen = (io.out.match(/follow .* points/g) ?? []).length;
        await rounds(seen + 2);
        ac.abort();
        expect(await run).toBe(0);
        expect(io.out).toMatch(/following: every 1s, the last \d+(\.\d)?h \(fleet rollups only\)[\s\S]*stopped following/);
        expect(io.out).not.toMatch(/failed/);
        await checkFleet(s3, [...pts, ...late]);
      } finally {
        ac.abort();
        await cleanup(t3);
      }
    }, 180_000);
  });
}

suite('InfluxDB 1.x', missingInflux, () => freshDatabase('rollup'), (t) => dropDatabase(t as never));
suite('InfluxDB 2.x', () => missingInflux2(), () => freshBucket('rollup'), async () => undefined);

describeWith(missingInflux2(), 'tcplat rollup retention on InfluxDB 2.x (real server)', () => {
  test('creates the rollup bucket with --retention-rollups; --retention-raw sets the data bucket; an existing rollup bucket changes only when asked', async () => {
    const t = (await freshBucket('retention')) as InfluxTarget & { version: 2 };
    const flags = ['--influx-url', t.url, '--influx-org', t.org, '--influx-bucket', t.bucket, '--influx-token', t.token];
    const retention = async (bucket: string) => {
      const r = (await (await fetch(`${t.url}/api/v2/buckets?org=${t.org}&name=${bucket}`, { headers: { Authorization: `Token ${t.token}` } })).json()) as { buckets: { retentionRules: { everySeconds: number }[] }[] };
      return r.buckets[0].retentionRules[0]?.everySeconds ?? 0;
    };
    let stderr = '';
    const io = { stderr: { write: (x: string) => ((stderr += x), true) }, stdout: { write: () => true } } as unknown as { stderr: NodeJS.WritableStream; stdout: NodeJS.WritableStream };
    expect(await rollupCli([...flags, '--retention-rollups', '30d'], io)).toBe(0);
    expect(stderr).toContain(`created bucket ${t.bucket}_rollups (retention 30d)`);
    expect(stderr).toContain(`no tcp_connect_hist points in InfluxDB 2.x at ${t.url} (org=${t.org} bucket=${t.bucket}): nothing to roll up`);
    expect(await retention(`${t.bucket}_rollups`)).toBe(30 * 86_400);
    expect(await retention(t.bucket)).toBe(0);
    stderr = '';
    expect(await rollupCli([...flags, '--retention-raw', '14d'], io)).toBe(0);
    expect(stderr).toContain(`bucket ${t.bucket}_rollups exists`);
    expect(stderr).toContain(`set bucket ${t.bucket} retention to 14d`);
    expect(await retention(`${t.bucket}_rollups`)).toBe(30 * 86_400);
    expect(await retention(t.bucket)).toBe(14 * 86_400);
    expect(await rollupCli([...flags, '--retention-rollups', '400d'], io)).toBe(0);
    expect(await retention(`${t.bucket}_rollups`)).toBe(400 * 86_400);
  }, 60_000);
});
