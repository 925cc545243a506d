/**
 * Faults: InfluxDB hung (SIGSTOP) while the agent spools; the agent killed with SIGKILL during the outage
 * and restarted on the same spool; InfluxDB resumed (SIGCONT). Every event must appear exactly once, in
 * raw points and in histograms. Uses a private influxd (scripts/influxdb1) because it gets stopped.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MEASUREMENT, queryInfluxQL, type InfluxV1Target } from '@tcplat/core';
import { describeWith } from './support/prereq';
import { agentArgs, buildAgent, probeLine, ROOT, rows, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';

function missingInfluxd(): string | null {
  try {
    execFileSync('influxd', ['version'], { stdio: 'ignore' });
    return null;
  } catch {
    return "influxd not installed (run 'sudo scripts/setup')";
  }
}

const W = 10_000_000_000n;
const T0 = (BigInt(Date.UTC(2026, 0, 2)) * 1_000_000n / W) * W;

/** `count` probe events from `first`, spread over 25 s of event time, each with a unique sport. */
function capture(file: string, first: number, count: number): void {
  const lines: string[] = [];
  for (let i = first; i < first + count; i++) {
    lines.push(probeLine({ tsNs: T0 + BigInt(i % 2500) * 10_000_000n + BigInt(i), sport: 1000 + i, comm: i % 2 ? 'ruby' : 'node', result: i % 5 ? 'ok' : 'refused' }));
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

describeWith(missingInfluxd(), 'agent faults: hung InfluxDB, SIGKILL, restart', () => {
  let dir: string;
  let db: InfluxV1Target;
  let influxPid = 0;
  const agents: RunningAgent[] = [];

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-faults');
    const url = execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['start', path.join(dir, 'influxdb')], { encoding: 'utf8' }).trim();
    influxPid = Number(fs.readFileSync(path.join(dir, 'influxdb', 'influxd.pid'), 'utf8'));
    db = { version: 1, url, db: 'faults' };
    await queryInfluxQL({ ...db, db: '' }, 'CREATE DATABASE faults', { method: 'POST' });
  }, 120_000);

  afterAll(async () => {
    for (const a of agents) await a.kill9().catch(() => undefined);
    try {
      process.kill(influxPid, 'SIGCONT');
    } catch {
      /* gone */
    }
    execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['stop', path.join(dir, 'influxdb')]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  test('every event appears exactly once', async () => {
    const spool = path.join(dir, 'spool');
    const a = path.join(dir, 'a.ndjson');
    const b = path.join(dir, 'b.ndjson');
    capture(a, 0, 2000);
    capture(b, 2000, 1000); // same windows as a: histogram points of both runs must add up
    // The source prints its capture, then stays alive (an empty line a second; it exits when the agent dies).
    const keepAlive = (f: string) => `cat ${f}; while sleep 0.2; do echo; done`;
    const spooled = (n: number) => async (s: Awaited<ReturnType<RunningAgent['status']>>) =>
      s.pipeline.stages.parse.emitted >= n && s.pipeline.pending_events === 0 && s.pipeline.batch_lines === 0;

    process.kill(influxPid, 'SIGSTOP');
    const first = await startAgent(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive(a)]));
    agents.push(first);
    await waitFor(async () => spooled(2000)(await first.status()), 20_000, 'first agent to spool 2000 events');
    const s1 = await first.status();
    expect(s1.spool.lines).toBeGreaterThan(2000); // raw + histogram lines, none written: InfluxDB is hung
    await first.kill9();

    const second = await startAgent(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', keepAlive(b)]));
    agents.push(second);
    const s2 = await second.status();
    expect(s2.spool.replayedLines).toBe(s1.spool.lines);
    expect(s2.spool.run_id).toBe(s1.spool.run_id + 1);
    await waitFor(async () => spooled(1000)(await second.status()), 20_000, 'second agent to spool 1000 events');

    process.kill(influxPid, 'SIGCONT');
    await waitFor(async () => (await second.status()).spool.lines === 0, 40_000, 'the spool to drain into InfluxDB');
    expect(await second.stop()).toBe(0);

    // Raw: 3000 points, each event (unique sport) exactly once.
    expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(3000);
    expect(await scalar(db, `SELECT count(DISTINCT(sport)) FROM ${MEASUREMENT.connect}`)).toBe(3000);
    const perResult = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} GROUP BY result`);
    expect(Object.fromEntries(perResult.map((r) => [r.result, r.sum]))).toEqual({ ok: 2400, refused: 600 });
    const perWindow = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} WHERE time >= ${T0} AND time < ${T0 + 4n * W} GROUP BY time(10s) fill(none)`);
    expect(perWindow.map((r) => r.sum)).toEqual([1500, 1000, 500]);
  }, 120_000);
});
