/**
 * /api/stream under clients that never read, against the real agent (bin/tcplat agent) fed by a steady
 * source of events and writing to the real InfluxDB: 200 clients ask for the stream, the cap answers the
 * ones beyond it with 503, the agent's memory and its API's latency stay bounded, and the clients that
 * stopped reading are disconnected and counted.
 *
 * The idle clients are Python sockets with a 4 KiB receive buffer: a real TCP peer that stops reading, whose
 * window closes within a few frames (a Node client cannot set SO_RCVBUF; with the kernel's default buffers
 * it would take minutes of events to fill them).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';
import { buildAgent } from './agent-support';
import { get, metric, rssBytes, startService } from './services-support';

const PYTHON = '/usr/bin/python3';
const CLIENTS = 200;
const CAP = 150;

/** Prints probe-format connect events, about `rate` per second, with the wall clock as ts_ns. */
const GENERATOR = `
let n = 0;
setInterval(() => {
  const lines = [];
  const base = BigInt(Date.now()) * 1000000n;
  for (let i = 0; i < RATE / 20; i++, n++) {
    lines.push(JSON.stringify({ type: 'connect', ts_ns: '@', latency_ns: 100000 + (n % 50) * 1000, result: 'ok', errno: 0, syn_retrans: 0, pid: 4242, tid: 4242, comm: 'svc' + (n % 5), cgroup_id: 1, family: 'ipv4', saddr: '127.0.0.1', sport: 40000 + (n % 20000), daddr: '10.0.0.' + (n % 7), dport: 5432 }).replace('"@"', String(base + BigInt(i))));
  }
  process.stdout.write(lines.join('\\n') + '\\n');
}, 50);
`;

/** Opens N sockets with a tiny receive buffer, sends GET /api/stream, prints each status line as JSON, then never reads again. */
const IDLE_CLIENTS = `
import json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks, statuses = [], []
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    s.sendall(b"GET /api/stream HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    socks.append(s)
for s in socks:
    s.settimeout(30)
    statuses.append(s.recv(64).split(b"\\r\\n")[0].decode())
print(json.dumps(statuses), flush=True)
sys.stdin.read()  # hold the sockets, unread, until the test closes stdin
`;

const missing = missingInflux() ?? (fs.existsSync(PYTHON) ? null : `${PYTHON} is missing`);

describeWith(missing, 'agent /api/stream against clients that never read', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  beforeAll(() => buildAgent(), 300_000);

  test(`${CLIENTS} idle SSE clients: ${CAP} served then dropped, the rest 503; RSS and API latency bounded`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-sse-'));
    dirs.push(dir);
    const gen = path.join(dir, 'gen.js');
    fs.writeFileSync(gen, `const RATE = 1000;\n${GENERATOR}`);
    const db = await freshDatabase('ssehard');
    const svc = await startService([
      'agent', '--source', 'ndjson', '--source-cmd', `exec ${process.execPath} ${gen}`,
      '--influx-url', db.url, '--influx-db', db.db, '--spool-dir', path.join(dir, 'spool'), '--host', 'h',
      '--listen', '127.0.0.1:0', '--stream-max-clients', String(CAP), '--stream-stall', '3s',
    ]);
    const port = new URL(svc.url).port;
    const clients = spawn(PYTHON, ['-c', IDLE_CLIENTS, '127.0.0.1', port, String(CLIENTS)], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      // Warm up with events flowing, then take the baseline.
      const before: number[] = [];
      for (let i = 0; i < 20; i++) before.push((await get(svc.url + '/api/status')).ms);
      before.sort((a, b) => a - b);
      const baseline = rssBytes(svc.pid);

      let out = '';
      clients.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const deadline = Date.now() + 60_000;
      while (!out.includes('\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const statuses = JSON.parse(out) as string[];
      expect(statuses.filter((s) => s === 'HTTP/1.1 200 OK').length).toBe(CAP);
      expect(statuses.filter((s) => s === 'HTTP/1.1 503 Service Unavailable').length).toBe(CLIENTS - CAP);

      // With the clients connected and unread, until every served one is dropped (the kernel's socket buffers,
      // about 4 MB each, fill first: some 20 s of events), at least 15 s: the API answers, memory stays bounded.
      const latencies: number[] = [];
      let peak = 0;
      const start = Date.now();
      let m = '';
      while (Date.now() < start + 15_000 || (metric(m, 'tcplat_stream_clients') > 0 && Date.now() < start + 120_000)) {
        const r = await get(svc.url + '/api/status');
        expect(r.status).toBe(200);
        latencies.push(r.ms);
        peak = Math.max(peak, rssBytes(svc.pid));
        m = (await get(svc.url + '/metrics')).body;
        await new Promise((r) => setTimeout(r, 250));
      }
      latencies.sort((a, b) => a - b);
      // eslint-disable-next-line no-console
      console.log(`SSE: /api/status p50 before the clients ${before[10].toFixed(0)} ms; baseline RSS ${(baseline / 2 ** 20).toFixed(0)} MiB, peak ${(peak / 2 ** 20).toFixed(0)} MiB; /api/status p50 ${latencies[latencies.length >> 1].toFixed(0)} ms, max ${latencies[latencies.length - 1].toFixed(0)} ms; load ${os.loadavg()[0].toFixed(1)}; all dropped after ${((Date.now() - start) / 1000).toFixed(0)} s`);
      expect(peak - baseline).toBeLessThan(150 * 2 ** 20);
      expect(latencies[latencies.length - 1]).toBeLessThan(3000);
      expect(metric(m, 'tcplat_stream_clients_refused_total')).toBe(CLIENTS - CAP);
      // Every served client stopped reading: each one is disconnected after the stall time, and counted.
      expect(metric(m, 'tcplat_stream_clients_dropped_total{reason="stalled"}')).toBe(CAP);
      expect(metric(m, 'tcplat_stream_clients')).toBe(0);
      expect(metric(m, 'tcplat_stream_skipped_total')).toBeGreaterThan(0);

      // Room again: a client that reads gets the stream.
      const ac = new AbortController();
      const res = await fetch(svc.url + '/api/stream', { signal: ac.signal });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('event: summary')) text += new TextDecoder().decode((await reader.read()).value);
      ac.abort();
    } finally {
      clients.stdin.end();
      clients.kill('SIGKILL');
      await svc.stop();
      await dropDatabase(db);
    }
  }, 240_000);
});
