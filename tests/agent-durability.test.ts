/**
 * The spool's promises, end to end with the real `tcplat agent` and a private real InfluxDB 1.x
 * (scripts/influxdb1; it gets SIGSTOPped):
 * - issue 17's restart sequence: a drained stop, InfluxDB hangs, 120 events, a stop that leaves them
 *   spooled, a restart after InfluxDB resumes: all 120 arrive;
 * - one owner per spool directory: a second agent or an import on it is refused, naming the holder's pid;
 *   an import without --spool-dir uses its own directory;
 * - a real full disk (a tmpfs filled to ENOSPC) in the middle of the stream, then space freed: the agent
 *   keeps running, stores what it held, survives a SIGKILL after that, and everything arrives;
 * - >= 20 SIGKILLs of a live agent fed by a generator source at random moments while InfluxDB is stopped
 *   and resumed at random moments: every event exactly once in raw points and in histograms.
 * The random choices come from a seeded generator (TCPLAT_SEED), printed when a test fails.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MEASUREMENT, queryInfluxQL, type InfluxV1Target } from '@tcplat/core';
import { describeWith } from './support/prereq';
import { agentArgs, buildAgent, probeLine, ROOT, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type AgentStatus, type RunningAgent } from './agent-support';

function missing(): string | null {
  try {
    execFileSync('influxd', ['version'], { stdio: 'ignore' });
  } catch {
    return "influxd not installed (run 'sudo scripts/setup')";
  }
  if (process.getuid?.() !== 0) return 'needs root (mounts a tmpfs)';
  return null;
}

const W = 10_000_000_000n;
const T0 = (BigInt(Date.UTC(2026, 0, 3)) * 1_000_000n) / W * W;

/** `count` probe events numbered from `first` (unique sport and time), 10 ms apart in event time. */
function capture(file: string, first: number, count: number): void {
  const lines: string[] = [];
  for (let i = first; i < first + count; i++) {
    lines.push(probeLine({ tsNs: T0 + BigInt(i) * 10_000_000n + BigInt(i % 7), sport: 1000 + (i % 60000), pid: 100 + Math.floor(i / 60000), comm: i % 2 ? 'ruby' : 'node', result: i % 5 ? 'ok' : 'refused' }));
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

/** mulberry32: small, seeded, good enough to pick moments. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The source prints its capture(s), then stays alive (an empty line now and then) until the agent dies. */
const keepAlive = (files: string[]) => `${files.map((f) => `cat ${f}; `).join('')}while sleep 0.2; do echo; done`;

/** Every event read so far is in the spool (stored or held), nothing waits in memory. */
const spooled = (n: number) => (s: AgentStatus) =>
  s.pipeline.stages.parse.emitted >= n && s.pipeline.pending_events === 0 && s.pipeline.batch_lines === 0 && (s.spool.appending ?? 0) === 0;

describeWith(missing(), 'agent durability: restarts, ownership, full disk, SIGKILL loop', () => {
  let dir: string;
  let influxPid = 0;
  let url = '';
  const agents: RunningAgent[] = [];
  const seed = Number(process.env.TCPLAT_SEED ?? 17);
  let dbNo = 0;

  async function freshDb(): Promise<InfluxV1Target> {
    const db: InfluxV1Target = { version: 1, url, db: `durability_${dbNo++}` };
    await queryInfluxQL({ ...db, db: '' }, `CREATE DATABASE ${db.db}`, { method: 'POST' });
    return db;
  }
  const counts = async (db: InfluxV1Target) => ({
    raw: await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`),
    distinct: await scalar(db, `SELECT count(DISTINCT(sport)) FROM ${MEASUREMENT.connect}`),
    hist: await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`),
  });
  const influx = (sig: 'SIGSTOP' | 'SIGCONT') => process.kill(influxPid, sig);
  const start = async (args: string[]) => {
    const a = await startAgent(args);
    agents.push(a);
    return a;
  };

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-durability');
    url = execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['start', path.join(dir, 'influxdb')], { encoding: 'utf8' }).trim();
    influxPid = Number(fs.readFileSync(path.join(dir, 'influxdb', 'influxd.pid'), 'utf8'));
  }, 120_000);

  afterEach(() => {
    try {
      influx('SIGCONT');
    } catch {
      /* gone */
    }
  });

  afterAll(async () => {
    for (const a of agents) await a.kill9().catch(() => undefined);
    try {
      influx('SIGCONT');
    } catch {
      /* gone */
    }
    execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['stop', path.join(dir, 'influxdb')]);
    for (const m of fs.readdirSync(dir)) {
      try {
        execFileSync('umount', ['-l', path.join(dir, m)], { stdio: 'ignore' });
      } catch {
        /* not a mount */
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  test("issue 17's restart sequence: a drained stop, then 120 events spooled over a stop, all arrive after the next start", async () => {
    const db = await freshDb();
    const spool = path.join(dir, 'spool-restart');
    const warm = path.join(dir, 'warm.ndjson');
    const ev = path.join(dir, 'ev120.ndjson');
    capture(warm, 0, 5);
    capture(ev, 100, 120);
    // 1. Run and stop cleanly with the spool drained.
    const a1 = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([warm]), '--flush-interval', '200ms']));
    await waitFor(async () => spooled(5)(await a1.status()) && (await a1.status()).spool.lines === 0, 30_000, 'the first run to deliver its 5 events');
    expect(await a1.stop()).toBe(0);
    // 2. InfluxDB hangs; 120 events; a stop that cannot deliver them.
    influx('SIGSTOP');
    const a2 = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([ev]), '--flush-interval', '200ms']));
    await waitFor(async () => spooled(120)(await a2.status()), 30_000, 'the second run to spool 120 events');
    expect(await a2.stop()).toBe(0);
    expect(a2.stderr()).toMatch(/shutdown deadline reached: \d+ lines stay in the spool and are sent at the next start/);
    // 3. Start again; InfluxDB resumes.
    const a3 = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([]), '--flush-interval', '200ms']));
    const s3 = await a3.status();
    expect(s3.spool.replayedLines).toBeGreaterThan(120); // 120 raw points + histogram points
    influx('SIGCONT');
    await waitFor(async () => (await a3.status()).spool.lines === 0, 60_000, 'the spool to drain');
    expect(await a3.stop()).toBe(0);
    expect(await counts(db)).toEqual({ raw: 125, distinct: 125, hist: 125 });
  }, 180_000);

  test('one owner per spool directory: a second agent and an import on it are refused, naming the pid; an import without --spool-dir uses its own', async () => {
    const db = await freshDb();
    const spool = path.join(dir, 'spool-owner');
    const owner = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([])]));
    const second = await runAgentOnce(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([])]), 60_000);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`--spool-dir ${spool} is in use by pid ${owner.child.pid}`);
    const ev = path.join(dir, 'owner.ndjson');
    capture(ev, 500, 30);
    const importSame = await runAgentOnce(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', `cat ${ev}`, '--once']), 60_000);
    expect(importSame.code).toBe(1);
    expect(importSame.stderr).toContain(`is in use by pid ${owner.child.pid}`);
    // The running agent lost nothing: its spool still works.
    expect((await owner.status()).writer.healthy).toBe(true);
    // An import with the default spool dir gets a fresh one, removed when done.
    const args = agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', `cat ${ev}`, '--once']);
    args.splice(args.indexOf('--spool-dir'), 2);
    const imp = await runAgentOnce(args, 60_000);
    expect(imp.code).toBe(0);
    const used = /"spool":"([^"]+)"/.exec(imp.stderr)![1];
    expect(used).toMatch(/tcplat-import-\d+-/);
    expect(fs.existsSync(used)).toBe(false);
    expect(await owner.stop()).toBe(0);
    expect(await counts(db)).toEqual({ raw: 30, distinct: 30, hist: 30 });
  }, 180_000);

  test('a full disk mid-stream: batches are held and counted, stored when space returns, and survive a SIGKILL', async () => {
    const db = await freshDb();
    const mnt = path.join(dir, 'tmpfs');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mnt]);
    const spool = path.join(mnt, 'spool');
    const a = path.join(dir, 'full-a.ndjson');
    const b = path.join(dir, 'full-b.ndjson');
    const go = path.join(dir, 'full-go');
    capture(a, 1000, 2000);
    capture(b, 3000, 3000);
    influx('SIGSTOP'); // nothing leaves the spool: everything must be stored
    const src = `cat ${a}; while [ ! -e ${go} ]; do sleep 0.1; done; cat ${b}; while sleep 0.2; do echo; done`;
    const ag = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', src, '--flush-interval', '200ms']));
    await waitFor(async () => spooled(2000)(await ag.status()), 30_000, 'the first 2000 events to be spooled');
    // Fill the disk for real.
    const filler = path.join(mnt, 'filler');
    const fd = fs.openSync(filler, 'w');
    const chunk = Buffer.alloc(64 << 10, 1);
    try {
      for (;;) fs.writeSync(fd, chunk);
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(4096, 1));
    } catch {
      /* full to the last block */
    }
    fs.closeSync(fd);
    fs.writeFileSync(go, '');
    const full = await waitFor(
      async () => {
        const s = await ag.status();
        return spooled(5000)(s) && s.spool.pendingRecords > 0 ? s : null;
      },
      30_000,
      'batches to be held in memory while the disk is full',
    );
    expect(full.spool.storeFailures.disk_full).toBeGreaterThan(0);
    const metrics = await (await fetch(`${ag.url}/metrics`)).text();
    expect(metrics).toMatch(/tcplat_spool_store_failures_total\{reason="disk_full"\} [1-9]/);
    expect(metrics).toMatch(/tcplat_spool_held_batches [1-9]/);
    const ready = await fetch(`${ag.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.stringify(await ready.json())).toContain('spool: the disk refuses batches');
    expect(ag.child.exitCode).toBeNull(); // still running
    // Space returns: the held batches are stored by themselves.
    fs.rmSync(filler);
    await waitFor(async () => (await ag.status()).spool.pendingRecords === 0, 30_000, 'held batches to be stored');
    // Stored means on disk: a SIGKILL now loses none of it.
    await ag.kill9();
    const ag2 = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([]), '--flush-interval', '200ms']));
    expect((await ag2.status()).spool.replayedLines).toBeGreaterThan(5000);
    influx('SIGCONT');
    await waitFor(async () => (await ag2.status()).spool.lines === 0, 60_000, 'the spool to drain');
    expect(await ag2.stop()).toBe(0);
    expect(await counts(db)).toEqual({ raw: 5000, distinct: 5000, hist: 5000 });
  }, 240_000);

  test('>= 20 SIGKILLs at random moments while InfluxDB stops and resumes at random: every event exactly once', async () => {
    const db = await freshDb();
    const spool = path.join(dir, 'spool-kills');
    const rand = rng(seed);
    const kills = 22;
    const per = 150;
    let stopped = false;
    let total = 0;
    const log: string[] = [];
    try {
      for (let k = 0; k < kills; k++) {
        const file = path.join(dir, `kill-${k}.ndjson`);
        capture(file, 10_000 + k * per, per);
        const ag = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([file]), '--flush-interval', '100ms']));
        total += per;
        await waitFor(async () => spooled(per)(await ag.status()), 30_000, `run ${k} to spool its events`);
        // A random moment: the writer may be sending, acknowledging, or waiting on a hung InfluxDB.
        const delay = Math.floor(rand() * 400);
        const flip = rand() < 0.5;
        await new Promise((r) => setTimeout(r, delay));
        if (flip) {
          influx(stopped ? 'SIGCONT' : 'SIGSTOP');
          stopped = !stopped;
          await new Promise((r) => setTimeout(r, Math.floor(rand() * 200)));
        }
        log.push(`run ${k}: kill after ${delay} ms, influxd ${stopped ? 'stopped' : 'running'}`);
        await ag.kill9();
      }
      if (stopped) influx('SIGCONT');
      const last = await start(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive([]), '--flush-interval', '100ms']));
      await waitFor(async () => (await last.status()).spool.lines === 0, 90_000, 'the spool to drain');
      expect(await last.stop()).toBe(0);
      expect(await counts(db)).toEqual({ raw: total, distinct: total, hist: total });
    } catch (e) {
      throw new Error(`seed ${seed}: ${(e as Error).message}\n${log.join('\n')}`);
    }
  }, 400_000);
});
