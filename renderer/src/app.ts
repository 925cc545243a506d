/**
 * The renderer as a fastify plugin: routes, auth, cache, overload control and error mapping.
 * buildApp() wires it with an InfluxDB source and a started worker pool; tests use app.inject().
 */
import crypto from 'node:crypto';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { ConnectionGuard, DurationError, fastifyHttpOptions, InfluxError, parseDuration, QueryValueError } from '@tcplat/core';
import { ForwardError, forwardText, mailText, parseGrafanaWebhook, RELAY_BODY_LIMIT, relayText, RelayPayloadError, type RelayPayload } from './alert-relay';
import { ALERT_PATH, checkAlertLink, canonicalQueryString, checkAuth, isLoopback, linkSecret, safeEqual as safeEqualText, signLink, type AuthConfig } from './auth';
import { ImageCache, type CachedImage } from './cache';
import { chartQuery, heatmapChart, lifespanChart, newConnectsQuery, percentilesChart } from './charts';
import type { RendererConfig } from './config';
import { influxSource, readLevels, type HistSource } from './data';
import { RendererMetrics } from './metrics';
import { assertWellFormed, canonicalKey, parseRenderParams, ParamError, RENDER_PARAMS, RENDER_QUERY_SCHEMA, type ChartKind } from './params';
import { PoolOverloadedError, RenderError, WorkerPool } from './pool';

export interface RendererDeps {
  config: RendererConfig;
  source: HistSource;
  pool: WorkerPool;
  now?: () => number;
}

export const ROUTES = {
  heatmap: '/render/heatmap.png',
  percentiles: '/render/percentiles.png',
  lifespan: '/render/lifespan.png',
  seedHeatmap: '/visualize/tcp-latency-heatmap',
  links: '/links',
  alert: ALERT_PATH,
  alertRelay: '/alert/relay',
  healthz: '/healthz',
  metrics: '/metrics',
} as const;

const SIGNABLE: Record<string, ChartKind> = { [ROUTES.heatmap]: 'heatmap', [ROUTES.percentiles]: 'percentiles', [ROUTES.lifespan]: 'lifespan' };

const AUTH_PARAMS = ['token', 'exp', 'sig'] as const;
const LINK_BODY_KEYS = ['url', 'path', 'params', 'ttl', 'pin'];
const TEXT = { type: 'string', maxLength: 4096 };

/** Query parameters of the seed's endpoint, which answers with the same heatmap. */
const SEED_PARAMS = ['serviceName', 'timeRange', 'width', 'height', 'theme', 'tz', 'token', 'exp', 'sig'] as const;

/** Strip secrets from URLs before they reach a log line. */
export function redactUrl(url: string): string {
  return url.replace(/([?&](?:token|sig|grant)=)[^&]*/gi, '$1***');
}

/**
 * The base URL of links the renderer hands out: --public-url; on loopback the listen address (the only one
 * that works there); beyond loopback without --public-url, none. Never the request's Host header.
 */
export function publicBase(config: RendererConfig): string | null {
  if (config.publicUrl) return config.publicUrl;
  const { host, port } = config.listen;
  return isLoopback(host) ? `http://${host.includes(':') ? `[${host}]` : host}:${port}` : null;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly parameter?: string,
  ) {
    super(message);
  }
}

function rejectUnknown(query: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(query)) {
    if (!allowed.includes(k)) throw new ParamError(k.slice(0, 64), `unknown parameter ${JSON.stringify(k.slice(0, 64))}; known: ${allowed.filter((a) => !AUTH_PARAMS.includes(a as never)).join(', ')}`);
  }
}

export async function rendererPlugin(app: FastifyInstance, deps: RendererDeps): Promise<void> {
  const { config, source, pool } = deps;
  const now = deps.now ?? Date.now;
  const cache = new ImageCache(config.cacheBytes, now);
  const metrics = new RendererMetrics(() => {
    const s = pool.stats();
    return { queueDepth: s.queued, busy: s.busy, workers: s.workers, restarts: s.restarts, cache: cache.stats() };
  });
  const auth: AuthConfig = { tokens: config.authTokens, linkSecret: linkSecret(config.authTokens, config.linkSecret) };
  // Minted links carry this base, never the request's Host (a client could put any name there). On loopback
  // the listen address is the one that works; beyond it only the operator knows the public name.
  const linkBase = publicBase(config);
  if (config.publicUrl && isLoopback(new URL(config.publicUrl).hostname.replace(/^\[|\]$/g, '')) && !isLoopback(config.listen.host)) {
    app.log.warn({ publicUrl: config.publicUrl }, '--public-url is a loopback address: links the renderer hands out open only on this machine');
  }
  if (auth.linkSecret && !linkBase) {
    app.log.warn({ listen: config.listen.host }, 'no --public-url: POST /links refuses to mint links until it is set (the URL readers of alerts and shared links can open)');
  }
  const inflight = new Map<string, Promise<CachedImage>>();
  const fallbacksLogged = new Set<string>();
  let active = 0;
  const capacity = config.workers + config.queue;
  new ConnectionGuard(app.server, config.http.maxConnections, metrics.registry);
  metrics.registry.gauge('tcplat_renderer_worker_rss_retirements_total', 'Workers replaced because their resident memory passed --worker-max-rss.', () => pool.rssRetirements);
  metrics.registry.gauge('tcplat_renderer_workers_crash_loop', '1 while the workers crash in a loop and restarts back off, else 0.', () => (pool.stats().crashLoop ? 1 : 0));

  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0];
    // /alert checks its link's signature or grant; /alert/relay its own token (the relay's, which opens nothing else).
    if (path === ROUTES.healthz || path === ROUTES.alert || path === ROUTES.alertRelay) return;
    const r = checkAuth(auth, path, req.query as Record<string, unknown>, req.headers.authorization, Math.floor(now() / 1000));
    if (!r.ok) {
      if (r.status === 401) reply.header('WWW-Authenticate', 'Bearer realm="tcplat renderer"');
      return reply.code(r.status).send({ error: r.message });
    }
  });

  // At most one log line per request. At info, only failures: the error handler below writes one line for
  // each InfluxDB or render failure; answered requests (200, 304, 4xx, 429) write nothing, so a load run
  // does not fill the disk. At debug, one line per request when it is answered.
  app.addHook('onResponse', async (req, reply) => {
    metrics.response(reply.statusCode);
    if (reply.statusCode < 500) {
      req.log.debug({ method: req.method, url: redactUrl(req.url).slice(0, 512), status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, 'request');
    }
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: `no route ${req.method} ${redactUrl(req.url.split('?')[0]).slice(0, 200)}; see ${ROUTES.heatmap}, ${ROUTES.percentiles}, ${ROUTES.lifespan}, ${ROUTES.links}, ${ROUTES.healthz}, ${ROUTES.metrics}` });
  });

  app.setErrorHandler((err: FastifyError | Error, req, reply) => {
    const e = err as FastifyError & { validation?: { instancePath?: string; params?: Record<string, unknown> }[]; validationContext?: string };
    if (e.validation) {
      const v = e.validation[0];
      const parameter = (v?.instancePath ?? '').replace(/^\//, '').split('/')[0] || String(v?.params?.missingProperty ?? '') || undefined;
      return reply.code(400).send({ error: `${parameter ?? e.validationContext ?? 'request'}: ${e.message.replace(/^(querystring|body)\/?\S*\s*/, '')}`, parameter });
    }
    if (err instanceof ParamError) return reply.code(400).send({ error: err.message, parameter: err.parameter });
    if (err instanceof HttpError) return reply.code(err.status).send({ error: err.message, parameter: err.parameter });
    if (err instanceof QueryValueError) return reply.code(400).send({ error: err.message });
    if (err instanceof PoolOverloadedError) {
      metrics.rejected.inc();
      return reply.code(429).header('Retry-After', '2').send({ error: err.message });
    }
    if (err instanceof InfluxError) {
      metrics.influxErrors.inc();
      req.log.warn({ url: redactUrl(req.url).slice(0, 512), err: err.message, status: err.status }, 'InfluxDB query failed');
      // The message names the InfluxDB URL and database: it goes to the log, never to the client.
      if (err.status === 0 || err.status >= 500 || err.status === 429) {
        const why = err.status === 0 ? 'not reachable or did not answer in time' : `answered HTTP ${err.status}`;
        return reply.code(503).header('Retry-After', '10').send({ error: `InfluxDB is not available (${why}); the renderer's log has the details` });
      }
      return reply.code(502).send({ error: `InfluxDB refused the query (HTTP ${err.status}); the renderer's log has the details` });
    }
    if (err instanceof RenderError) {
      req.log.error({ url: redactUrl(req.url).slice(0, 512), reason: err.reason, err: err.message }, 'render failed');
      if (err.reason === 'render') return reply.code(500).send({ error: err.message });
      return reply.code(503).header('Retry-After', '5').send({ error: err.message });
    }
    const status = (err as FastifyError).statusCode;
    if (status && status >= 400 && status < 500) return reply.code(status).send({ error: err.message });
    req.log.error({ url: redactUrl(req.url).slice(0, 512), err }, 'unexpected error');
    return reply.code(500).send({ error: 'internal error in the renderer; see its log' });
  });

  async function produce(kind: ChartKind, p: ReturnType<typeof parseRenderParams>, key: string): Promise<CachedImage> {
    if (active >= capacity) throw new PoolOverloadedError(active - config.workers);
    active++;
    const t0 = performance.now();
    try {
      // A lifespan chart also reads the connects of the same range (new connections/s), at the same level.
      const [read, connects] = await Promise.all([
        readLevels(source, chartQuery(p), p.level, config.rollups, now(), config.limits.minBinMs),
        kind === 'lifespan' ? readLevels(source, newConnectsQuery(p), p.level, config.rollups, now(), config.limits.minBinMs) : null,
      ]);
      if (read.fallback) {
        metrics.rollupFallback(read.fallback);
        // Once per kind of fallback and level, not per request: the subtitle says it on every chart.
        const k = `${read.fallback}:${p.level}`;
        if (!fallbacksLogged.has(k)) {
          fallbacksLogged.add(k);
          app.log.warn({ picked: p.level, fallback: read.fallback, note: read.note }, 'rollups not available for a chart: read the 10 s data instead (tcplat rollup backfills them)');
        }
      }
      const rows = read.rows;
      const t1 = performance.now();
      const info = { level: read.level, baseMs: config.limits.minBinMs, note: read.note, fleet: read.fleet };
      const chart = kind === 'heatmap' ? heatmapChart(p, rows, info) : kind === 'lifespan' ? lifespanChart(p, rows, connects!.rows, info) : percentilesChart(p, rows, info);
      const t2 = performance.now();
      const r = await pool.render(chart.request);
      const t3 = performance.now();
      const timing = `query;dur=${(t1 - t0).toFixed(1)}, prepare;dur=${(t2 - t1).toFixed(1)}, render;dur=${(t3 - t2).toFixed(1)}, draw;dur=${Number(r.header.render_ms ?? 0).toFixed(1)}`;
      metrics.render(kind, chart.total > 0 ? 'ok' : 'nodata', (performance.now() - t0) / 1000);
      // The newest bins are still filling (late events, spooled writes): short life; the past: longer.
      const live = p.binToMs > now() - Math.max(2 * p.windowMs, 60_000);
      // A fallback to the 10 s data lasts until the rollups are made: look again within a minute.
      const maxAgeS = live ? Math.min(60, Math.max(5, Math.round(p.windowMs / 1000))) : read.fallback ? 60 : 600;
      const img: CachedImage = {
        png: r.png,
        etag: `"${crypto.createHash('sha256').update(r.png).digest('base64url').slice(0, 27)}"`,
        noData: chart.total === 0,
        level: read.level,
        fallback: read.fallback,
        fleet: read.fleet,
        maxAgeS,
        timing,
        expiresAt: now() + maxAgeS * 1000,
      };
      if (config.cacheBytes > 0) cache.set(key, img);
      return img;
    } catch (e) {
      metrics.render(kind, 'error');
      throw e;
    } finally {
      active--;
    }
  }

  async function serve(kind: ChartKind, query: Record<string, unknown>, req: FastifyRequest, reply: FastifyReply) {
    const p = parseRenderParams(kind, query, config.limits, now());
    const key = canonicalKey(p);
    let img = config.cacheBytes > 0 ? cache.get(key) : undefined;
    const hit = img !== undefined;
    if (!img) {
      let pending = inflight.get(key);
      if (pending) metrics.coalesced.inc();
      else {
        pending = produce(kind, p, key).finally(() => inflight.delete(key));
        inflight.set(key, pending);
      }
      img = await pending;
    }
    reply
      .header('Cache-Control', `private, max-age=${img.maxAgeS}`)
      .header('ETag', img.etag)
      .header('X-Tcplat-Cache', hit ? 'hit' : 'miss')
      .header('X-Tcplat-Bin-Ms', String(p.windowMs))
      .header('X-Tcplat-Resolution', img.level ?? p.level);
    if (img.fallback) reply.header('X-Tcplat-Rollup-Fallback', img.fallback);
    if (img.fleet) reply.header('X-Tcplat-Fleet-Rollups', 'true');
    if (img.noData) reply.header('X-Tcplat-No-Data', 'true');
    if (!hit && img.timing) reply.header('Server-Timing', img.timing);
    if (req.headers['if-none-match'] === img.etag) return reply.code(304).send();
    return reply.type('image/png').send(img.png);
  }

  const renderSchema = { querystring: RENDER_QUERY_SCHEMA };
  for (const kind of ['heatmap', 'percentiles', 'lifespan'] as const) {
    app.get(ROUTES[kind], { schema: renderSchema }, async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      rejectUnknown(q, [...RENDER_PARAMS, ...AUTH_PARAMS]);
      return serve(kind, q, req, reply);
    });
  }

  // The seed's URL keeps working: ?serviceName=api&timeRange=1h answers with the same heatmap.
  app.get(
    ROUTES.seedHeatmap,
    {
      schema: {
        querystring: {
          type: 'object',
          properties: { serviceName: TEXT, timeRange: TEXT, width: { type: 'integer', minimum: 0, maximum: 1_000_000 }, height: { type: 'integer', minimum: 0, maximum: 1_000_000 }, theme: { type: 'string', enum: ['light', 'dark'] }, tz: TEXT, token: TEXT, exp: TEXT, sig: TEXT },
        },
      },
    },
    async (req, reply) => {
      const q = req.query as Record<string, unknown>;
      rejectUnknown(q, SEED_PARAMS);
      const range = typeof q.timeRange === 'string' ? q.timeRange : '1h';
      try {
        parseDuration(range);
      } catch (e) {
        if (e instanceof DurationError) throw new ParamError('timeRange', `timeRange: ${e.message}`);
        throw e;
      }
      const mapped: Record<string, unknown> = { from: `now-${range}`, to: 'now' };
      if (typeof q.serviceName === 'string') mapped.service = [q.serviceName];
      for (const k of ['width', 'height', 'theme', 'tz'] as const) if (q[k] !== undefined) mapped[k] = q[k];
      return serve('heatmap', mapped, req, reply);
    },
  );

  app.post(
    ROUTES.links,
    {
      bodyLimit: 16 * 1024,
      // fastify's validator drops unknown properties (removeAdditional); a misspelt key must not be dropped
      // silently, so it is refused before validation.
      preValidation: async (req) => {
        const b = req.body;
        if (b && typeof b === 'object' && !Array.isArray(b)) {
          for (const k of Object.keys(b)) if (!LINK_BODY_KEYS.includes(k)) throw new ParamError(k.slice(0, 64), `unknown key ${JSON.stringify(k.slice(0, 64))} in the body; known: ${LINK_BODY_KEYS.join(', ')}`);
        }
      },
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            url: { type: 'string', maxLength: 8192 },
            path: { type: 'string', enum: Object.keys(SIGNABLE) },
            params: { type: 'object', additionalProperties: { anyOf: [{ type: 'string' }, { type: 'number' }, { type: 'array', items: { type: 'string' } }] } },
            ttl: { type: 'string', maxLength: 32 },
            pin: { type: 'boolean' },
          },
        },
      },
    },
    async (req, reply) => {
      if (!auth.linkSecret) throw new HttpError(409, 'signed links need a secret: start the renderer with --link-secret or --auth-token');
      if (!linkBase) throw new HttpError(409, `signed links need the renderer's public address: start it with --public-url (e.g. https://renderer.example.com), the URL their readers can open; it never takes one from the request`);
      assertWellFormed(req.body, 'body'); // JSON may carry a lone surrogate, which no URL can
      const body = (req.body ?? {}) as { url?: string; path?: string; params?: Record<string, unknown>; ttl?: string; pin?: boolean };
      let path: string;
      const query: Record<string, unknown> = {};
      if (body.url !== undefined) {
        let u: URL;
        try {
          u = new URL(body.url, 'http://renderer.invalid');
        } catch {
          throw new HttpError(400, 'url: not a URL', 'url');
        }
        path = u.pathname;
        for (const [k, v] of u.searchParams) {
          const prev = query[k];
          query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
        }
      } else if (body.path !== undefined) {
        path = body.path;
        for (const [k, v] of Object.entries(body.params ?? {})) query[k] = Array.isArray(v) ? v.map(String) : String(v);
      } else throw new HttpError(400, 'give url (a render URL with its query) or path and params', 'url');
      const kind = SIGNABLE[path];
      if (!kind) throw new HttpError(400, `links can only point at ${Object.keys(SIGNABLE).join(' or ')}`, body.url !== undefined ? 'url' : 'path');
      for (const k of AUTH_PARAMS) delete query[k];
      rejectUnknown(query, RENDER_PARAMS);
      // Refuse to sign what would not render: the render route's own schema, through fastify's validator
      // (so arrays where one value is expected fail here as they would there), then its parameter checks.
      const validate = req.compileValidationSchema(RENDER_QUERY_SCHEMA, 'querystring');
      const asRouteSees = structuredClone(query);
      if (!validate(asRouteSees)) {
        const v = validate.errors?.[0];
        const parameter = (v?.instancePath ?? '').replace(/^\//, '').split('/')[0] || 'params';
        throw new ParamError(parameter, `${parameter}: ${v?.message ?? 'not valid'} (the render route would refuse this link)`);
      }
      const p = parseRenderParams(kind, asRouteSees, config.limits, now());
      if (body.pin) {
        query.from = String(p.fromMs);
        query.to = String(p.toMs);
      }
      let ttlMs = config.linkTtlMs;
      if (body.ttl !== undefined) {
        try {
          ttlMs = parseDuration(body.ttl);
        } catch (e) {
          throw new HttpError(400, `ttl: ${(e as Error).message}`, 'ttl');
        }
        if (ttlMs <= 0 || ttlMs > config.linkMaxTtlMs) throw new HttpError(400, `ttl: must be more than 0 and at most ${config.linkMaxTtlMs / 3_600_000} h`, 'ttl');
      }
      const exp = Math.floor((now() + ttlMs) / 1000);
      query.exp = String(exp);
      const sig = signLink(auth.linkSecret, path, query);
      return reply.code(201).send({ url: `${linkBase}${path}?${canonicalQueryString(query)}&sig=${sig}`, expires: new Date(exp * 1000).toISOString() });
    },
  );

  // Alert links: public, opened from mail or chat; the grant in the link is checked here (see auth.ts).
  // Only the service and the window come from the link; everything else about the picture is fixed.
  const alertCfg = { linkSecret: auth.linkSecret, kids: config.alertLinkKeys, ttlMs: config.alertLinkTtlMs, grants: config.alertLinkGrants };
  app.get(ROUTES.alert, async (req, reply) => {
    reply.header('Referrer-Policy', 'no-referrer').header('X-Robots-Tag', 'noindex');
    const c = checkAlertLink(alertCfg, req.query as Record<string, unknown>, now());
    if (!c.ok) return reply.code(403).send({ error: c.message });
    const query = {
      service: [c.service],
      from: String(c.fromMs),
      // A firing alert's window reaches into the future: draw up to now.
      to: String(Math.min(c.toMs, now())),
      overlay: ['p50', 'p99'],
      width: '1000',
      height: '450',
      theme: 'light',
    };
    return serve('heatmap', query, req, reply);
  });

  // The alert relay: Grafana's webhook contact point posts here; each alert gets a link signed for its
  // service and window, and the message goes on to the chat webhook (alert-relay.ts). 502 when the chat
  // did not take it: Grafana sends the notification again at the group's next flush.
  const relay = config.alertRelay;
  if (relay && auth.linkSecret && !linkBase) app.log.warn({}, 'the alert relay is on but there is no --public-url: it answers 409 until it is set (the address readers of the notifications can open)');
  // Its own body limit: a notification of up to RELAY_MAX_ALERTS alerts with labels and annotations is
  // larger than any other body of the API; still bounded.
  // The token is checked before the body is read (onRequest), so only Grafana gets to send a large one.
  const relayGate = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!relay || !auth.linkSecret) return reply.code(404).send({ error: 'the alert relay is off on this renderer (start it with --alert-relay-token, --alert-link-keys and --alert-relay-to and/or --alert-relay-smtp)' });
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    if (!m || !safeEqualText(m[1].trim(), relay.token)) {
      reply.header('WWW-Authenticate', 'Bearer realm="tcplat alert relay"');
      return reply.code(401).send({ error: "the relay needs its token: set it as the webhook contact point's Authorization header credentials" });
    }
  };
  app.post(ROUTES.alertRelay, { bodyLimit: RELAY_BODY_LIMIT, onRequest: relayGate }, async (req, reply) => {
    if (!relay || !auth.linkSecret) return reply.code(404).send({ error: 'the alert relay is off' });
    if (!linkBase) return reply.code(409).send({ error: 'the relay needs --public-url: the address readers of the notifications can open' });
    let payload: RelayPayload;
    try {
      payload = parseGrafanaWebhook(req.body);
    } catch (e) {
      if (e instanceof RelayPayloadError) return reply.code(400).send({ error: e.message });
      throw e;
    }
    const { text, links } = relayText(payload, { publicBase: linkBase, secret: auth.linkSecret, kid: relay.kid, ttlMs: config.alertLinkTtlMs });
    // Every destination; one that fails makes the answer 502, so Grafana sends the notification again
    // (the destinations that took it then get it twice: nothing is lost).
    const sends: Promise<string>[] = [];
    if (relay.to) sends.push(forwardText(relay.to, text, { timeoutMs: 10_000, attempts: 3 }).then((r) => `chat (${r.attempts} attempt${r.attempts > 1 ? 's' : ''})`));
    if (relay.mail) sends.push(mailText(relay.mail, payload.title, text, { timeoutMs: 10_000 }).then(() => `mail to ${relay.mail!.to.length}`));
    const results = await Promise.allSettled(sends);
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    for (const e of failed) if (!(e instanceof ForwardError)) throw e;
    const sent = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    if (failed.length === 0) {
      metrics.relayed('sent');
      req.log.info({ alerts: payload.alerts.length, links, sent }, 'alert relay: notification forwarded');
      return reply.code(200).send({ ok: true, alerts: payload.alerts.length, links });
    }
    metrics.relayed('failed');
    const error = failed.map((e) => e.message).join('; ');
    req.log.warn({ alerts: payload.alerts.length, err: error, sent }, 'alert relay: a destination did not take the notification; Grafana sends it again at the next group interval');
    return reply.code(502).send({ error });
  });

  // Open to probes; where the data comes from (InfluxDB URL, database) only for a caller with a token, or
  // when the renderer runs without tokens (then every route is open anyway).
  app.get(ROUTES.healthz, async (req, reply) => {
    const s = pool.stats();
    const ok = s.ready > 0;
    const body: Record<string, unknown> = { ok, workers: s.workers, ready: s.ready, busy: s.busy, queued: s.queued, restarts: s.restarts };
    const who = checkAuth({ tokens: auth.tokens, linkSecret: null }, ROUTES.healthz, {}, req.headers.authorization, Math.floor(now() / 1000));
    if (who.ok) Object.assign(body, { influx: source.describe(), dialect: source.dialect });
    return reply.code(ok ? 200 : 503).send(body);
  });

  app.get(ROUTES.metrics, async (_req, reply) => reply.type('text/plain; version=0.0.4').send(metrics.format()));
}

// Like fastify-plugin: the hooks, error and 404 handlers apply to the whole instance, not a child context.
(rendererPlugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export interface BuildOptions {
  config: RendererConfig;
  /** Defaults to the InfluxDB of the config. */
  source?: HistSource;
  /** Defaults to a new pool, started here and closed with the app. */
  pool?: WorkerPool;
  logger?: boolean | object;
  now?: () => number;
}

/** The fastify instance with the renderer registered and its worker pool started. */
export async function buildApp(opts: BuildOptions): Promise<FastifyInstance> {
  const { config } = opts;
  const app = Fastify({
    ...fastifyHttpOptions(config.http),
    // fastify's own two lines per request (received, completed) are off: the onResponse hook writes one.
    logController: new LogController({ disableRequestLogging: true }),
    logger:
      opts.logger === false || opts.logger === undefined
        ? false
        : {
            level: config.logLevel,
            serializers: { req: (req: { method: string; url: string }) => ({ method: req.method, url: redactUrl(req.url) }) },
            ...(typeof opts.logger === 'object' ? opts.logger : {}),
          },
  });
  const ownPool = !opts.pool;
  const pool =
    opts.pool ??
    new WorkerPool({
      python: config.python,
      workers: config.workers,
      queue: config.queue,
      timeoutMs: config.renderTimeoutMs,
      maxRenders: config.workerMaxRenders,
      maxRssBytes: config.workerMaxRssBytes,
      log: app.log,
    });
  if (ownPool) {
    try {
      await pool.start();
    } catch (e) {
      await pool.close();
      throw e;
    }
    app.addHook('onClose', async () => pool.close());
  }
  await app.register(rendererPlugin, { config, pool, source: opts.source ?? influxSource(config.influx, config.queryTimeoutMs), now: opts.now });
  return app;
}
