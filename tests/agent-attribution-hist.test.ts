/**
 * --probe-mode hist live (root, eBPF): the agent runs the probe with --mode hist itself (its command, no
 * --source-cmd) and writes the kernel's exact histograms as tcp_connect_hist: counts per service and
 * destination equal the connects made, services come from comm and cgroup: rules (the probe's cgroup_id),
 * and no raw tcp_connect point is written. Needs a probe with --mode hist (probe v2).
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { MEASUREMENT } from '@tcplat/core';
import { CGROUP2_ROOT_INO, cgroup2Mounts } from '../agent/src/enrich/cgroup';
import { agentArgs, buildAgent, PROBE, rows, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { freePort } from './support/net';
import { describeWith, missingRootEbpf } from './support/prereq';

// The probe under test: this checkout's, or another build (TCPLAT_TEST_PROBE) while branches are apart.
const probe = process.env.TCPLAT_TEST_PROBE ?? PROBE;

function cgroupMount(): string | undefined {
  return cgroup2Mounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')).find((m) => fs.statSync(m.mountPoint).ino === CGROUP2_ROOT_INO)?.mountPoint;
}

function missing(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(probe)) return `${probe} is not built (make -C bpf)`;
  let help = '';
  try {
    help = execFileSync(probe, ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    help = String((e as { stdout?: string }).stdout ?? '');
  }
  if (!help.includes('--mode')) return `${probe} has no --mode hist (probe v2)`;
  return cgroupMount() ? null : 'no cgroup v2 hierarchy is mounted';
}

function connectOnce(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    c.on('connect', () => {
      c.destroy();
      resolve(undefined);
    });
    c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
  });
}

describeWith(missing(), 'agent --probe-mode hist: kernel histograms -> tcp_connect_hist', () => {
  test('exact counts per service and destination, cgroup: rules from cgroup_id, no raw points', async () => {
    buildAgent();
    const db = await freshDatabase('agenthist');
    const dir = tmpDir('agent-hist');
    const cg = path.join(cgroupMount()!, `tcplat-hist-${process.pid}`);
    fs.mkdirSync(cg);
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const okPort = (server.address() as net.AddressInfo).port;
    const closedPort = await freePort();
    const config = path.join(dir, 'tcplat.json');
    fs.writeFileSync(
      config,
      JSON.stringify({
        services: [{ name: 'cron-job', cgroup: `/tcplat-hist-${process.pid}` }, { name: 'api', comm: 'node' }],
        destinations: [`127.0.0.1:${okPort} -> pg-test`, `127.0.0.1:${closedPort} -> closed-test`],
      }),
    );
    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(agentArgs(db, path.join(dir, 'spool'), ['--source', 'probe', '--probe', probe, '--probe-mode', 'hist', '--hist-window', '1s', '--config', config]));
      await waitFor(async () => (await agent!.status()).source.stderr_tail.some((l) => l.includes('tcplat-probe: attached')), 20_000, 'the probe to attach');
      for (let i = 0; i < 20; i++) expect(await connectOnce(okPort)).toBeUndefined();
      for (let i = 0; i < 4; i++) expect(await connectOnce(closedPort)).toBe('ECONNREFUSED');
      // Short-lived clients in their own cgroup: a refused connect each, gone before the window closes.
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve) => {
          const c = spawn('/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null', 'sh', cg, String(closedPort)], { stdio: 'ignore' });
          c.on('close', () => resolve());
        });
      }
      const q = `SELECT sum("count") FROM ${MEASUREMENT.connectHist} WHERE dst = 'pg-test' OR dst = 'closed-test' GROUP BY service, dst, "result"`;
      const total = async () => (await rows(db, q)).reduce((n, r) => n + Number(r.sum), 0);
      await waitFor(async () => (await total()) >= 27, 30_000, '27 attempts in tcp_connect_hist');
      expect(await agent.stop()).toBe(0);
      agent = undefined;
      const got = Object.fromEntries((await rows(db, q)).map((r) => [`${r.service} ${r.dst} ${r.result}`, r.sum]));
      expect(got).toEqual({ 'api pg-test ok': 20, 'api closed-test refused': 4, 'cron-job closed-test refused': 3 });
      const h = await rows(db, `SELECT max(max_ms), min(min_ms) FROM ${MEASUREMENT.connectHist} WHERE dst = 'pg-test'`);
      expect(h[0].max as number).toBeLessThan(1000);
      expect(h[0].min as number).toBeGreaterThan(0);
      expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(0);
    } finally {
      if (agent) await agent.kill9();
      await new Promise<void>((r) => server.close(() => r()));
      await dropDatabase(db);
      fs.rmSync(dir, { recursive: true, force: true });
      try {
        fs.rmdirSync(cg);
      } catch {
        /* busy */
      }
    }
  }, 120_000);
});
