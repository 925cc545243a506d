/**
 * The agent's HTTP API as a fastify plugin (testable with app.inject()):
 *   GET /healthz      the process is alive
 *   GET /readyz       200 when the source runs and the writer is healthy, else 503 with the reasons
 *   GET /metrics      Prometheus text: tcplat_* counters per stage and reason, spool, writer, lag
 *   GET /api/status   JSON: source (incl. stderr tail), pipeline, spool, writer, readiness, metrics
 *   GET /api/stream   server-sent events: `connect` per event (unless ?events=false) and `summary` per second;
 *                     at most --stream-max-clients at once (503 beyond), slow readers skip frames, stalled ones
 *                     are disconnected (stream.ts)
 * When a token is set (required beyond loopback), everything but /healthz and /readyz needs
 * `Authorization: Bearer <token>`. buildApp() adds the HTTP limits of pkg/core (request and idle timeouts,
 * body limit, a connection cap).
 */
import crypto from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify';
import { ConnectionGuard, fastifyHttpOptions, type HttpLimits } from '@tcplat/core';
import type { Agent } from './agent';
import type { StreamLimits } from './stream';

export interface AppOptions {
  agent: Agent;
  token?: string;
  /** /api/stream bounds (default: the hub's own). */
  stream?: StreamLimits;
}

/** The agent's API takes no request bodies: a small limit is plenty. */
export const AGENT_BODY_LIMIT = 16 * 1024;

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1].trim());
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

const OPEN = new Set(['/healthz', '/readyz']);

export const agentRoutes: FastifyPluginAsync<AppOptions> = async (app, { agent, token, stream }) => {
  if (stream) agent.stream.limits = { ...stream };
  if (token) {
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0];
      if (OPEN.has(path)) return;
      if (!tokenMatches(req.headers.authorization, token)) {
        reply.header('WWW-Authenticate', 'Bearer realm="tcplat-agent"');
        return reply.code(401).send({ error: 'unauthorized: send Authorization: Bearer <the agent --api-token>' });
      }
    });
  }

  app.get('/healthz', { schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    {
      schema: {
        response: {
          200: { type: 'object', properties: { ready: { type: 'boolean' }, reasons: { type: 'array', items: { type: 'string' } } } },
          503: { type: 'object', properties: { ready: { type: 'boolean' }, reasons: { type: 'array', items: { type: 'string' } } } },
        },
      },
    },
    async (_req, reply) => {
      const r = agent.readiness();
      return reply.code(r.ready ? 200 : 503).send(r);
    },
  );

  app.get('/metrics', async (_req, reply) => {
    return reply.type('text/plain; version=0.0.4; charset=utf-8').send(agent.metrics.prometheus());
  });

  app.get('/api/status', async () => agent.status());

  app.get(
    '/api/stream',
    { schema: { querystring: { type: 'object', properties: { events: { type: 'boolean', default: true } }, additionalProperties: false } } },
    (req, reply) => {
      const q = req.query as { events: boolean };
      if (agent.stream.full()) {
        agent.stream.refused.inc();
        return reply
          .code(503)
          .header('Retry-After', '10')
          .send({ error: `too many /api/stream clients (${agent.stream.limits.maxClients}, --stream-max-clients): retry later` });
      }
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      res.write(`retry: 2000\n\n`);
      // The hub writes a summary every second, which also keeps the connection alive.
      const remove = agent.stream.add({
        wantEvents: q.events,
        write: (frame) => res.write(frame),
        buffered: () => res.writableLength,
        close: () => res.destroy(),
      });
      req.raw.on('close', remove);
      res.on('error', remove);
    },
  );
};

export interface HttpOptions {
  logger?: FastifyServerOptions['logger'];
  logController?: FastifyServerOptions['logController'];
  /** Request/idle timeouts, body limit and connection cap (pkg/core HTTP_OPTIONS); without it fastify's defaults. */
  http?: HttpLimits;
}

/** The bare fastify instance with the HTTP limits, before the agent exists (server.ts logs through it). */
export function agentFastify(opts: HttpOptions): FastifyInstance {
  return Fastify({ logger: opts.logger ?? false, logController: opts.logController, ...(opts.http ? fastifyHttpOptions(opts.http) : { bodyLimit: AGENT_BODY_LIMIT }) });
}

/** The agent's routes and the connection cap (counted in the agent's /metrics) on an instance from agentFastify(). */
export async function attachAgent(app: FastifyInstance, opts: AppOptions & { http?: HttpLimits }): Promise<void> {
  if (opts.http) new ConnectionGuard(app.server, opts.http.maxConnections, opts.agent.metrics);
  await app.register(agentRoutes, { agent: opts.agent, token: opts.token, stream: opts.stream });
}

/** A fastify instance with the agent's routes (logger off unless given), for tests and server.ts. */
export async function buildApp(opts: AppOptions & HttpOptions): Promise<FastifyInstance> {
  const app = agentFastify(opts);
  await attachAgent(app, opts);
  return app;
}
