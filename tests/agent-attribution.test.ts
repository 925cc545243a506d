/**
 * Attribution from the kernel event (root, eBPF): short-lived clients, each started in its own cgroup v2
 * directory, make one refused connect and exit at once. The agent is paused (SIGSTOP) while they run, so
 * by the time it reads their events /proc/PID is gone: their service (a `cgroup:` rule) and container
 * (the docker-<id>.scope of their cgroup path) can only come from the probe's cgroup_id. Run twice: the
 * agent in the host's cgroup namespace, and in a private one (as Docker's default on cgroup v2 puts it)
 * with the host hierarchy mounted, as the compose file and the DaemonSet mount it.
 */
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { MEASUREMENT, type InfluxV1Target } from '@tcplat/core';
import { CGROUP2_ROOT_INO, cgroup2Mounts, cgroup2PathOf } from '../agent/src/enrich/cgroup';
import { agentArgs, buildAgent, PROBE, probeLine, rows, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { freePort } from './support/net';
import { describeWith, missingRootEbpf } from './support/prereq';

// The probe under test: this checkout's, or another build (TCPLAT_TEST_PROBE) while branches are apart.
const probeV2 = process.env.TCPLAT_TEST_PROBE ?? PROBE;

function hostCgroupMount(): string | null {
  try {
    return cgroup2Mounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')).find((m) => fs.statSync(m.mountPoint).ino === CGROUP2_ROOT_INO)?.mountPoint ?? null;
  } catch {
    return null;
  }
}

function missing(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(probeV2)) return `${probeV2} is not built (make -C bpf)`;
  if (!hostCgroupMount()) return 'no cgroup v2 hierarchy is mounted';
  for (const tool of ['bash', 'unshare']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return null;
}

/**
 * A shell joins `cgroupDir`, then becomes bash, whose /dev/tcp makes one connect (refused: nothing listens)
 * and exits. Resolves with its pid once it has exited and been reaped.
 */
function shortLivedRefusedConnect(cgroupDir: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn('/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec bash -c "exec 3<>/dev/tcp/127.0.0.1/$2" 2>/dev/null', 'sh', cgroupDir, String(port)], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('close', () => resolve(c.pid!));
  });
}

describeWith(missing(), 'agent attribution: cgroup_id -> cgroup path and container, after the process is gone', () => {
  const mount = hostCgroupMount()!;
  const top = `tcplat-attr-${process.pid}`;
  const containerId = crypto.randomBytes(32).toString('hex');
  const jobsRule = `/${top}/jobs`;
  const jobs = path.join(mount, top, 'jobs', `docker-${containerId}.scope`);
  const other = path.join(mount, top, 'other', 'job.scope');
  const agentCg = path.join(mount, top, 'agent');
  const dirs = [path.join(mount, top), path.dirname(jobs), jobs, path.dirname(other), other, agentCg];
  let dir: string;
  let closedPort: number;
  let config: string;

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-attr');
    for (const d of dirs) fs.mkdirSync(d);
    closedPort = await freePort();
    config = path.join(dir, 'tcplat.json');
    fs.writeFileSync(config, JSON.stringify({ services: [{ name: 'cron-job', cgroup: jobsRule }, { name: 'payments', container: containerId.slice(0, 12) }] }));
  }, 120_000);

  afterAll(() => {
    // Deepest first; a cgroup with no process left can be removed.
    for (const d of [...dirs].reverse()) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* still busy or gone */
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function run(db: InfluxV1Target, wrapper: string[], spool: string): Promise<{ agent: RunningAgent; pids: number[]; otherPids: number[] }> {
    const cmd = `exec ${probeV2} --exclude-pid $PPID --dport ${closedPort} --stats-interval 1`;
    const agent = await startAgent(agentArgs(db, spool, ['--source', 'probe', '--source-cmd', cmd, '--config', config]), wrapper);
    try {
      await waitFor(async () => (await agent.status()).source.stderr_tail.some((l) => l.includes('tcplat-probe: attached')), 20_000, 'the probe to attach');
      // Paused, the agent reads nothing: the clients have exited and been reaped when it reads their events.
      process.kill(agent.child.pid!, 'SIGSTOP');
      const pids: number[] = [];
      const otherPids: number[] = [];
      try {
        for (let i = 0; i < 5; i++) pids.push(await shortLivedRefusedConnect(jobs, closedPort));
        for (let i = 0; i < 3; i++) otherPids.push(await shortLivedRefusedConnect(other, closedPort));
        expect([...pids, ...otherPids].filter((p) => fs.existsSync(`/proc/${p}`))).toEqual([]);
      } finally {
        process.kill(agent.child.pid!, 'SIGCONT');
      }
      await waitFor(async () => (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)) >= 8, 20_000, '8 connects in InfluxDB');
      return { agent, pids, otherPids };
    } catch (e) {
      await agent.kill9();
      throw e;
    }
  }

  async function check(db: InfluxV1Target, pids: number[], otherPids: number[]): Promise<void> {
    const got = await rows(db, `SELECT pid, container, comm, "result" FROM ${MEASUREMENT.connect} GROUP BY service`);
    const jobsRows = got.filter((r) => r.service === 'cron-job');
    const otherRows = got.filter((r) => r.service !== 'cron-job');
    // The cgroup: rule matched every client of the jobs cgroup (first rule wins over the container rule).
    expect(jobsRows.map((r) => r.pid).sort()).toEqual([...pids].sort());
    expect(jobsRows.map((r) => ({ container: r.container, result: r.result, comm: r.comm }))).toEqual(jobsRows.map(() => ({ container: containerId, result: 'refused', comm: 'bash' })));
    // The others: no rule matches their cgroup, no container in their path: the default service, comm.
    expect(otherRows.map((r) => r.pid).sort()).toEqual([...otherPids].sort());
    expect(otherRows.map((r) => ({ service: r.service, container: r.container }))).toEqual(otherRows.map(() => ({ service: 'bash', container: null })));
    const hist = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} GROUP BY service`);
    expect(Object.fromEntries(hist.map((r) => [r.service, r.sum]))).toEqual({ 'cron-job': 5, bash: 3 });
  }

  test('agent in the host cgroup namespace', async () => {
    const db = await freshDatabase('agentattr');
    let agent: RunningAgent | undefined;
    try {
      const r = await run(db, [], path.join(dir, 'spool-host'));
      agent = r.agent;
      await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)) >= 8, 10_000, 'histograms');
      const st = (await agent.status()) as unknown as { source: { cgroups: { hostView: boolean; namespaceRoot: string } } };
      expect(st.source.cgroups).toMatchObject({ hostView: true, namespaceRoot: '/' });
      expect(await agent.stop()).toBe(0);
      agent = undefined;
      await check(db, r.pids, r.otherPids);
    } finally {
      if (agent) await agent.kill9();
      await dropDatabase(db);
    }
  }, 90_000);

  test('agent in a private cgroup namespace (Docker default on cgroup v2) with the host hierarchy mounted', async () => {
    const db = await freshDatabase('agentattrns');
    let agent: RunningAgent | undefined;
    try {
      // Join a cgroup, then a new cgroup namespace rooted there (and a mount namespace, as a container has).
      const wrapper = ['/bin/sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec unshare --cgroup --mount "$@"', agentCg];
      const r = await run(db, wrapper, path.join(dir, 'spool-ns'));
      agent = r.agent;
      // The agent itself sees "0::/" in /proc/self/cgroup: it found its namespace's real root.
      expect(fs.readFileSync(`/proc/${agent.child.pid}/cgroup`, 'utf8')).toMatch(new RegExp(`^0::/${top}/agent$`, 'm'));
      await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)) >= 8, 10_000, 'histograms');
      const st = (await agent.status()) as unknown as { source: { cgroups: { hostView: boolean; namespaceRoot: string } } };
      expect(st.source.cgroups).toMatchObject({ hostView: true, namespaceRoot: `/${top}/agent` });
      expect(await agent.stop()).toBe(0);
      agent = undefined;
      await check(db, r.pids, r.otherPids);
    } finally {
      if (agent) await agent.kill9();
      await dropDatabase(db);
    }
  }, 90_000);
});

describeWith(missingInflux(), 'agent: comm is the process, thread a field (probe v2 lines)', () => {
  test('threads of one process stay one series; each raw point keeps its thread', async () => {
    const db = await freshDatabase('agentthread');
    const dir = tmpDir('agent-thread');
    try {
      buildAgent();
      const t0 = 1_764_100_000_000_000_000n;
      const lines = ['HikariPool-1 c', 'pool-worker-3', 'puma srv tp 0', 'a "quoted"\\ name'].flatMap((thread, k) =>
        [0, 1].map((i) => probeLine({ tsNs: t0 + BigInt(k * 10 + i) * 1_000_000n, comm: 'java', pid: 77 }).replace('"comm":"java",', `"comm":"java","thread":${JSON.stringify(thread)},`)),
      );
      const file = path.join(dir, 'capture.ndjson');
      fs.writeFileSync(file, lines.join('\n') + '\n');
      const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
      expect(r.code).toBe(0);
      const got = await rows(db, `SELECT thread, latency_ms FROM ${MEASUREMENT.connect} GROUP BY comm, service`);
      expect(new Set(got.map((x) => `${x.comm}/${x.service}`))).toEqual(new Set(['java/java']));
      expect(got.map((x) => x.thread).sort()).toEqual(['HikariPool-1 c', 'HikariPool-1 c', 'a "quoted"\\ name', 'a "quoted"\\ name', 'pool-worker-3', 'pool-worker-3', 'puma srv tp 0', 'puma srv tp 0']);
      // Never a tag: no series per thread.
      const tags = await rows(db, `SHOW TAG KEYS FROM ${MEASUREMENT.connect}`);
      expect(tags.map((x) => x.tagKey)).not.toContain('thread');
    } finally {
      await dropDatabase(db);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

function missingThreadProbe(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(probeV2)) return `${probeV2} is not built (make -C bpf)`;
  let help = '';
  try {
    help = execFileSync(probeV2, ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    help = String((e as { stdout?: string }).stdout ?? '');
  }
  if (!help.includes('"thread"')) return `${probeV2} prints no thread field (probe v2)`;
  return fs.existsSync('/usr/bin/python3') ? null : '/usr/bin/python3 is not installed';
}

describeWith(missingThreadProbe(), 'agent live: comm = process name, thread = the pool thread that connected', () => {
  test('a renamed Python thread: comm tag and default service python3, thread field its name', async () => {
    buildAgent();
    const db = await freshDatabase('agentthreadlive');
    const dir = tmpDir('agent-thread-live');
    const port = await freePort();
    let agent: RunningAgent | undefined;
    try {
      const cmd = `exec ${probeV2} --exclude-pid $PPID --dport ${port} --stats-interval 1`;
      agent = await startAgent(agentArgs(db, path.join(dir, 'spool'), ['--source', 'probe', '--source-cmd', cmd]));
      await waitFor(async () => (await agent!.status()).source.stderr_tail.some((l) => l.includes('tcplat-probe: attached')), 20_000, 'the probe to attach');
      // Two worker threads named as pools name them (prctl PR_SET_NAME), each one refused connect.
      const py = [
        'import ctypes, socket, threading',
        'libc = ctypes.CDLL(None)',
        'def work(name):',
        '    libc.prctl(15, name.encode(), 0, 0, 0)',
        '    s = socket.socket()',
        '    try: s.connect(("127.0.0.1", ' + port + '))',
        '    except OSError: pass',
        'for n in ("pool-worker-3", "HikariPool-1 c"):',
        '    t = threading.Thread(target=work, args=(n,)); t.start(); t.join()',
      ].join('\n');
      execFileSync('/usr/bin/python3', ['-c', py]);
      await waitFor(async () => (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)) >= 2, 20_000, '2 connects in InfluxDB');
      expect(await agent.stop()).toBe(0);
      agent = undefined;
      const got = await rows(db, `SELECT thread, "result" FROM ${MEASUREMENT.connect} GROUP BY comm, service`);
      expect(got.map((r) => [r.comm, r.service, r.thread, r.result]).sort()).toEqual([
        ['python3', 'python3', 'HikariPool-1 c', 'refused'],
        ['python3', 'python3', 'pool-worker-3', 'refused'],
      ]);
    } finally {
      if (agent) await agent.kill9();
      await dropDatabase(db);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

function missingTcplife(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync('/usr/sbin/tcplife')) return 'libbpf-tools tcplife is not installed (/usr/sbin/tcplife)';
  if (!fs.existsSync('/usr/bin/python3')) return '/usr/bin/python3 is not installed';
  try {
    execFileSync('sh', ['-c', 'command -v ip && command -v unshare'], { stdio: 'ignore' });
  } catch {
    return 'ip (iproute2) or unshare is not installed';
  }
  return null;
}

describeWith(missingTcplife(), 'agent live: tcplife sessions accepted in another network namespace', () => {
  test("the listener is looked up in the row's process namespace: the accepted end is dropped, the client's port never becomes a dst", async () => {
    buildAgent();
    const db = await freshDatabase('agentlife');
    const dir = tmpDir('agent-life');
    // Ports the capture alone cannot tell apart: both in the ephemeral range, one connection, and the
    // listener on the higher port (the last-resort guess would take the lower one).
    const listen = 60000 - (process.pid % 500);
    const client = 33000 + (process.pid % 500);
    let agent: RunningAgent | undefined;
    try {
      agent = await startAgent(agentArgs(db, path.join(dir, 'spool'), ['--source', 'tcplife', '--source-cmd', `exec stdbuf -oL /usr/sbin/tcplife -L ${listen},${client}`]));
      await waitFor(async () => (await agent!.status()).pipeline.stages.parse.received >= 1, 20_000, 'the tcplife header');
      const py = [
        'import socket, time',
        `srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(("127.0.0.1", ${listen})); srv.listen()`,
        `c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); c.bind(("127.0.0.1", ${client})); c.connect(("127.0.0.1", ${listen}))`,
        'a, _ = srv.accept(); a.sendall(b"x" * 2000); a.close(); c.recv(4096); c.close()',
        // The server keeps listening a while, as servers do: the agent reads its namespace then.
        'time.sleep(4)',
      ].join('\n');
      // A network namespace of its own, as a container's: the agent's /proc/net/tcp does not show it.
      execFileSync('unshare', ['--net', 'sh', '-c', 'ip link set lo up && exec /usr/bin/python3 -c "$0"', py]);
      await waitFor(async () => (await scalar(db, `SELECT count(lifespan_ms) FROM ${MEASUREMENT.session} WHERE dst = '127.0.0.1:${listen}'`)) >= 1, 20_000, 'the session in InfluxDB');
      const st = await agent.status();
      expect(await agent.stop()).toBe(0);
      agent = undefined;
      // -L matches local ports: other loopback traffic of this machine may reuse our client port as its own
      // ephemeral port; only our two ports as destinations matter here.
      const all = await rows(db, `SELECT lifespan_ms, tx_kb, rx_kb FROM ${MEASUREMENT.session} GROUP BY dst`);
      const got = all.filter((r) => r.dst === `127.0.0.1:${listen}` || r.dst === `127.0.0.1:${client}`);
      expect(got.map((r) => r.dst)).toEqual([`127.0.0.1:${listen}`]);
      expect(got[0].rx_kb as number).toBeGreaterThan(1);
      expect(st.pipeline.stages.enrich.dropped).toBeGreaterThanOrEqual(1); // the accepted end, inbound_session
    } finally {
      if (agent) await agent.kill9();
      await dropDatabase(db);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

/** The resolver (agent/dist) run in a shell's namespaces: its state and a resolved id, as JSON. */
interface ResolverView {
  state: Record<string, unknown>;
  path: string | null;
  warnings: string[];
  procPaths: Record<string, string>;
}

function resolverIn(shell: string, cgroupDir: string, id: string): ResolverView {
  const js = [
    `const { CgroupResolver, cgroup2PathOf } = require(${JSON.stringify(path.join(__dirname, '..', 'agent', 'dist', 'enrich', 'cgroup.js'))});`,
    "const fs = require('node:fs');",
    'const warnings = [];',
    'const log = { info() {}, debug() {}, error() {}, warn: (_o, m) => warnings.push(m) };',
    'const r = new CgroupResolver({ log, minRewalkMs: 0 });',
    `const p = r.resolve(${JSON.stringify(id)});`,
    // /proc/PID/cgroup as the kernel prints it inside the namespace, mapped to host paths (text tools use these).
    `const procPaths = Object.fromEntries(['self', '${process.pid}'].map((pid) => [pid, r.hostPath(cgroup2PathOf(fs.readFileSync('/proc/' + pid + '/cgroup', 'utf8')))]));`,
    'console.log(JSON.stringify({ state: r.state, path: p ?? null, warnings, procPaths }));',
  ].join('\n');
  const out = execFileSync('/bin/sh', ['-c', `echo $$ > "$1/cgroup.procs" && exec unshare --cgroup --mount sh -c '${shell} && exec "$0" -e "$1"' "$2" "$3"`, 'sh', cgroupDir, process.execPath, js], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!) as ResolverView;
}

describeWith(missingRootEbpf() ?? (hostCgroupMount() ? null : 'no cgroup v2 hierarchy is mounted'), 'cgroup namespaces, for real (unshare): what the resolver sees', () => {
  const mount = hostCgroupMount()!;
  const top = path.join(mount, `tcplat-cgns-${process.pid}`);
  const inner = path.join(top, `docker-${'ab'.repeat(32)}.scope`);
  const other = path.join(mount, `tcplat-cgns-other-${process.pid}`);
  const mnt = `/tmp/tcplat-cgns-${process.pid}`;
  beforeAll(() => {
    buildAgent();
    for (const d of [top, inner, other]) fs.mkdirSync(d);
    fs.mkdirSync(mnt, { recursive: true });
  }, 120_000);
  afterAll(() => {
    for (const d of [inner, top, other]) {
      try {
        fs.rmdirSync(d);
      } catch {
        /* busy */
      }
    }
    fs.rmSync(mnt, { recursive: true, force: true });
  });

  test('a namespace-local cgroup2 mount beside the host one (a pod with the node hierarchy elsewhere): host paths, namespace root found by inode', () => {
    const r = resolverIn(`mount -t cgroup2 none ${mnt}`, top, String(fs.statSync(inner).ino));
    expect(r.state).toMatchObject({ mountPoint: mount, hostView: true, namespaceRoot: `/${path.basename(top)}` });
    expect(r.path).toBe(`/${path.basename(top)}/${path.basename(inner)}`);
    // Inside, the kernel prints "/" for the resolver's own cgroup and "/../..." for this jest process's:
    // both come back as the host's paths.
    const jestCg = cgroup2PathOf(fs.readFileSync('/proc/self/cgroup', 'utf8'))!;
    expect(r.procPaths).toEqual({ self: `/${path.basename(top)}`, [String(process.pid)]: jestCg });
  });

  test('only its own subtree mounted (a private namespace without the host hierarchy): a warning that says what to set; outside cgroups unresolved', () => {
    const r = resolverIn(`umount ${mount} && mount -t cgroup2 none ${mount}`, top, String(fs.statSync(other).ino));
    expect(r.state).toMatchObject({ mountPoint: mount, hostView: false, namespaceRoot: null });
    expect(r.path).toBeNull();
    expect(r.warnings.join('\n')).toMatch(/private cgroup namespace.*cgroup: host/);
    // Inside its subtree, ids still resolve, relative to the namespace.
    const inside = resolverIn(`umount ${mount} && mount -t cgroup2 none ${mount}`, top, String(fs.statSync(inner).ino));
    expect(inside.path).toBe(`/${path.basename(inner)}`);
  });
});
