/**
 * Close events through the agent into the real InfluxDB 1.x (issue 15):
 * - live: real loopback connections (python3) -> bpf/tcplat-probe -> tcplat agent: one tcp_session point
 *   per connection with its ground truth (held 1.5 s with 100,000 bytes: lifespan, bytes, `local`; resets
 *   both ways; the peer closing first), stamped at its connect's time (the join key), and tcp_session_hist
 *   counts, resets and buckets that match those points exactly;
 * - import (--once) of a capture: exact tcp_session_hist counts per service, per window of close time and
 *   per bucket (1 ms .. a day, overflow included), retransmit and reset sums; importing it again changes
 *   nothing; raw points rate-limited per second of event time with weights that sum to the events.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MEASUREMENT, SESSION_BUCKET_FIELDS, sessionBucketIndex, type ClosedBy, type InfluxV1Target } from '@tcplat/core';
import { agentArgs, buildAgent, PROBE, rows, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';
import { retransSegs, runScenario } from './support/close-scenarios';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { freePort } from './support/net';
import { describeWith, missingRootEbpf } from './support/prereq';

const W = 10_000_000_000n; // hist window, ns
const T0 = (BigInt(Date.UTC(2026, 0, 1)) * 1_000_000n / W) * W;

function missingLive(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(PROBE)) return `${PROBE} is not built (make -C bpf)`;
  try {
    execFileSync('python3', ['-c', 'import socket, struct'], { stdio: 'ignore' });
  } catch {
    return 'python3 is missing: run scripts/setup';
  }
  return null;
}

interface CloseInput {
  tsNs: bigint;
  lifespanNs: number;
  comm: string;
  sport: number;
  closedBy: ClosedBy;
  retrans: number;
}

/** A close line as bpf/tcplat-probe prints it (ts_ns an exact integer). */
function closeLine(e: CloseInput): string {
  const o = {
    type: 'close', ts_ns: '@TS@', lifespan_ns: e.lifespanNs, pid: 4242, tid: 4243, comm: e.comm, thread: 'worker', cgroup_id: 1,
    family: 'ipv4', saddr: '127.0.0.1', sport: e.sport, daddr: '10.0.0.5', dport: 5432, bytes_sent: 1000, bytes_received: 2000,
    retrans: e.retrans, srtt_us: 350, closed_by: e.closedBy,
  };
  return JSON.stringify(o).replace('"@TS@"', e.tsNs.toString());
}

describeWith(missingLive(), 'agent live: close events -> tcp_session and tcp_session_hist', () => {
  let db: InfluxV1Target;
  let dir: string;
  let agent: RunningAgent | undefined;

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-session-live');
    db = await freshDatabase('sessionlive');
  }, 120_000);
  afterAll(async () => {
    if (agent) await agent.kill9();
    await dropDatabase(db);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  test('ground truth per connection, joined to its connect; exact histogram of the same connections', async () => {
    const port = await freePort();
    const cmd = `exec ${PROBE} --exclude-pid $PPID --dport ${port} --stats-interval 1`;
    agent = await startAgent(agentArgs(db, `${dir}/spool`, ['--source', 'probe', '--source-cmd', cmd]));
    await waitFor(async () => (await agent!.status()).source.stderr_tail.some((l) => l.includes('tcplat-probe: attached')), 20_000, 'the probe to attach');
    const retransBefore = retransSegs();
    const [, held] = await runScenario(['hold', String(port)]);
    const [, resets] = await runScenario(['resets', String(port)]);
    // Loopback rarely retransmits, but on a loaded machine a late ACK can fire a tail-loss probe: the
    // kernel's own count (host-wide, so an upper bound) is the ground truth, 0 when it retransmitted nothing.
    const kernelRetrans = retransSegs() - retransBefore;
    await waitFor(async () => (await scalar(db, `SELECT count(lifespan_ms) FROM ${MEASUREMENT.session}`)) === 4, 30_000, '4 tcp_session points');
    await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.sessionHist}`)) === 4, 30_000, '4 connections in tcp_session_hist');

    const sessions = await rows(db, `SELECT lifespan_ms, bytes_sent, bytes_received, retrans, srtt_ms, sport, closed_by, comm, dst, service FROM ${MEASUREMENT.session}`);
    const bySport = new Map(sessions.map((s) => [s.sport as number, s]));
    const h = bySport.get(held.sport)!;
    expect(h).toMatchObject({ closed_by: 'local', bytes_sent: 100000, bytes_received: held.reply, comm: 'python3', service: 'python3', dst: `127.0.0.1:${port}` });
    expect(h.retrans as number).toBeLessThanOrEqual(kernelRetrans);
    if (kernelRetrans === 0) expect(h.retrans).toBe(0);
    // 1.5-1.7 s; at most what the client itself saw from before connect() to the server's FIN (see
    // tests/probe-close.test.ts).
    expect(h.lifespan_ms as number).toBeGreaterThanOrEqual(1500);
    expect(h.lifespan_ms as number).toBeLessThanOrEqual(held.elapsed_ms);
    expect(h.srtt_ms as number).toBeGreaterThan(0);
    expect(bySport.get(resets.reset_in)).toMatchObject({ closed_by: 'reset_in', bytes_sent: 1 });
    expect(bySport.get(resets.reset_out)).toMatchObject({ closed_by: 'reset_out', bytes_sent: 1 });
    expect(bySport.get(resets.peer)).toMatchObject({ closed_by: 'peer', bytes_received: resets.peer_bytes });

    // The join: each session point has its connect point's time, to the ns.
    const connects = await rows(db, `SELECT latency_ms, sport FROM ${MEASUREMENT.connect}`);
    expect(connects).toHaveLength(4);
    for (const c of connects) expect(bySport.get(c.sport as number)?.time).toBe(c.time);

    const hist = await rows(db, `SELECT sum("count") AS n, sum(resets_in) AS rin, sum(resets_out) AS rout, sum(retrans) AS re, ${SESSION_BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ')} FROM ${MEASUREMENT.sessionHist} GROUP BY service, dst`);
    expect(hist).toHaveLength(1);
    // The window's retransmits are exactly the sum over its connections (each within the kernel's count).
    const retransSum = sessions.reduce((n, x) => n + (x.retrans as number), 0);
    expect(retransSum).toBeLessThanOrEqual(kernelRetrans);
    expect(hist[0]).toMatchObject({ service: 'python3', dst: `127.0.0.1:${port}`, n: 4, rin: 1, rout: 1, re: retransSum });
    const expected = new Array<number>(SESSION_BUCKET_FIELDS.length).fill(0);
    for (const s of sessions) expected[sessionBucketIndex(s.lifespan_ms as number)]++;
    expect(SESSION_BUCKET_FIELDS.map((f) => hist[0][f])).toEqual(expected);
  }, 90_000);
});

describeWith(missingInflux(), 'agent import (--once): close events -> exact tcp_session_hist', () => {
  let db: InfluxV1Target;
  let dir: string;
  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-session-import');
  }, 120_000);
  beforeEach(async () => {
    db = await freshDatabase('sessionimport');
  });
  afterEach(async () => {
    await dropDatabase(db);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('exact counts per service, window (by close time) and bucket; retransmits and resets summed; a second import changes nothing', async () => {
    const lines: string[] = [];
    const perService = new Map<string, number>();
    const perWindow = new Map<bigint, number>();
    const buckets = new Array<number>(SESSION_BUCKET_FIELDS.length).fill(0);
    let retrans = 0;
    const resets = { reset_in: 0, reset_out: 0 };
    // Lifespans from 0.3 ms to two days (past the last bound: the overflow bucket).
    const lifespans = [300_000, 1_000_000, 1_000_001, 45_000_000, 1_500_000_000, 9_000_000_000, 3_600_000_000_000, 86_400_000_000_000, 172_800_000_000_000];
    const closedBy: ClosedBy[] = ['local', 'peer', 'reset_in', 'local', 'reset_out'];
    for (let i = 0; i < 2000; i++) {
      const comm = ['ruby', 'node', 'postgres'][i % 3];
      const lifespanNs = lifespans[i % lifespans.length];
      const tsNs = T0 + BigInt(i) * 15_000_000n + 11n; // 30 s of SYNs
      const cb = closedBy[i % closedBy.length];
      const r = i % 13 === 0 ? 2 : 0;
      lines.push(closeLine({ tsNs, lifespanNs, comm, sport: 10000 + i, closedBy: cb, retrans: r }));
      if (i % 4 === 0) lines.push('{"type":"connect","ts_ns":' + tsNs + ',"latency_ns":100000,"result":"ok","errno":0,"syn_retrans":0,"pid":4242,"tid":4243,"comm":"' + comm + '","cgroup_id":1,"family":"ipv4","saddr":"127.0.0.1","sport":' + (10000 + i) + ',"daddr":"10.0.0.5","dport":5432}');
      perService.set(comm, (perService.get(comm) ?? 0) + 1);
      const end = tsNs + BigInt(lifespanNs);
      perWindow.set(end - (end % W), (perWindow.get(end - (end % W)) ?? 0) + 1);
      buckets[sessionBucketIndex(lifespanNs / 1e6)]++;
      retrans += r;
      if (cb === 'reset_in' || cb === 'reset_out') resets[cb]++;
    }
    // One bad line: refused with a clear error, counted; nothing else lost.
    lines.push(closeLine({ tsNs: T0, lifespanNs: 5, comm: 'ruby', sport: 1, closedBy: 'local', retrans: 0 }).replace('"local"', '"nobody"'));
    const file = path.join(dir, 'closes.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');

    const check = async () => {
      const hist = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.sessionHist} GROUP BY service`);
      expect(Object.fromEntries(hist.map((x) => [x.service, x.sum]))).toEqual(Object.fromEntries(perService));
      const windows = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.sessionHist} WHERE time >= 0 GROUP BY time(10s) fill(none)`);
      expect(new Map(windows.map((x) => [BigInt(x.time as number), x.sum]))).toEqual(perWindow);
      const b = await rows(db, `SELECT ${SESSION_BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ')}, sum(retrans) AS re, sum(resets_in) AS rin, sum(resets_out) AS rout FROM ${MEASUREMENT.sessionHist}`);
      expect(SESSION_BUCKET_FIELDS.map((f) => b[0][f])).toEqual(buckets);
      expect(b[0]).toMatchObject({ re: retrans, rin: resets.reset_in, rout: resets.reset_out });
      expect(buckets[buckets.length - 1]).toBeGreaterThan(0); // the two-day connections: overflow
      expect(await scalar(db, `SELECT count(lifespan_ms) FROM ${MEASUREMENT.session}`)).toBe(2000);
      expect(await scalar(db, `SELECT count(DISTINCT(sport)) FROM ${MEASUREMENT.session}`)).toBe(2000);
      const tagged = await rows(db, `SELECT count(lifespan_ms) FROM ${MEASUREMENT.session} GROUP BY closed_by`);
      expect(Object.fromEntries(tagged.map((x) => [x.closed_by, x.count]))).toEqual({ local: 800, peer: 400, reset_in: 400, reset_out: 400 });
      expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(500);
    };
    const a = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-a'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(a.code).toBe(0);
    expect(a.stderr).toMatch(/field closed_by must be one of local, peer, reset_in, reset_out/);
    await check();
    const b = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-b'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(b.code).toBe(0);
    await check(); // the same points at the same times: overwritten, not added
  }, 90_000);

  test('raw tcp_session points are rate-limited per second of event time, with weights; the histogram stays exact', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) lines.push(closeLine({ tsNs: T0 + BigInt(i) * 300_000n, lifespanNs: 2_000_000, comm: 'ruby', sport: i, closedBy: 'local', retrans: 0 })); // 3000 in 0.9 s
    for (let i = 0; i < 50; i++) lines.push(closeLine({ tsNs: T0 + 3_000_000_000n + BigInt(i) * 1_000_000n, lifespanNs: 2_000_000, comm: 'ruby', sport: 5000 + i, closedBy: 'peer', retrans: 0 }));
    const file = path.join(dir, 'dense-closes.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-dense'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '1000']));
    expect(r.code).toBe(0);
    const perSecond = await rows(db, `SELECT count(lifespan_ms), sum(sample_weight) FROM ${MEASUREMENT.session} WHERE time >= ${T0} AND time < ${T0 + W} GROUP BY time(1s) fill(none)`);
    expect(perSecond.map((x) => x.count)).toEqual([1000, 50]);
    expect(perSecond[0].sum).toBeCloseTo(3000, 3);
    expect(perSecond[1].sum).toBeNull(); // not sampled: no weight field
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.sessionHist}`)).toBe(3050);
  }, 60_000);
});
