/**
 * The live rollup job (agent/src/rollup/job.ts) under faults in random order, on the real InfluxDB 1.x:
 * random sequences of deliveries into random windows of the last 5 h (InfluxDB stores the points, then the
 * writer's hook marks them), deliveries cut by a crash between InfluxDB's answer and the hook (the batch
 * is then still in the spool and delivered again after the restart, as the spool guarantees), runs,
 * InfluxDB unreachable for the job (its URL pointed at a closed port: real connection refusals) and
 * back, crashes (the job object abandoned, nothing saved), graceful stops, restarts from the state file.
 * At the end InfluxDB is reachable, the job restarts and catches up: every rollup level must equal the
 * 10 s data exactly, whatever happened before. Windows older than the 2 h default catch-up are the point:
 * only the state file can bring them back.
 *
 * fast-check: seeded (TCPLAT_SEED, printed on failure) and shrinking; TCPLAT_MODEL_RUNS for more runs.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { encodePoint, Histogram, histPoint, Metrics, ROLLUP_RP, writeLines, type InfluxV1Target } from '@tcplat/core';
import { rollupStore, type RollupStore } from '../agent/src/rollup/engine';
import { RollupJob } from '../agent/src/rollup/job';
import { silentLogger } from '../agent/src/types';
import { tmpDir } from './agent-support';
import { diffSums, expectedFromStored, LEVELS, stored10s, storedRollup } from './rollup-support';
import { freePort } from './support/net';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';

const M = 60_000;

type Step =
  | { op: 'deliver'; minute: number; slot: number; n: number }
  | { op: 'deliverCrash'; minute: number; slot: number; n: number }
  | { op: 'run' }
  | { op: 'down' }
  | { op: 'up' }
  | { op: 'crash' }
  | { op: 'stop' };

/** Minutes back from the base: 0..299 (5 h), so about 60 % lie beyond the 2 h default catch-up. */
const minuteArb = fc.integer({ min: 1, max: 300 });
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('deliver' as const), minute: minuteArb, slot: fc.integer({ min: 0, max: 5 }), n: fc.integer({ min: 1, max: 9 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('deliverCrash' as const), minute: minuteArb, slot: fc.integer({ min: 0, max: 5 }), n: fc.integer({ min: 1, max: 9 }) }) },
  { weight: 3, arbitrary: fc.constant({ op: 'run' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'down' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'up' as const }) },
  { weight: 2, arbitrary: fc.constant({ op: 'crash' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'stop' as const }) },
);

describeWith(missingInflux(), 'live rollups under faults in random order (real InfluxDB 1.x)', () => {
  test('after any sequence of deliveries, runs, outages, crashes and restarts, the caught-up rollups equal the 10 s data', async () => {
    const seed = Number(process.env.TCPLAT_SEED ?? 20261214);
    const runs = Number(process.env.TCPLAT_MODEL_RUNS ?? 8);
    const closed = `http://127.0.0.1:${await freePort()}`;
    const seen = { oldWindows: 0, crashes: 0, failedRuns: 0, redelivered: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 3, maxLength: 18 }), async (steps) => {
        const db: InfluxV1Target = await freshDatabase('rollupmodel');
        const dir = tmpDir('rollup-model');
        const base = Math.floor(Date.now() / M) * M;
        let seq = 0;
        try {
          const real = db.url;
          const store: RollupStore = rollupStore({ ...db });
          const newJob = () => {
            const j = new RollupJob({ store, host: 'h', intervalMs: 3_600_000, dir, log: silentLogger, metrics: new Metrics() });
            j.load();
            return j;
          };
          let job = newJob();
          /** Batches InfluxDB stored whose hook never ran: still in the spool, delivered again after a restart. */
          let unacked: string[] = [];
          const write = async (s: { minute: number; slot: number; n: number }): Promise<string> => {
            const h = new Histogram();
            for (let i = 0; i < s.n; i++) h.add(0.05 * (i + 1) * (s.minute % 7 + 1));
            const t = BigInt(base - s.minute * M + s.slot * 10_000) * 1_000_000n + BigInt(++seq);
            const line = encodePoint(histPoint({ host: 'h', service: `svc${s.minute % 3}`, dst: 'pg:5432', result: s.n > 7 ? 'timeout' : 'ok' }, h, t));
            await writeLines(db, line + '\n');
            if (s.minute > 120) seen.oldWindows++;
            return line;
          };
          const deliver = (line: string) => job.deliveredWindows([Math.floor(Number(BigInt(line.slice(line.lastIndexOf(' ') + 1)) / 1_000_000n) / M) * M]);
          const restart = () => {
            job = newJob();
            for (const l of unacked) deliver(l);
            seen.redelivered += unacked.length;
            unacked = [];
          };
          for (const s of steps) {
            switch (s.op) {
              case 'deliver':
                deliver(await write(s));
                break;
              case 'deliverCrash':
                unacked.push(await write(s));
                seen.crashes++;
                restart();
                break;
              case 'run': {
                const before = job.errors.value;
                await job.run();
                if (job.errors.value > before) seen.failedRuns++;
                break;
              }
              case 'down':
                store.source.url = closed;
                store.rollup.url = closed;
                break;
              case 'up':
                store.source.url = real;
                store.rollup.url = real;
                break;
              case 'crash':
                seen.crashes++;
                restart();
                break;
              case 'stop':
                await job.stop();
                restart();
                break;
            }
          }
          store.source.url = real;
          store.rollup.url = real;
          restart();
          await job.catchUp();
          expect(job.status()).toMatchObject({ dirty_windows: 0, last_error: null });
          const tenS = await stored10s(db);
          for (const w of LEVELS) {
            const got = await storedRollup({ ...db, rp: ROLLUP_RP }, w.name, 0, base + 86_400_000).catch(() => new Map());
            expect({ level: w.name, diffs: diffSums(expectedFromStored(tenS, w.ms), got) }).toEqual({ level: w.name, diffs: [] });
          }
        } finally {
          await dropDatabase(db).catch(() => undefined);
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      { seed, numRuns: runs, endOnFailure: false, verbose: true },
    );
    // The faults this test is about happened.
    expect(seen.oldWindows).toBeGreaterThan(0);
    expect(seen.crashes).toBeGreaterThan(0);
    expect(seen.failedRuns).toBeGreaterThan(0);
    expect(seen.redelivered).toBeGreaterThan(0);
  }, 600_000);
});
