/**
 * Live: real loopback connects through bpf/tcplat-probe -> tcplat agent -> the real InfluxDB 1.x, with
 * exact counts and ground-truth latencies: plain connects (well under a few ms), a closed port (refused),
 * and a port whose first SYN nftables drops (about 1 s: the SYN retransmit, syn_retrans = 1).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { MEASUREMENT, type InfluxV1Target } from '@tcplat/core';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith, missingRootEbpf } from './support/prereq';
import { freePort } from './support/net';
import { agentArgs, buildAgent, PROBE, rows, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';

function missingLive(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(PROBE)) return `${PROBE} is not built (make -C bpf)`;
  try {
    execFileSync('nft', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'nft (nftables) is not installed';
  }
  return null;
}

/** Connect and close; resolves with the client-side connect time (ms) and whether it failed. */
function connectOnce(port: number): Promise<{ ms: number; error?: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const c = net.connect({ port, host: '127.0.0.1' });
    c.on('connect', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      c.destroy();
      resolve({ ms });
    });
    c.on('error', (e: NodeJS.ErrnoException) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, error: e.code }));
  });
}

describeWith(missingLive(), 'agent live: probe -> agent -> InfluxDB', () => {
  let db: InfluxV1Target;
  let dir: string;
  let server: net.Server;
  let agent: RunningAgent | undefined;
  const table = `tcplat_agent_test_${process.pid}`;

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-live');
    db = await freshDatabase('agentlive');
    server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  }, 120_000);

  afterAll(async () => {
    if (agent) await agent.kill9();
    try {
      execFileSync('nft', ['delete', 'table', 'inet', table], { stdio: 'ignore' });
    } catch {
      /* not created */
    }
    await new Promise<void>((r) => server.close(() => r()));
    await dropDatabase(db);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  test('exact counts and ground-truth latencies', async () => {
    const okPort = (server.address() as net.AddressInfo).port;
    const closedPort = await freePort();
    const slowPort = await freePort();
    const slowServer = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => slowServer.listen(slowPort, '127.0.0.1', r));
    execFileSync('nft', ['-f', '-'], {
      input: `table inet ${table} {\n chain out {\n  type filter hook output priority 0;\n  tcp dport ${slowPort} tcp flags syn numgen inc mod 2 == 0 drop\n }\n}\n`,
    });
    // Only our ports: other loopback traffic on this machine must not count. $PPID is the agent.
    const cmd = `exec ${PROBE} --exclude-pid $PPID --dport ${okPort} --dport ${closedPort} --dport ${slowPort} --stats-interval 1`;
    agent = await startAgent(agentArgs(db, `${dir}/spool`, ['--source', 'probe', '--source-cmd', cmd]));
    await waitFor(async () => (await agent!.status()).source.stderr_tail.some((l) => l.includes('tcplat-probe: attached')), 20_000, 'the probe to attach');
    const readyz = await fetch(`${agent.url}/readyz`);
    expect(readyz.status).toBe(200);

    const ok = [];
    for (let i = 0; i < 20; i++) ok.push(await connectOnce(okPort));
    const refused = [];
    for (let i = 0; i < 10; i++) refused.push(await connectOnce(closedPort));
    const slow = [];
    for (let i = 0; i < 2; i++) slow.push(await connectOnce(slowPort));
    expect(ok.every((r) => !r.error)).toBe(true);
    expect(refused.every((r) => r.error === 'ECONNREFUSED')).toBe(true);
    expect(slow.every((r) => !r.error && r.ms > 900)).toBe(true);
    await new Promise<void>((r) => slowServer.close(() => r()));

    const total = async () => scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`);
    await waitFor(async () => (await total()) >= 32, 20_000, '32 raw points in InfluxDB');
    await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)) >= 32, 10_000, 'histograms');
    expect(await agent.stop()).toBe(0);
    agent = undefined;

    const byDst = await rows(db, `SELECT count(latency_ms), max(latency_ms), min(latency_ms), sum(syn_retrans) FROM ${MEASUREMENT.connect} GROUP BY dst, result`);
    const got = Object.fromEntries(byDst.map((r) => [`${r.dst} ${r.result}`, r]));
    expect(Object.keys(got).sort()).toEqual([`127.0.0.1:${closedPort} refused`, `127.0.0.1:${okPort} ok`, `127.0.0.1:${slowPort} ok`].sort());
    const okRow = got[`127.0.0.1:${okPort} ok`];
    const refusedRow = got[`127.0.0.1:${closedPort} refused`];
    const slowRow = got[`127.0.0.1:${slowPort} ok`];
    expect([okRow.count, refusedRow.count, slowRow.count]).toEqual([20, 10, 2]);
    // Ground truth: the kernel's handshake is never longer than what the client saw.
    expect(okRow.max as number).toBeLessThanOrEqual(Math.max(...ok.map((r) => r.ms)));
    expect(refusedRow.max as number).toBeLessThan(50);
    expect(slowRow.min as number).toBeGreaterThan(900);
    expect(slowRow.max as number).toBeLessThanOrEqual(Math.max(...slow.map((r) => r.ms)));
    expect(slowRow.sum).toBe(2);
    const pids = await rows(db, `SELECT pid, service, comm FROM ${MEASUREMENT.connect}`);
    expect(pids.every((r) => r.pid === process.pid)).toBe(true);
    const hist = await rows(db, `SELECT sum("count"), sum("syn_retrans"), max(max_ms) FROM ${MEASUREMENT.connectHist} GROUP BY dst, result`);
    expect(Object.fromEntries(hist.map((r) => [`${r.dst} ${r.result}`, r.sum]))).toEqual({
      [`127.0.0.1:${okPort} ok`]: 20,
      [`127.0.0.1:${closedPort} refused`]: 10,
      [`127.0.0.1:${slowPort} ok`]: 2,
    });
  }, 90_000);
});

function missingTcpstates(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  return fs.existsSync('/usr/sbin/tcpstates') ? null : 'libbpf-tools tcpstates is not installed (/usr/sbin/tcpstates)';
}

describeWith(missingTcpstates(), 'agent live: libbpf-tools tcpstates -> agent -> InfluxDB', () => {
  test('rows arrive as they happen (line-buffered) and count exactly', async () => {
    const db = await freshDatabase('agenttxt');
    const dir = tmpDir('agent-live-txt');
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const okPort = (server.address() as net.AddressInfo).port;
    const closedPort = await freePort();
    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(agentArgs(db, `${dir}/spool`, ['--source', 'tcpstates', '--source-cmd', `exec stdbuf -oL /usr/sbin/tcpstates -D ${okPort},${closedPort}`]));
      // tcpstates prints its header once attached.
      await waitFor(async () => (await agent!.status()).pipeline.stages.parse.received >= 1, 20_000, 'the tcpstates header');
      for (let i = 0; i < 5; i++) await connectOnce(okPort);
      for (let i = 0; i < 3; i++) await connectOnce(closedPort);
      // No stop needed to see them: the agent gets each row as it is printed.
      await waitFor(async () => (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)) === 8, 15_000, '8 connects in InfluxDB');
      const got = await rows(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect} GROUP BY dst, result`);
      expect(Object.fromEntries(got.map((r) => [`${r.dst} ${r.result}`, r.count]))).toEqual({
        [`127.0.0.1:${okPort} ok`]: 5,
        [`127.0.0.1:${closedPort} error`]: 3,
      });
      expect(await agent.stop()).toBe(0);
      agent = undefined;
    } finally {
      if (agent) await agent.kill9();
      await new Promise<void>((r) => server.close(() => r()));
      await dropDatabase(db);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
