import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { ConnectionGuard, fastifyHttpOptions, httpLimitsFromConfig, checkHttpLimits } from './http';
import { Metrics } from './metrics';

/** A real server on loopback with the guard; `hold` keeps a response open until released. */
async function server(max: number) {
  const metrics = new Metrics();
  const held: http.ServerResponse[] = [];
  const srv = http.createServer((req, res) => {
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  const guard = new ConnectionGuard(srv, max, metrics);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  return { srv, guard, metrics, held, port, close: () => new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r()))) };
}

function connect(port: number): Promise<{ s: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    s.resume(); // read (and drop) what the server sends, so its close is seen
    s.once('connect', () => resolve({ s, closed }));
    s.once('error', reject);
  });
}

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject);
  });
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ConnectionGuard (real sockets on loopback)', () => {
  test('at the cap, a new connection closes the oldest one that is not being answered', async () => {
    const t = await server(4);
    try {
      // Four connections that send half a request and stop: they hold every slot.
      const slow = [];
      for (let i = 0; i < 4; i++) {
        const c = await connect(t.port);
        c.s.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{');
        slow.push(c);
      }
      await until(() => t.guard.size === 4);
      // A normal client still gets its answer: the oldest slow connection makes room.
      expect(await get(t.port, '/')).toBe(200);
      await slow[0].closed;
      expect(slow.slice(1).every((c) => !c.s.destroyed)).toBe(true);
      expect(t.guard.count('evicted')).toBe(1);
      expect(t.metrics.prometheus()).toContain('tcplat_http_connections_closed_total{reason="evicted"} 1');
    } finally {
      await t.close();
    }
  });

  test('when every connection is being answered, a new one is refused (counted), and nothing answered is cut', async () => {
    const t = await server(2);
    try {
      const holders = [];
      for (let i = 0; i < 2; i++) {
        const c = await connect(t.port);
        c.s.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n');
        holders.push(c);
      }
      await until(() => t.held.length === 2);
      const extra = await connect(t.port);
      await extra.closed;
      expect(t.guard.count('refused')).toBe(1);
      expect(holders.every((c) => !c.s.destroyed)).toBe(true);
      // Answers finish: the slots are idle keep-alive connections again, and give way to new clients.
      for (const r of t.held) r.end('done');
      expect(await get(t.port, '/')).toBe(200);
      expect(t.guard.count('evicted')).toBe(1);
    } finally {
      await t.close();
    }
  });

  test('limits from config: fastify and node options, and their validation', () => {
    const l = httpLimitsFromConfig({ 'request-timeout': 4000, 'idle-timeout': 30_000, 'max-connections': 100 }, 1024);
    expect(l).toEqual({ requestTimeoutMs: 4000, idleTimeoutMs: 30_000, keepAliveTimeoutMs: 5000, maxConnections: 100, bodyLimit: 1024 });
    expect(fastifyHttpOptions(l)).toEqual({
      http: { requestTimeout: 4000, headersTimeout: 4000, keepAliveTimeout: 5000, connectionsCheckingInterval: 1000 },
      requestTimeout: 4000,
      connectionTimeout: 30_000,
      keepAliveTimeout: 5000,
      bodyLimit: 1024,
    });
    expect(checkHttpLimits({ ...l, requestTimeoutMs: 10 })).toMatch(/--request-timeout: at least 1s/);
    expect(checkHttpLimits(l)).toBeNull();
  });
});
