/**
 * The agent's HTTP API as a fastify plugin (testable with app.inject()):
 *   GET /healthz      the process is alive
 *   GET /readyz       200 when the source runs and the writer is healthy, else 503 with the reasons
 *   GET /metrics      Prometheus text: tcplat_* counters per stage and reason, spool, writer, lag
 *   GET /api/status   JSON: source (incl. stderr tail), pipeline, spool, writer, readiness, metrics
 *   GET /api/stream   server-sent events: `connect` per event (unless ?events=false) and `summary` per second
 * When a token is set (required beyond loopback), everything but /healthz and /readyz needs
 * `Authorization: Bearer <token>`.
 */
import crypto from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import type { Agent } from './agent';

export interface AppOptions {
  agent: Agent;
  token?: string;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1].trim());
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

const OPEN = new Set(['/healthz', '/readyz']);

export const agentRoutes: FastifyPluginAsync<AppOptions> = async (app, { agent, token }) => {
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
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      res.write(`retry: 2000\n\n`);
      const remove = agent.stream.add({
        wantEvents: q.events,
        send(frame) {
          if (res.writableLength > 1 << 20) return false;
          res.write(frame);
          return true;
        },
      });
      const keepalive = setInterval(() => res.write(': keepalive\n\n'), 15_000);
      keepalive.unref();
      const done = () => {
        clearInterval(keepalive);
        remove();
      };
      req.raw.on('close', done);
      res.on('error', done);
    },
  );
};

/** A fastify instance with the agent's routes (logger off unless given), for tests and server.ts. */
export async function buildApp(opts: AppOptions & { logger?: boolean | object }): Promise<FastifyInstance> {
  const app = Fastify({ logger: opts.logger ?? false });
  await app.register(agentRoutes, { agent: opts.agent, token: opts.token });
  return app;
}
