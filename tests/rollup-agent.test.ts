/**
 * Rollups end to end with the real `tcplat agent` and `tcplat rollup` on the real InfluxDB 1.x:
 * - live, TLS handshakes and closes (probe-format tls and close lines): tls_handshake_hist and
 *   tcp_session_hist are rolled up too, every level equal to the 10 s data the agent wrote;
 * - live: the agent's rollups appear and equal the 10 s data it wrote; SIGKILLed after delivering but
 *   before rolling up (its data older than the 2 h default catch-up), the restarted agent catches up from
 *   its state file: no window is missing;
 * - an import (--once) rolls up its whole range before it exits and says so in its summary;
 * - `tcplat rollup` backfills what an import with --no-rollup left, twice (idempotent), with progress
 *   output; its errors (InfluxDB down, a bad range, a chunk that fails) are what a user sees.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { MEASUREMENT, queryInfluxQL, quote, ROLLUP_RP, writeLines, type InfluxV1Target } from '@tcplat/core';
import { agentArgs, buildAgent, probeLine, ROOT, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';
import { diffSums, expectedFromStored, LEVELS, rng, stored10s, storedRollup } from './rollup-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { freePort } from './support/net';
import { describeWith } from './support/prereq';

const HOUR = 3_600_000;
/** A whole hour some days ago (inside every retention the tests use), and its text as the CLI prints it. */
const DAYS_AGO = Math.floor((Date.now() - 20 * 86_400_000) / HOUR) * HOUR;
const hourText = (ms: number) => new Date(ms).toISOString().replace(':00.000Z', 'Z');
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const keepAlive = (file: string) => `cat ${file}; while sleep 0.2; do echo; done`;

/** Probe-format connects over [fromMs, toMs): a few services (comm), destinations and results. */
function events(fromMs: number, toMs: number, n: number, seed: number): string {
  const r = rng(seed);
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const ms = fromMs + Math.floor(((toMs - fromMs) * i) / n);
    const result = r() < 0.8 ? 'ok' : r() < 0.5 ? 'refused' : 'timeout';
    lines.push(
      probeLine({
        tsNs: BigInt(ms) * 1_000_000n + BigInt(i % 1000),
        latencyNs: result === 'timeout' ? 1_000_000_000 + Math.floor(r() * 2e9) : Math.floor(r() ** 3 * 50e6) + 10_000,
        result,
        errno: result === 'refused' ? 111 : result === 'timeout' ? 110 : 0,
        comm: r() < 0.5 ? 'ruby' : 'node',
        dport: r() < 0.5 ? 5432 : 6379,
        sport: 30000 + (i % 30000),
      }),
    );
  }
  return lines.join('\n') + '\n';
}

async function rollupDiffs(db: InfluxV1Target): Promise<string[]> {
  const tenS = await stored10s(db);
  const out: string[] = [];
  const rp = { ...db, rp: ROLLUP_RP };
  for (const w of LEVELS) {
    const d = diffSums(expectedFromStored(tenS, w.ms), await storedRollup(rp, w.name, 0, Date.now() + 86_400_000));
    out.push(...d.map((x) => `${w.name}: ${x}`));
  }
  return out;
}

/** Close and TLS lines as bpf/tcplat-probe prints them (bpf/README.md; tests/agent-session.test.ts, agent-tls.test.ts). */
function closeAndTlsEvents(fromMs: number, toMs: number, n: number, seed: number): string {
  const r = rng(seed);
  const lines: string[] = [];
  const closedBy = ['local', 'peer', 'reset_in', 'reset_out'];
  for (let i = 0; i < n; i++) {
    const ms = fromMs + Math.floor(((toMs - fromMs) * i) / n);
    const tsNs = (BigInt(ms) * 1_000_000n + BigInt(i % 1000)).toString();
    const comm = r() < 0.5 ? 'ruby' : 'node';
    lines.push(
      JSON.stringify({
        type: 'close', ts_ns: '@', lifespan_ns: Math.floor(r() ** 4 * 600e9) + 100_000, pid: 4242, tid: 4243, comm, thread: 'worker', cgroup_id: 1, family: 'ipv4',
        saddr: '127.0.0.1', sport: 10000 + (i % 50000), daddr: '10.0.0.5', dport: r() < 0.5 ? 5432 : 6379, bytes_sent: 1000, bytes_received: 2000,
        retrans: r() < 0.1 ? 2 : 0, srtt_us: 350, closed_by: closedBy[i % closedBy.length],
      }).replace('"@"', tsNs),
    );
    lines.push(
      JSON.stringify({
        type: 'tls', ts_ns: '@', latency_ns: Math.floor(2e6 + r() * 300e6), result: r() < 0.9 ? 'ok' : 'failed', pid: 1000 + (i % 7), tid: 1000 + (i % 7), comm, thread: comm,
        cgroup_id: 1, lib: 'openssl', calls: 1, family: 'ipv4', saddr: '127.0.0.1', sport: 40000 + (i % 20000), daddr: '10.0.0.9', dport: 443,
      }).replace('"@"', tsNs),
    );
  }
  return lines.join('\n') + '\n';
}

/**
 * Each rollup level of `measurement` against the 10 s points the agent wrote, added up here (every field
 * summed but min_ms/max_ms: min/max), per series (every tag) and window. Returns the differences.
 */
async function measurementDiffs(db: InfluxV1Target, measurement: string): Promise<string[]> {
  // every non-empty tag: the TLS and session histograms have their own tag sets
  const allTags = (tags: Record<string, string>, timeMs: number) => JSON.stringify([timeMs, Object.entries(tags).filter(([, v]) => v !== '').sort()]);
  const tenS = await stored10s(db, measurement);
  if (tenS.length === 0) return [`no ${measurement} 10 s points`];
  const out: string[] = [];
  for (const w of LEVELS) {
    const got = await storedRollup({ ...db, rp: ROLLUP_RP }, w.name, 0, Date.now() + 86_400_000, false, measurement, allTags);
    out.push(...diffSums(expectedFromStored(tenS, w.ms, allTags), got).map((d) => `${w.name}: ${d}`));
  }
  return out.slice(0, 20);
}

async function hasRollupRp(db: InfluxV1Target): Promise<boolean> {
  const [series] = await queryInfluxQL(db, `SHOW RETENTION POLICIES ON ${quote('influxql-ident', db.db)}`);
  return (series?.[0]?.values ?? []).some((v) => v[0] === ROLLUP_RP);
}

function runCli(args: string[], timeoutMs = 120_000): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'tcplat'), 'rollup', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (c: Buffer) => (stderr += c.toString()));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tcplat rollup did not finish; stderr:\n${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stderr });
    });
  });
}

describeWith(missingInflux(), 'rollups with the real agent and tcplat rollup (real InfluxDB 1.x)', () => {
  const dbs: InfluxV1Target[] = [];
  const agents: RunningAgent[] = [];
  const dirs: string[] = [];
  beforeAll(() => buildAgent(), 300_000);
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.kill9();
  });
  afterAll(async () => {
    for (const d of dbs) await dropDatabase(d).catch(() => undefined);
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });
  const fresh = async () => {
    const db = await freshDatabase('rollupagent');
    dbs.push(db);
    const dir = tmpDir('rollup-agent');
    dirs.push(dir);
    return { db, dir };
  };

  test('live: rollups equal the 10 s data; SIGKILL between delivery and rollup, restart: the rollups catch up, no window missing', async () => {
    const { db, dir } = await fresh();
    const spool = path.join(dir, 'spool');
    const now = Date.now();
    // Older than the 2 h an agent without a state file catches up: only the state file can bring them back.
    const old = path.join(dir, 'old.ndjson');
    fs.writeFileSync(old, events(now - 5 * 3_600_000 - 7 * 60_000, now - 4 * 3_600_000 - 31 * 60_000, 800, 1));
    // No rollup run in this agent's life (1 h interval): it delivers, then dies.
    const a1 = await startAgent(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive(old), '--flush-interval', '200ms', '--rollup-interval', '1h']));
    agents.push(a1);
    await waitFor(async () => (await scalar(db, 'SELECT sum("count") FROM "tcp_connect_hist"')) === 800 && (await a1.status()).spool.records === 0, 60_000, 'the 800 events in InfluxDB');
    const st1 = (await (await fetch(`${a1.url}/api/status`)).json()) as { rollup: { runs: number; dirty_windows: number; rolled_up_to: string } };
    expect(st1.rollup.runs).toBe(0);
    expect(st1.rollup.dirty_windows).toBeGreaterThan(0);
    // Delivered windows older than the start mark lowered it on disk before the batches were acknowledged.
    const state = JSON.parse(fs.readFileSync(path.join(spool, 'rollup-state.json'), 'utf8')) as { rolledUpToMs: number };
    expect(state.rolledUpToMs).toBeLessThanOrEqual(now - 5 * 3_600_000 - 7 * 60_000);
    await a1.kill9();
    agents.splice(0);
    expect(await hasRollupRp(db)).toBe(false);

    // Restart with recent events too (the live path) and a short interval.
    const recent = path.join(dir, 'recent.ndjson');
    fs.writeFileSync(recent, events(now - 20 * 60_000, now - 60_000, 400, 2));
    const a2 = await startAgent(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive(recent), '--flush-interval', '200ms', '--rollup-interval', '1s']));
    agents.push(a2);
    await waitFor(async () => (await scalar(db, 'SELECT sum("count") FROM "tcp_connect_hist"')) === 1200, 60_000, 'the 1200 events in InfluxDB');
    let last: string[] = [];
    await waitFor(
      async () => {
        last = await rollupDiffs(db).catch((e: Error) => [e.message]);
        return last.length === 0;
      },
      90_000,
      'rollups equal to the 10 s data',
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${last.join('\n')}\nagent stderr:\n${a2.stderr().slice(-3000)}`);
    });
    // What /api/status and /metrics show, once the run that made them has ended: the connect rollups are
    // exact before the same run has gone through the TLS and session histograms of those windows.
    const status2 = async () => ((await (await fetch(`${a2.url}/api/status`)).json()) as { rollup: Record<string, unknown> });
    // last_run is set when a run ends; windows_rolled_up counts per chunk, during the run (agent/src/rollup/job.ts)
    await waitFor(async () => {
      const r = (await status2()).rollup;
      return r.last_run != null && (r.windows_rolled_up as number) > 0;
    }, 30_000, 'the catch-up run to end');
    const st = await status2();
    expect(st.rollup).toMatchObject({ enabled: true, errors: 0 });
    expect(st.rollup.windows_rolled_up as number).toBeGreaterThan(30);
    expect(st.rollup.points_written as number).toBeGreaterThan(0);
    const metrics = await (await fetch(`${a2.url}/metrics`)).text();
    expect(metrics).toMatch(/^tcplat_rollup_windows_total \d+/m);
    expect(metrics).toMatch(/^tcplat_rollup_lag_seconds [\d.e+-]+/m);
    expect(metrics).toMatch(/^tcplat_rollup_errors_total 0/m);
    expect(metrics).toMatch(/^tcplat_rollup_last_run_timestamp_seconds [1-9]/m);
    expect(await a2.stop()).toBe(0);
    agents.splice(0);
  }, 300_000);

  test('live: the agent rolls up tls_handshake_hist and tcp_session_hist too; every level equals the 10 s data it wrote', async () => {
    const { db, dir } = await fresh();
    const now = Date.now();
    const file = path.join(dir, 'close-tls.ndjson');
    fs.writeFileSync(file, events(now - 25 * 60_000, now - 60_000, 300, 5) + closeAndTlsEvents(now - 25 * 60_000, now - 60_000, 600, 6));
    const a = await startAgent(agentArgs(db, path.join(dir, 'spool'), ['--source', 'ndjson', '--source-cmd', keepAlive(file), '--flush-interval', '200ms', '--rollup-interval', '1s']));
    agents.push(a);
    await waitFor(
      async () => (await scalar(db, 'SELECT sum("count") FROM "tls_handshake_hist"')) === 600 && (await scalar(db, 'SELECT sum("count") FROM "tcp_session_hist"')) === 600 && (await a.status()).spool.records === 0,
      60_000,
      'the 600 handshakes and 600 closes in InfluxDB',
    );
    let last: string[] = [];
    await waitFor(
      async () => {
        last = [...(await measurementDiffs(db, MEASUREMENT.tlsHist).catch((e: Error) => [e.message])), ...(await measurementDiffs(db, MEASUREMENT.sessionHist).catch((e: Error) => [e.message]))];
        return last.length === 0;
      },
      90_000,
      'tls_handshake_hist and tcp_session_hist rollups equal to the 10 s data',
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${last.join('\n')}\nagent stderr:\n${a.stderr().slice(-3000)}`);
    });
    // The rollups hold what the 10 s data holds: 600 of each at every level, session fields included.
    for (const w of LEVELS) {
      expect(await scalar({ ...db, rp: ROLLUP_RP } as InfluxV1Target, `SELECT sum("count") FROM "${ROLLUP_RP}"."tls_handshake_hist_${w.name}"`)).toBe(600);
      expect(await scalar({ ...db, rp: ROLLUP_RP } as InfluxV1Target, `SELECT sum("count") FROM "${ROLLUP_RP}"."tcp_session_hist_${w.name}"`)).toBe(600);
      expect(await scalar({ ...db, rp: ROLLUP_RP } as InfluxV1Target, `SELECT sum("resets_in") FROM "${ROLLUP_RP}"."tcp_session_hist_${w.name}"`)).toBe(150);
    }
    expect(((await (await fetch(`${a.url}/api/status`)).json()) as { rollup: unknown }).rollup).toMatchObject({ errors: 0 });
    expect(await a.stop()).toBe(0);
    agents.splice(0);
  }, 240_000);

  test('an import (--once) rolls up its whole range before it exits and says so; with --no-rollup, tcplat rollup backfills it (twice: the same)', async () => {
    const T = DAYS_AGO + 55 * 60_000;
    const { db, dir } = await fresh();
    const capture = path.join(dir, 'capture.ndjson');
    fs.writeFileSync(capture, events(T, T + 3 * 3_600_000, 3000, 3));
    const imp = await runAgentOnce(agentArgs(db, path.join(dir, 's1'), ['--source', 'ndjson', '--source-cmd', `cat ${capture}`, '--once']));
    expect(imp.code).toBe(0);
    const summary = imp.stderr.split('\n').find((l) => l.includes('"import done"'));
    expect(summary).toBeDefined();
    const rollup = (JSON.parse(summary!) as { rollup: { points: number; error: string | null; fromMs: number; toMs: number } }).rollup;
    expect(rollup).toMatchObject({ error: null });
    expect(rollup.points).toBeGreaterThan(0);
    expect(rollup.fromMs).toBeLessThanOrEqual(T);
    expect(await rollupDiffs(db)).toEqual([]);

    // The same capture into another database, without rollups: then the backfill.
    const { db: db2, dir: dir2 } = await fresh();
    const imp2 = await runAgentOnce(agentArgs(db2, path.join(dir2, 's1'), ['--source', 'ndjson', '--source-cmd', `cat ${capture}`, '--once', '--no-rollup']));
    expect(imp2.code).toBe(0);
    expect(await hasRollupRp(db2)).toBe(false);
    const args = ['--influx-url', db2.url, '--influx-db', db2.db, '--chunk', '1h', '--to', String(T + 4 * 3_600_000)];
    const first = await runCli(args);
    expect(first.code).toBe(0);
    // Progress a user reads: the range, each chunk with points, rate and ETA, and the end.
    expect(first.stderr).toMatch(/created retention policy tcplat_rollups on rollupagent_\w+ \(duration 400d\)/);
    expect(first.stderr).toMatch(new RegExp(`${esc(hourText(DAYS_AGO))} \\.\\. ${esc(hourText(DAYS_AGO + 5 * HOUR))} in 5 chunk\\(s\\) of 1h`));
    expect(first.stderr).toMatch(
      new RegExp(`^tcp_connect_hist chunk 1/5 ${esc(hourText(DAYS_AGO))} \\.\\. ${esc(hourText(DAYS_AGO + HOUR))}: \\d+ points \\(1m \\d+, 10m \\d+, 1h \\d+, fleet 10m \\d+, fleet 1h \\d+\\); \\d+ in all, \\d+ points/s, ETA \\S+$`, 'm'),
    );
    expect(first.stderr).toMatch(/^tcp_connect_hist chunk 5\/5 /m);
    expect(first.stderr).toMatch(/done: \d+ points in 5 chunk\(s\)/);
    expect(await rollupDiffs(db2)).toEqual([]);
    const second = await runCli(args);
    expect(second.code).toBe(0);
    const total = (s: string) => Number(/done: (\d+) points/.exec(s)?.[1]);
    expect(total(second.stderr)).toBe(total(first.stderr));
    expect(second.stderr).toMatch(/retention policy tcplat_rollups on \S+ exists \(duration 9600h0m0s\)/);
    expect(await rollupDiffs(db2)).toEqual([]);
    // The backfill and the import's own rollups are the same points.
    const count = async (d: InfluxV1Target) => scalar({ ...d, rp: ROLLUP_RP }, `SELECT count("count") FROM "${d.db}"."${ROLLUP_RP}"."tcp_connect_hist_1m"`);
    expect(await count(db2)).toBe(await count(db));
  }, 300_000);

  test('a hung InfluxDB (SIGSTOPped mid rollup run) does not hang the agent: SIGTERM ends it promptly, the dirty windows stay in its state file', async () => {
    // A private influxd: SIGSTOPping the shared one would stall every other suite.
    const { dir } = await fresh();
    const idir = path.join(dir, 'influxdb');
    const url = execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['start', idir], { encoding: 'utf8' }).trim();
    const pid = Number(fs.readFileSync(path.join(idir, 'influxd.pid'), 'utf8'));
    try {
      const db: InfluxV1Target = { version: 1, url, db: 'hung' };
      await queryInfluxQL({ ...db, db: '' }, 'CREATE DATABASE hung', { method: 'POST' });
      const spool = path.join(dir, 'spool');
      const empty = path.join(dir, 'empty.ndjson');
      fs.writeFileSync(empty, '');
      const a = await startAgent(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive(empty), '--rollup-interval', '3s']));
      agents.push(a);
      process.kill(pid, 'SIGSTOP');
      // The first run (3 s after start) catches up the last 2 h and waits on the stopped server.
      await new Promise((r) => setTimeout(r, 5000));
      const t0 = Date.now();
      const code = await a.stop();
      agents.splice(0);
      expect(code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(15_000);
      const state = JSON.parse(fs.readFileSync(path.join(spool, 'rollup-state.json'), 'utf8')) as { rolledUpToMs: number };
      expect(state.rolledUpToMs).toBeLessThanOrEqual(Date.now() - 2 * 3_600_000 + 60_000);
    } finally {
      process.kill(pid, 'SIGCONT');
      execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['stop', idir]);
    }
  }, 120_000);

  test('tcplat rollup errors: InfluxDB down, a bad range, a failing chunk (named, with how to resume), retention only when asked', async () => {
    const port = await freePort();
    const down = await runCli(['--influx-url', `http://127.0.0.1:${port}`, '--influx-db', 'tcplat']);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach InfluxDB 1.x at http://127.0.0.1:${port} (db=tcplat): fetch failed: connect ECONNREFUSED`);

    const bad = await runCli(['--influx-db', 'tcplat', '--from', 'now', '--to', 'now-1h']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--from \(.*\) must be before --to/);
    const badTime = await runCli(['--influx-db', 'tcplat', '--from', 'yesterday']);
    expect(badTime.code).toBe(2);
    expect(badTime.stderr).toMatch(/--from: invalid time "yesterday"/);
    const badChunk = await runCli(['--influx-db', 'tcplat', '--chunk', '90m']);
    expect(badChunk.code).toBe(2);
    expect(badChunk.stderr).toMatch(/--chunk: a whole number of hours/);

    // No rollup RP and --no-setup: the first chunk's write fails; the message names it and how to go on.
    const { db } = await fresh();
    const T = DAYS_AGO;
    await writeLines(db, `tcp_connect_hist,dst=a:1,host=h,result=ok,service=s count=1i,sum_ms=1.5,min_ms=1.5,max_ms=1.5,syn_retrans=0i,le_0.01=0i ${BigInt(T + 5000) * 1_000_000n}\n`);
    const fail = await runCli(['--influx-url', db.url, '--influx-db', db.db, '--no-setup', '--from', String(T), '--to', String(T + 7_200_000), '--chunk', '1h']);
    expect(fail.code).toBe(1);
    expect(fail.stderr).toMatch(new RegExp(`chunk 1/2 ${esc(hourText(T))} \\.\\. ${esc(hourText(T + HOUR))} failed: .*retention policy not found: tcplat_rollups`));
    expect(fail.stderr).toContain(`run the same command again, or with --from ${new Date(T).toISOString()} to start at this chunk`);

    // Retention of the 10 s data changes only when asked, and says so.
    const [before] = await queryInfluxQL(db, `SHOW RETENTION POLICIES ON ${quote('influxql-ident', db.db)}`);
    expect(before[0].values.find((v) => v[0] === 'autogen')?.[1]).toBe('0s');
    const ok = await runCli(['--influx-url', db.url, '--influx-db', db.db, '--retention-raw', '14d', '--retention-rollups', '30d']);
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/created retention policy tcplat_rollups on \S+ \(duration 30d\)/);
    expect(ok.stderr).toMatch(/set retention policy autogen on \S+ to 14d \(was 0s\)/);
    const [after] = await queryInfluxQL(db, `SHOW RETENTION POLICIES ON ${quote('influxql-ident', db.db)}`);
    const rps = Object.fromEntries(after[0].values.map((v) => [v[0], v[1]]));
    expect(rps).toEqual({ autogen: '336h0m0s', tcplat_rollups: '720h0m0s' });
  }, 180_000);
});
