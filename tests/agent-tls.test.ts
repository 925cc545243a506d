/**
 * TLS handshakes through the agent into the real InfluxDB 1.x (issue 16):
 * - live: real handshakes (a Python ssl client and a Node.js tls.connect client, against a local server that
 *   waits 300 ms before its side of the handshake; tests/support/tls-scenarios.ts) -> bpf/tcplat-probe (real
 *   uprobes) -> tcplat agent: one tls_handshake point per handshake (280-600 ms, right pid, service, dst),
 *   a handshake the client refuses (untrusted certificate) stored `failed`, tls_handshake_hist counts equal
 *   to the handshakes made and their buckets to the raw points' latencies, the probe's TLS coverage in
 *   /api/status and /metrics;
 * - import (--once) of a capture with tls lines: exact tls_handshake_hist counts per service, result, window and
 *   bucket, handshakes without their socket under dst `unknown`, a bad line refused by name, the raw limit's
 *   weights; importing it again changes nothing.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BUCKET_FIELDS, bucketIndex, MEASUREMENT, TLS_DST_UNSEEN, type InfluxV1Target } from '@tcplat/core';
import { agentArgs, buildAgent, PROBE, ROOT, rows, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith, missingRootEbpf } from './support/prereq';
import { client, NODE_CLIENT, PY_CLIENT, startTlsServer, type TlsServer } from './support/tls-scenarios';

const W = 10_000_000_000n; // hist window, ns
const T0 = (BigInt(Date.UTC(2026, 0, 1)) * 1_000_000n / W) * W;
const NODE = process.execPath;

function works(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

function missingLive(): string | null {
  const m = missingRootEbpf() ?? missingInflux();
  if (m) return m;
  if (!fs.existsSync(PROBE)) return `${PROBE} is not built (make -C bpf)`;
  if (!works('python3', ['-c', 'import ssl'])) return 'python3 with ssl is missing: run scripts/setup';
  if (!works('openssl', ['version'])) return 'openssl is missing: run scripts/setup';
  if (!works(NODE, ['-e', 'require("tls")'])) return `${NODE} cannot load tls`;
  return null;
}

/** Sums of tls_handshake_hist per tag combination, as `service/result` -> count. */
async function histCounts(db: InfluxV1Target, where = ''): Promise<Record<string, number>> {
  const r = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.tlsHist} ${where} GROUP BY service, result`);
  return Object.fromEntries(r.map((x) => [`${x.service}/${x.result}`, x.sum as number]));
}

describeWith(missingLive(), 'agent live: real TLS handshakes -> tls_handshake and tls_handshake_hist', () => {
  let db: InfluxV1Target;
  let dir: string;
  let server: TlsServer;
  let agent: RunningAgent | undefined;

  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-tls-live');
    server = await startTlsServer(dir);
    db = await freshDatabase('tlslive');
  }, 120_000);
  afterAll(async () => {
    if (agent) await agent.kill9();
    server?.proc.kill('SIGKILL');
    await dropDatabase(db);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  test('Python and Node.js handshakes stored once each, 280-600 ms, right pid/service/dst; an untrusted certificate stored failed; the histogram counts them all', async () => {
    const port = server.port;
    const cmd = `exec ${PROBE} --exclude-pid $PPID --dport ${port} --stats-interval 1`;
    agent = await startAgent(agentArgs(db, `${dir}/spool`, ['--source', 'probe', '--source-cmd', cmd]));
    // The probe's stats lines carry its TLS coverage: the host's libssl and this very node binary are attached.
    const tlsStatus = await waitFor(async () => {
      const t = ((await agent!.status()) as unknown as { source: { probe_tls: { on: boolean; files: Record<string, number> } | null } }).source.probe_tls;
      return t?.on && t.files.attached >= 2 ? t : null;
    }, 30_000, 'the probe to report its TLS uprobes attached');
    expect(Object.keys(tlsStatus.files).sort()).toEqual(['attach_failed', 'attached', 'go_crypto_tls', 'java', 'not_openssl', 'unreadable']);

    const made: Array<{ pid: number; sport: number; ok: boolean; comm: string }> = [];
    const py = async (trusted: boolean) => {
      const c = client(['python3', '-c', PY_CLIENT, String(port), trusted ? server.cert : '', 'now']);
      const pid = (await c.next()).pid as number;
      const res = await c.next();
      await c.done;
      expect(res.ok).toBe(trusted);
      if (!trusted) expect(String(res.error)).toMatch(/CERTIFICATE_VERIFY_FAILED/);
      made.push({ pid, sport: res.sport as number, ok: trusted, comm: 'python3' });
    };
    const node = async () => {
      const c = client([NODE, '-e', NODE_CLIENT, String(port), server.cert]);
      const res = await c.next();
      await c.done;
      expect(res.ok).toBe(true);
      made.push({ pid: res.pid as number, sport: res.sport as number, ok: true, comm: 'node' });
    };
    await py(true);
    await node();
    await py(true);
    await node();
    await py(false);

    await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.tlsHist}`)) === made.length, 30_000, `${made.length} handshakes in tls_handshake_hist`);
    await waitFor(async () => (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.tls}`)) === made.length, 30_000, `${made.length} tls_handshake points`);

    const points = await rows(db, `SELECT latency_ms, pid, lib, sample_weight, comm, dst, family, host, result, service FROM ${MEASUREMENT.tls}`);
    expect(points).toHaveLength(made.length);
    const byPid = new Map(points.map((p) => [p.pid as number, p]));
    for (const m of made) {
      const p = byPid.get(m.pid);
      expect(p).toMatchObject({ comm: m.comm, service: m.comm, dst: `127.0.0.1:${port}`, family: 'ipv4', host: 'testhost', lib: 'openssl', result: m.ok ? 'ok' : 'failed', sample_weight: null });
      expect(p!.latency_ms as number).toBeGreaterThanOrEqual(280);
      expect(p!.latency_ms as number).toBeLessThanOrEqual(600);
    }

    // The histogram: counts per service and result, and buckets that hold exactly the raw points' latencies.
    expect(await histCounts(db)).toEqual({ 'node/ok': 2, 'python3/ok': 2, 'python3/failed': 1 });
    const h = await rows(db, `SELECT ${BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ')}, sum(syn_retrans) AS syn, min(min_ms) AS lo, max(max_ms) AS hi FROM ${MEASUREMENT.tlsHist} GROUP BY dst`);
    expect(h).toHaveLength(1);
    expect(h[0].dst).toBe(`127.0.0.1:${port}`);
    const expected = new Array<number>(BUCKET_FIELDS.length).fill(0);
    for (const p of points) expected[bucketIndex(p.latency_ms as number)]++;
    expect(BUCKET_FIELDS.map((f) => h[0][f])).toEqual(expected);
    expect(h[0].syn).toBe(0);
    expect(h[0].lo).toBeCloseTo(Math.min(...points.map((p) => p.latency_ms as number)), 6);
    expect(h[0].hi).toBeCloseTo(Math.max(...points.map((p) => p.latency_ms as number)), 6);

    // The same clients' TCP connects, under the same service and destination.
    const connects = await rows(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect} GROUP BY service, dst`);
    expect(Object.fromEntries(connects.map((c) => [`${c.service} ${c.dst}`, c.count]))).toEqual({ [`node 127.0.0.1:${port}`]: 2, [`python3 127.0.0.1:${port}`]: 3 });

    // Counted where an operator looks.
    const status = (await agent.status()) as unknown as { pipeline: { tls_handshakes: Record<string, number> }; source: { probe_tls: { handshakes: Record<string, number> } } };
    expect(status.pipeline.tls_handshakes).toEqual({ ok: 4, failed: 1 });
    await waitFor(async () => {
      const s = (await agent!.status()) as unknown as typeof status;
      return s.source.probe_tls.handshakes.ok === 4 && s.source.probe_tls.handshakes.failed === 1;
    }, 10_000, "the probe's stats line to count the handshakes");
    const metrics = await (await fetch(`${agent.url}/metrics`)).text();
    expect(metrics).toMatch(/^tcplat_tls_handshakes_total\{result="ok"\} 4$/m);
    expect(metrics).toMatch(/^tcplat_tls_handshakes_total\{result="failed"\} 1$/m);
    expect(metrics).toMatch(/^tcplat_probe_tls_on 1$/m);
    expect(metrics).toMatch(/^tcplat_probe_tls_files\{outcome="attached"\} [1-9]\d*$/m);
    expect(metrics).toMatch(/^tcplat_probe_tls_lost\{kind="drop",reason="ringbuf_full"\} 0$/m);

    // tcplat top: the TLS columns beside the connect columns of the same service -> destination. Once top
    // listens (the agent counts it as a stream client), one more Python handshake.
    const top = spawn(process.execPath, [path.join(ROOT, 'bin', 'tcplat'), 'top', '--agent', agent.url, '--once', '--interval', '8s', '--sort', 'name'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    top.stdout.on('data', (d: Buffer) => (out += d.toString()));
    top.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const topDone = new Promise<number | null>((r) => top.on('close', r));
    await waitFor(async () => /^tcplat_stream_clients 1$/m.test(await (await fetch(`${agent!.url}/metrics`)).text()), 15_000, 'tcplat top to connect');
    await py(true);
    expect(await topDone).toBe(0);
    expect(out).toMatch(/SYN-RETX\s+TLS\/S\s+TLS-P50\s+TLS-P99\s+TLS-FAIL\s+FAILURES/);
    const line = out.split('\n').find((l) => l.startsWith('python3 ') && l.includes(`127.0.0.1:${port}`));
    // 1 connect and 1 handshake over the ~8 summaries top heard: ~0.1/s each; the handshake's p50 and p99
    // ~300 ms; none failed.
    expect(line).toMatch(/\s0\.[12]\s+\S+\s+\S+\s+\S+\s+0\s+0\.[12]\s+(2[89]\d|[3-5]\d\d)ms\s+(2[89]\d|[3-5]\d\d)ms\s+0\s+-$/);
  }, 120_000);
});

interface TlsInput {
  tsNs: bigint;
  latencyNs: number;
  comm: string;
  result: 'ok' | 'failed';
  pid: number;
  /** Without a socket: the probe did not see it (family ""). */
  dport?: number;
}

/** A tls line as bpf/tcplat-probe prints it (bpf/README.md, "TLS handshakes"; ts_ns an exact integer). */
function tlsLine(e: TlsInput): string {
  const socket = e.dport !== undefined ? { family: 'ipv4', saddr: '127.0.0.1', sport: 40000 + (e.pid % 20000), daddr: '10.0.0.9', dport: e.dport } : { family: '', saddr: '', sport: 0, daddr: '', dport: 0 };
  const o = { type: 'tls', ts_ns: '@TS@', latency_ns: e.latencyNs, result: e.result, pid: e.pid, tid: e.pid, comm: e.comm, thread: e.comm, cgroup_id: 1, lib: 'openssl', calls: 1, ...socket };
  return JSON.stringify(o).replace('"@TS@"', e.tsNs.toString());
}

describeWith(missingInflux(), 'agent import (--once): tls lines -> exact tls_handshake_hist', () => {
  let db: InfluxV1Target;
  let dir: string;
  beforeAll(() => {
    buildAgent();
    dir = tmpDir('agent-tls-import');
  }, 120_000);
  beforeEach(async () => {
    db = await freshDatabase('tlsimport');
  });
  afterEach(async () => {
    await dropDatabase(db);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('exact counts per service, result, window and bucket; no socket -> dst unknown; a bad line refused; a second import changes nothing', async () => {
    const lines: string[] = [];
    const perKey = new Map<string, number>();
    const perWindow = new Map<bigint, number>();
    const buckets = new Array<number>(BUCKET_FIELDS.length).fill(0);
    // From 0.2 ms to 40 s (past the last connect bound: the overflow bucket).
    const latencies = [200_000, 1_000_000, 1_000_001, 45_000_000, 310_000_000, 999_000_000, 3_000_000_000, 40_000_000_000];
    let unseen = 0;
    for (let i = 0; i < 1200; i++) {
      const comm = ['ruby', 'node', 'python3'][i % 3];
      const result = i % 7 === 0 ? 'failed' : 'ok';
      const latencyNs = latencies[i % latencies.length];
      const tsNs = T0 + BigInt(i) * 25_000_000n + 7n; // 30 s of handshakes
      const noSocket = i % 11 === 0;
      if (noSocket) unseen++;
      lines.push(tlsLine({ tsNs, latencyNs, comm, result, pid: 1000 + i, dport: noSocket ? undefined : 5432 }));
      // Interleaved with the connects of the same capture, as the probe prints them.
      if (i % 5 === 0) lines.push(`{"type":"connect","ts_ns":${tsNs - 1_000_000n},"latency_ns":100000,"result":"ok","errno":0,"syn_retrans":0,"pid":${1000 + i},"tid":${1000 + i},"comm":"${comm}","cgroup_id":1,"family":"ipv4","saddr":"127.0.0.1","sport":${40000 + i},"daddr":"10.0.0.9","dport":5432}`);
      perKey.set(`${comm}/${result}`, (perKey.get(`${comm}/${result}`) ?? 0) + 1);
      perWindow.set(tsNs - (tsNs % W), (perWindow.get(tsNs - (tsNs % W)) ?? 0) + 1);
      buckets[bucketIndex(latencyNs / 1e6)]++;
    }
    // One bad line: refused with a clear error, counted; nothing else lost.
    lines.push(tlsLine({ tsNs: T0, latencyNs: 5, comm: 'ruby', result: 'ok', pid: 1, dport: 5432 }).replace('"result":"ok"', '"result":"maybe"'));
    const file = path.join(dir, 'tls.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');

    const check = async () => {
      expect(await histCounts(db)).toEqual(Object.fromEntries(perKey));
      const windows = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.tlsHist} WHERE time >= 0 GROUP BY time(10s) fill(none)`);
      expect(new Map(windows.map((x) => [BigInt(x.time as number), x.sum]))).toEqual(perWindow);
      const b = await rows(db, `SELECT ${BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ')} FROM ${MEASUREMENT.tlsHist}`);
      expect(BUCKET_FIELDS.map((f) => b[0][f])).toEqual(buckets);
      expect(buckets[buckets.length - 1]).toBeGreaterThan(0); // the 40 s handshakes: overflow
      const dsts = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.tlsHist} GROUP BY dst`);
      expect(Object.fromEntries(dsts.map((x) => [x.dst, x.sum]))).toEqual({ '10.0.0.9:5432': 1200 - unseen, [TLS_DST_UNSEEN]: unseen });
      expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.tls}`)).toBe(1200);
      expect(await scalar(db, `SELECT count(DISTINCT(pid)) FROM ${MEASUREMENT.tls}`)).toBe(1200);
      // A handshake without its socket has no family tag.
      expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.tls} WHERE family = ''`)).toBe(unseen);
      // The connects of the capture are unaffected by the TLS lines between them.
      expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(240);
    };
    const a = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-a'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(a.code).toBe(0);
    expect(a.stderr).toMatch(/field result must be one of ok, failed, got \\"maybe\\"/);
    await check();
    const b = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-b'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(b.code).toBe(0);
    await check(); // the same points at the same times: overwritten, not added
  }, 90_000);

  test('raw tls_handshake points are rate-limited per second of event time, with weights; the histogram stays exact', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 1500; i++) lines.push(tlsLine({ tsNs: T0 + BigInt(i) * 500_000n, latencyNs: 12_000_000, comm: 'ruby', result: 'ok', pid: 100 + i, dport: 443 })); // 1500 in 0.75 s
    for (let i = 0; i < 40; i++) lines.push(tlsLine({ tsNs: T0 + 2_000_000_000n + BigInt(i) * 1_000_000n, latencyNs: 12_000_000, comm: 'ruby', result: 'failed', pid: 5000 + i, dport: 443 }));
    const file = path.join(dir, 'dense-tls.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-dense'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '1000']));
    expect(r.code).toBe(0);
    const perSecond = await rows(db, `SELECT count(latency_ms), sum(sample_weight) FROM ${MEASUREMENT.tls} WHERE time >= ${T0} AND time < ${T0 + W} GROUP BY time(1s) fill(none)`);
    expect(perSecond.map((x) => x.count)).toEqual([1000, 40]);
    expect(perSecond[0].sum).toBeCloseTo(1500, 3);
    expect(perSecond[1].sum).toBeNull(); // not sampled: no weight field
    expect(await histCounts(db)).toEqual({ 'ruby/ok': 1500, 'ruby/failed': 40 });
  }, 60_000);
});

// The capture above is written in the probe's own format: a live probe's tls line parses to the same fields.
test('the synthetic tls lines have the shape of the probe documentation example', () => {
  const readme = fs.readFileSync(path.join(__dirname, '..', 'bpf', 'README.md'), 'utf8');
  const example = JSON.parse(/^\{"type":"tls".*\}$/m.exec(readme)![0]) as Record<string, unknown>;
  const ours = JSON.parse(tlsLine({ tsNs: 1n, latencyNs: 1, comm: 'x', result: 'ok', pid: 1, dport: 1 })) as Record<string, unknown>;
  expect(Object.keys(ours).sort()).toEqual(Object.keys(example).sort());
});
