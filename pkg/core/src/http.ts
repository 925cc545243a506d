/**
 * HTTP limits shared by the agent and the renderer, so no client can starve a service: how long a client
 * may take to send one request (headers and body), how long an idle connection may stay open, and how many
 * connections may be open at once, well under the process's file-descriptor limit.
 *
 * At the connection cap a new connection does not simply bounce: the oldest connection that is not being
 * answered (still sending its request, or idle between keep-alive requests) is closed to make room, so
 * clients that trickle a request cannot lock out the clients that send theirs at once. Only when every
 * connection is being answered is the new one refused. Every close is counted by reason in /metrics.
 */
import type http from 'node:http';
import type net from 'node:net';
import type { OptionSpec } from './config';
import type { Counter, Metrics } from './metrics';

export const HTTP_OPTIONS: readonly OptionSpec[] = [
  {
    name: 'request-timeout',
    type: 'duration',
    arg: 'DURATION',
    default: '10s',
    help: 'longest a client may take to send one whole request (headers and body); then it gets 408 and the connection is closed',
  },
  { name: 'idle-timeout', type: 'duration', arg: 'DURATION', default: '60s', help: 'a connection with no traffic either way for this long is closed' },
  {
    name: 'max-connections',
    type: 'int',
    arg: 'N',
    default: 256,
    min: 4,
    max: 60_000,
    help: 'open HTTP connections at most (keep it well under ulimit -n); a new one beyond it closes the oldest connection not being answered',
  },
];

export interface HttpLimits {
  /** Whole request (headers and body) must arrive within this (ms). */
  requestTimeoutMs: number;
  /** A socket without traffic for this long is closed (ms). */
  idleTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  keepAliveTimeoutMs: number;
  maxConnections: number;
  /** Largest request body (bytes). */
  bodyLimit: number;
}

/** Keep-alive idle time: node's default; long enough for a dashboard's next poll to reuse the connection. */
export const KEEP_ALIVE_TIMEOUT_MS = 5000;

export function httpLimitsFromConfig(v: Record<string, unknown>, bodyLimit: number): HttpLimits {
  return {
    requestTimeoutMs: v['request-timeout'] as number,
    idleTimeoutMs: v['idle-timeout'] as number,
    keepAliveTimeoutMs: Math.min(KEEP_ALIVE_TIMEOUT_MS, v['idle-timeout'] as number),
    maxConnections: v['max-connections'] as number,
    bodyLimit,
  };
}

/** Validation of the limits beyond each flag's own range; returns an error message or null. */
export function checkHttpLimits(l: HttpLimits): string | null {
  if (!(l.requestTimeoutMs >= 1000)) return `--request-timeout: at least 1s, got ${l.requestTimeoutMs} ms`;
  if (!(l.idleTimeoutMs >= 1000)) return `--idle-timeout: at least 1s, got ${l.idleTimeoutMs} ms`;
  return null;
}

/**
 * The fastify server options for these limits. Node checks request deadlines every
 * `connectionsCheckingInterval` (30 s by default, which would let a trickling client stay twice the
 * timeout), so the check runs every second here.
 */
export function fastifyHttpOptions(l: HttpLimits): {
  http: http.ServerOptions;
  requestTimeout: number;
  connectionTimeout: number;
  keepAliveTimeout: number;
  bodyLimit: number;
} {
  return {
    http: {
      requestTimeout: l.requestTimeoutMs,
      headersTimeout: l.requestTimeoutMs,
      keepAliveTimeout: l.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, l.requestTimeoutMs),
    },
    requestTimeout: l.requestTimeoutMs,
    connectionTimeout: l.idleTimeoutMs,
    keepAliveTimeout: l.keepAliveTimeoutMs,
    bodyLimit: l.bodyLimit,
  };
}

interface Conn {
  /** Requests on this connection whose body has arrived and whose answer is not finished. */
  answering: number;
}

export class ConnectionGuard {
  private readonly conns = new Map<net.Socket, Conn>();
  private readonly closed = new Map<string, Counter>();

  constructor(
    private readonly server: http.Server,
    readonly maxConnections: number,
    private readonly metrics: Metrics,
  ) {
    metrics.gauge('tcplat_http_connections', 'Open HTTP connections', () => this.conns.size);
    for (const reason of ['evicted', 'refused', 'request_timeout', 'client_error']) this.counter(reason);
    server.on('connection', (s: net.Socket) => this.onConnection(s));
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => this.onRequest(req, res));
    server.on('clientError', (err: NodeJS.ErrnoException) => {
      // fastify answers these itself (408 for a request timeout, 400 for a bad request); this only counts them.
      this.counter(err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT' ? 'request_timeout' : 'client_error').inc();
    });
  }

  private counter(reason: string): Counter {
    let c = this.closed.get(reason);
    if (!c) {
      c = this.metrics.counter('tcplat_http_connections_closed_total', 'HTTP connections the service closed to protect itself, by reason', { reason });
      this.closed.set(reason, c);
    }
    return c;
  }

  get size(): number {
    return this.conns.size;
  }

  count(reason: string): number {
    return this.closed.get(reason)?.value ?? 0;
  }

  private onConnection(s: net.Socket): void {
    if (this.conns.size >= this.maxConnections) {
      // Map order is connection order: the first one found not being answered is the oldest.
      let victim: net.Socket | null = null;
      for (const [sock, c] of this.conns) {
        if (c.answering === 0) {
          victim = sock;
          break;
        }
      }
      if (!victim) {
        this.counter('refused').inc();
        s.destroy();
        return;
      }
      this.counter('evicted').inc();
      this.conns.delete(victim);
      victim.destroy();
    }
    this.conns.set(s, { answering: 0 });
    s.once('close', () => this.conns.delete(s));
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const c = this.conns.get(req.socket);
    if (!c) return;
    let counted = false;
    const start = () => {
      if (counted || res.writableFinished) return;
      counted = true;
      c.answering++;
    };
    const stop = () => {
      if (!counted) return;
      counted = false;
      c.answering--;
    };
    // A request without a body is complete with its headers; one with a body once the body has arrived.
    const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
    if (hasBody) req.once('end', start);
    else start();
    res.once('finish', stop);
    res.once('close', stop);
  }

  /** Close every connection (used at shutdown, after the server stopped accepting). */
  destroyAll(): void {
    for (const s of this.conns.keys()) s.destroy();
    this.conns.clear();
  }
}
