/**
 * Attacks over HTTP on the real services (bin/tcplat agent / renderer as child processes):
 * - slow bodies: 1,000 clients that send headers and trickle a body, against a service limited to 1,024 file
 *   descriptors (as in the report that found it): every one is closed within the request timeout, and a
 *   normal client gets answers all the while, with and without a token;
 * - loopback by resolution: in a mount namespace whose /etc/hosts maps localhost to 10.77.0.1 (a real
 *   address of a new network namespace), both services refuse to listen without a
 *   token, and with one they serve on that address and ask for it.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describeWith, missingRootEbpf } from './support/prereq';
import { get, metric, runCommand, runToExit, startService, type Service } from './services-support';

const PYTHON = '/usr/bin/python3';
const TOKEN = 'hardening-test-token-0123456789';
const REQUEST_TIMEOUT_S = 4;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function tmp(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `tcplat-${prefix}-`));
  dirs.push(d);
  return d;
}

function agentArgs(extra: string[]): string[] {
  // No InfluxDB traffic happens in these tests (the source prints nothing): an unused address will do.
  return ['agent', '--source', 'ndjson', '--source-cmd', 'exec sleep 600', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'x', '--spool-dir', tmp('spool'), '--host', 'h', ...extra];
}

function rendererArgs(extra: string[]): string[] {
  return ['renderer', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'x', '--workers', '1', '--python', PYTHON, ...extra];
}

interface SlowClient {
  /** ms from connect to the server closing it. */
  closed: Promise<number>;
  status: () => string;
}

/**
 * A client that never finishes its request: `body` sends the headers (a body small enough for the body
 * limit), then one body byte every 500 ms; `headers` sends the request line, then one header line every 500 ms.
 */
function slowClient(port: number, method: string, urlPath: string, headers: string, mode: 'body' | 'headers'): SlowClient {
  let first = '';
  const closed = new Promise<number>((resolve) => {
    const t0 = Date.now();
    const s = net.connect(port, '127.0.0.1');
    let trickle: NodeJS.Timeout | null = null;
    s.on('connect', () => {
      if (mode === 'body') {
        s.write(`${method} ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}Content-Type: application/json\r\nContent-Length: 8000\r\n\r\n{`);
        trickle = setInterval(() => s.write('1'), 500);
      } else {
        s.write(`${method} ${urlPath} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}`);
        trickle = setInterval(() => s.write('X-Slow: 1\r\n'), 500);
      }
    });
    s.on('data', (c: Buffer) => {
      if (!first) first = c.toString('latin1').split('\r\n')[0];
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (trickle) clearInterval(trickle);
      resolve(Date.now() - t0);
    });
  });
  return { closed, status: () => first || '(closed without an answer)' };
}

async function slowBodyAttack(svc: Service, target: { method: string; path: string }, probes: { path: string; headers: Record<string, string> }[], token?: string) {
  const port = Number(new URL(svc.url).port);
  const attackers: SlowClient[] = [];
  for (let i = 0; i < 1000; i++) {
    attackers.push(slowClient(port, target.method, target.path, token ? `Authorization: Bearer ${token}\r\n` : '', i % 4 === 3 ? 'headers' : 'body'));
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
  }
  // A normal client polls all the while the attackers are connected.
  const answers: { path: string; status: number; ms: number }[] = [];
  let done = false;
  const allClosed = Promise.all(attackers.map((a) => a.closed)).finally(() => (done = true));
  const polling = (async () => {
    while (!done) {
      for (const p of probes) {
        const r = await get(svc.url + p.path, p.headers, 20_000).catch((e: Error) => ({ status: 0, ms: NaN, body: e.message }));
        answers.push({ path: p.path, status: r.status, ms: r.ms });
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const lifetimes = await allClosed;
  await polling;
  return { lifetimes, answers, statuses: attackers.map((a) => a.status()) };
}

function checkAttack(r: Awaited<ReturnType<typeof slowBodyAttack>>) {
  // Every slow client is closed by the server, and none lives much beyond the request timeout.
  expect(r.lifetimes.length).toBe(1000);
  expect(Math.max(...r.lifetimes)).toBeLessThan((REQUEST_TIMEOUT_S + 8) * 1000);
  // The normal client was answered throughout, every time.
  expect(r.answers.length).toBeGreaterThanOrEqual(4);
  expect(r.answers.filter((a) => a.status !== 200)).toEqual([]);
}

const missingPython = fs.existsSync(PYTHON) ? null : `${PYTHON} is missing (sudo scripts/setup)`;

describeWith(missingPython, 'slow bodies against both services (1,024 file descriptors)', () => {
  const prefix = ['prlimit', '--nofile=1024:1024', '--'];
  const limits = ['--request-timeout', `${REQUEST_TIMEOUT_S}s`, '--listen', '127.0.0.1:0', '--log-level', 'info'];

  for (const withToken of [false, true]) {
    test(`agent${withToken ? ' with a token' : ''}: trickling clients are closed, the API keeps answering`, async () => {
      const svc = await startService(agentArgs([...limits, ...(withToken ? ['--api-token', TOKEN] : [])]), { prefix });
      try {
        const auth: Record<string, string> = withToken ? { authorization: `Bearer ${TOKEN}` } : {};
        // The agent takes no bodies, but a GET may carry one: node reads it before the request is complete.
        const r = await slowBodyAttack(svc, { method: 'GET', path: '/api/status' }, [
          { path: '/healthz', headers: {} },
          { path: '/api/status', headers: auth },
        ], withToken ? TOKEN : undefined);
        checkAttack(r);
        const m = (await get(svc.url + '/metrics', auth)).body;
        expect(metric(m, 'tcplat_http_connections_closed_total{reason="evicted"}') + metric(m, 'tcplat_http_connections_closed_total{reason="request_timeout"}')).toBeGreaterThan(0);
        expect(metric(m, 'tcplat_http_connections')).toBeLessThan(20);
      } finally {
        await svc.stop();
      }
    }, 120_000);

    test(`renderer${withToken ? ' with a token' : ''}: trickling clients are closed, the renderer keeps answering`, async () => {
      const svc = await startService(rendererArgs([...limits, ...(withToken ? ['--auth-token', TOKEN] : [])]), { prefix });
      try {
        const auth: Record<string, string> = withToken ? { authorization: `Bearer ${TOKEN}` } : {};
        const r = await slowBodyAttack(svc, { method: 'POST', path: '/links' }, [
          { path: '/healthz', headers: {} },
          { path: '/metrics', headers: auth },
        ], withToken ? TOKEN : undefined);
        checkAttack(r);
        const m = (await get(svc.url + '/metrics', auth)).body;
        expect(metric(m, 'tcplat_http_connections_closed_total{reason="evicted"}') + metric(m, 'tcplat_http_connections_closed_total{reason="request_timeout"}')).toBeGreaterThan(0);
      } finally {
        await svc.stop();
      }
    }, 120_000);
  }
});

/** Why the namespace test cannot run here, or null. */
function missingNamespaces(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network and mount namespaces)';
  for (const tool of ['/usr/bin/unshare', '/usr/bin/nsenter', '/usr/sbin/ip']) if (!fs.existsSync(tool)) return `${tool} is missing`;
  return null;
}

describeWith(missingNamespaces(), 'loopback is decided by what the listen name resolves to', () => {
  // A new network namespace holding 10.77.0.1 (on its lo: this kernel has no dummy or veth devices; the
  // address is not a loopback address and would be reachable by anything routed to it), and a new mount
  // namespace whose /etc/hosts maps localhost there (as in the report: both services ran open on it).
  const hosts = path.join(tmp('hosts'), 'hosts');
  fs.writeFileSync(hosts, '10.77.0.1 localhost\n');
  const setup = 'ip link set lo up && ip addr add 10.77.0.1/24 dev lo && mount --bind "$0" /etc/hosts && exec "$@"';
  const prefix = ['unshare', '--net', '--mount', '--', 'sh', '-c', setup, hosts];

  test.each([
    ['agent', agentArgs(['--listen', 'localhost:0']), '--api-token'],
    ['renderer', rendererArgs(['--listen', 'localhost:0']), '--auth-token'],
  ])('%s without a token refuses to listen on a localhost that is not loopback', async (_name, args, flag) => {
    const r = await runToExit(args, { prefix });
    expect(r.code).toBe(2);
    expect(r.output).toContain(`--listen localhost:0 resolves to 10.77.0.1, which is not loopback, and the service refuses to start unauthenticated there: give ${flag}`);
    expect(r.output).not.toMatch(/listening at|serving on/);
  }, 60_000);

  test.each([
    ['agent', agentArgs(['--listen', 'localhost:0', '--log-level', 'info', '--api-token', TOKEN]), '/api/status'],
    ['renderer', rendererArgs(['--listen', 'localhost:0', '--log-level', 'info', '--auth-token', TOKEN]), '/metrics'],
  ])('%s with a token serves there, and asks for the token', async (_name, args, route) => {
    const svc = await startService(args, { prefix });
    try {
      expect(svc.url).toMatch(/^http:\/\/10\.77\.0\.1:\d+$/);
      // The service's network namespace is the unshare child's (the node process it exec'd into).
      const ask = async (headers: Record<string, string>) => {
        const script = `fetch(${JSON.stringify(svc.url + route)}, { headers: ${JSON.stringify(headers)} }).then((r) => console.log(r.status), (e) => { console.log('error ' + e.message); })`;
        const r = await runCommand(['nsenter', '-t', String(svc.pid), '-n', '--', process.execPath, '-e', script]);
        return r.output.trim().split('\n').pop();
      };
      expect(await ask({})).toBe('401');
      expect(await ask({ authorization: `Bearer ${TOKEN}` })).toBe('200');
    } finally {
      await svc.stop();
    }
  }, 90_000);
});
