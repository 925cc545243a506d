/**
 * Bearer tokens and signed links.
 *
 * With tokens configured, every route but /healthz needs one: `Authorization: Bearer T` or `?token=T`,
 * or a signed link. A signed link carries `exp` (Unix seconds) and `sig`, an HMAC-SHA256 (base64url)
 * over the route path and its canonical query (parameters sorted by name then value, `sig` and `token`
 * excluded), so no parameter can be changed, added or removed without breaking it.
 */
import crypto from 'node:crypto';
import { isLoopbackAddress } from '@tcplat/core';

export type Query = Record<string, unknown>;

function pairs(query: Query): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(query)) {
    if (k === 'sig' || k === 'token') continue;
    for (const x of Array.isArray(v) ? v : [v]) if (x !== undefined) out.push([k, String(x)]);
  }
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
}

/** The canonical query string of a link (what is signed and what the URL carries). */
export function canonicalQueryString(query: Query): string {
  return pairs(query)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
    .join('&');
}

export function signLink(secret: Buffer, path: string, query: Query): string {
  return crypto.createHmac('sha256', secret).update(`${path}?${canonicalQueryString(query)}`).digest('base64url');
}

export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

export interface AuthConfig {
  tokens: string[];
  linkSecret: Buffer | null;
}

export type AuthResult = { ok: true; via: 'open' | 'token' | 'link' } | { ok: false; status: 401 | 403; message: string };

export function checkAuth(cfg: AuthConfig, path: string, query: Query, authorization: string | undefined, nowS: number): AuthResult {
  const linkParams = query.sig !== undefined || query.exp !== undefined;
  if (linkParams) {
    if (!cfg.linkSecret) return { ok: false, status: 403, message: 'signed links are not enabled on this renderer (no --link-secret or --auth-token)' };
    const sig = typeof query.sig === 'string' ? query.sig : '';
    const exp = typeof query.exp === 'string' && /^\d{1,12}$/.test(query.exp) ? Number(query.exp) : NaN;
    if (!Number.isFinite(exp) || !sig) return { ok: false, status: 403, message: 'a signed link needs exactly one exp and one sig parameter' };
    if (!safeEqual(sig, signLink(cfg.linkSecret, path, query))) return { ok: false, status: 403, message: 'the link signature does not match (the link was changed or signed with another secret)' };
    if (exp < nowS) return { ok: false, status: 403, message: `the link expired at ${new Date(exp * 1000).toISOString()}: mint a new one with POST /links` };
    return { ok: true, via: 'link' };
  }
  if (cfg.tokens.length === 0) return { ok: true, via: 'open' };
  let token: string | undefined;
  const m = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
  if (m) token = m[1].trim();
  else if (typeof query.token === 'string') token = query.token;
  if (!token) return { ok: false, status: 401, message: 'authentication required: send Authorization: Bearer <token> (or ?token=<token>)' };
  for (const t of cfg.tokens) if (safeEqual(token, t)) return { ok: true, via: 'token' };
  return { ok: false, status: 401, message: 'the token is not valid for this renderer' };
}

/** Link secret: --link-secret if given, else derived from the first auth token (so links survive restarts). */
export function linkSecret(tokens: string[], explicit: string | undefined): Buffer | null {
  if (explicit) return Buffer.from(explicit, 'utf8');
  if (tokens.length === 0) return null;
  return crypto.createHmac('sha256', tokens[0]).update('tcplat renderer link secret v1').digest();
}

/**
 * Whether links built on this host name open only on this machine (the default link base, and the warning for
 * a loopback --public-url). Addresses by pkg/core's one loopback rule; the name `localhost` is taken at its
 * word here because it only names links: whether the renderer may listen without a token is decided on the
 * resolved addresses (requireTokenBeyondLoopback in server.ts).
 */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || isLoopbackAddress(host);
}

/**
 * Alert links: what a notification carries, opened by anyone it reaches, without a session or a token.
 *
 * Grafana's templating cannot compute an HMAC at alert time, so a link cannot be signed per alert. Instead
 * the renderer hands out a *grant* per key id (`kid`): HMAC-SHA256 of the kid under the link secret. Grafana
 * gets the grant once (a rule label expanded from its environment) and the notification template appends
 * the alert's service and window. The grant opens nothing but `GET /alert/heatmap.png`: one service's
 * heatmap with fixed overlays and size, over at most ALERT_MAX_WINDOW_MS, whose end is at most
 * --alert-link-ttl in the past. Revocation: drop the kid from --alert-link-keys (every link minted with it
 * stops opening) and hand Grafana a grant of a new kid; rotating --link-secret revokes all of them.
 */
export const ALERT_PATH = '/alert/heatmap.png';
export const ALERT_MAX_WINDOW_MS = 24 * 3_600_000;
export const ALERT_PARAMS = ['kid', 'grant', 'service', 'from', 'to'] as const;
const KID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function validKid(kid: string): boolean {
  return KID.test(kid);
}

export function alertGrant(secret: Buffer, kid: string): string {
  return crypto.createHmac('sha256', secret).update(`tcplat alert grant v1\n${kid}`).digest('hex');
}

export interface AlertLinkConfig {
  linkSecret: Buffer | null;
  kids: string[];
  ttlMs: number;
  /** Whether grant links (same grant for every alert, so not bound to one) open too: --alert-link-grants. */
  grants: boolean;
}

/** The alert link's checked parts, or why it is refused (always 403: the link is not valid as it is). */
export type AlertCheck = { ok: true; service: string; fromMs: number; toMs: number } | { ok: false; message: string };

function single(query: Query, name: string): string | undefined {
  const v = query[name];
  return typeof v === 'string' ? v : undefined;
}

/** The parameters of a relay-signed alert link (alert-relay.ts), `sig` last. */
const SIGNED_ALERT_PARAMS = ['exp', 'from', 'kid', 'service', 'to', 'sig'];

export function checkAlertLink(cfg: AlertLinkConfig, query: Query, nowMs: number): AlertCheck {
  if (!cfg.linkSecret || cfg.kids.length === 0) return { ok: false, message: 'alert links are not enabled on this renderer (--alert-link-keys is empty)' };
  if (query.sig !== undefined) return checkSignedAlertLink(cfg as AlertLinkConfig & { linkSecret: Buffer }, query, nowMs);
  if (!cfg.grants) return { ok: false, message: 'this link has no signature: alert links are signed per alert by the relay (POST /alert/relay); grant links are off (--alert-link-grants)' };
  for (const k of Object.keys(query)) {
    if (!(ALERT_PARAMS as readonly string[]).includes(k)) return { ok: false, message: `alert links carry only ${ALERT_PARAMS.join(', ')}; this one has ${JSON.stringify(k.slice(0, 64))}: it was changed` };
  }
  const kid = single(query, 'kid');
  const grant = single(query, 'grant');
  if (!kid || !grant) return { ok: false, message: 'an alert link needs exactly one kid and one grant' };
  if (!cfg.kids.includes(kid)) return { ok: false, message: `key id ${JSON.stringify(kid.slice(0, 64))} is revoked or unknown: links from older notifications stop working when their key id is retired` };
  if (!safeEqual(grant, alertGrant(cfg.linkSecret, kid))) return { ok: false, message: 'the grant does not match its key id (the link was changed or minted with another secret)' };
  const w = checkWindow(single(query, 'service'), single(query, 'from'), single(query, 'to'));
  if (!w.ok) return w;
  const { service, fromMs, toMs } = w;
  if (fromMs >= nowMs) return { ok: false, message: 'the window of this alert link has not started yet' };
  if (toMs + cfg.ttlMs < nowMs) return { ok: false, message: `this alert link expired at ${new Date(toMs + cfg.ttlMs).toISOString()} (${cfg.ttlMs / 86_400_000} days after its window)` };
  return { ok: true, service, fromMs, toMs };
}

function checkWindow(service: string | undefined, from: string | undefined, to: string | undefined): { ok: true; service: string; fromMs: number; toMs: number } | { ok: false; message: string } {
  if (service === undefined || service === '' || service === '*' || service === '$__all' || service.includes(',')) {
    return { ok: false, message: 'an alert link shows exactly one service (one service= value, no list)' };
  }
  if (!from || !to || !/^\d{1,15}$/.test(from) || !/^\d{1,15}$/.test(to)) return { ok: false, message: 'an alert link needs one from and one to, in epoch milliseconds' };
  const fromMs = Number(from);
  const toMs = Number(to);
  if (toMs <= fromMs || toMs - fromMs > ALERT_MAX_WINDOW_MS) return { ok: false, message: `an alert link's window is more than 0 and at most ${ALERT_MAX_WINDOW_MS / 3_600_000} h` };
  return { ok: true, service, fromMs, toMs };
}

/**
 * A link the relay signed for one alert: every parameter under the HMAC (so neither the service nor the
 * window nor the expiry can change), its key id still accepted (revocation), not expired.
 */
function checkSignedAlertLink(cfg: AlertLinkConfig & { linkSecret: Buffer }, query: Query, nowMs: number): AlertCheck {
  for (const k of Object.keys(query)) {
    if (!SIGNED_ALERT_PARAMS.includes(k)) return { ok: false, message: `signed alert links carry only ${SIGNED_ALERT_PARAMS.join(', ')}; this one has ${JSON.stringify(k.slice(0, 64))}: it was changed` };
  }
  const sig = single(query, 'sig');
  const kid = single(query, 'kid');
  const exp = single(query, 'exp');
  if (!sig || !kid || !exp || !/^\d{1,12}$/.test(exp)) return { ok: false, message: 'a signed alert link needs exactly one kid, exp and sig' };
  if (!cfg.kids.includes(kid)) return { ok: false, message: `key id ${JSON.stringify(kid.slice(0, 64))} is revoked or unknown: links from older notifications stop working when their key id is retired` };
  if (!safeEqual(sig, signLink(cfg.linkSecret, ALERT_PATH, query))) return { ok: false, message: 'the link signature does not match (the link was changed or signed with another secret)' };
  const w = checkWindow(single(query, 'service'), single(query, 'from'), single(query, 'to'));
  if (!w.ok) return w;
  if (w.fromMs >= nowMs) return { ok: false, message: 'the window of this alert link has not started yet' };
  if (Number(exp) * 1000 < nowMs) return { ok: false, message: `this alert link expired at ${new Date(Number(exp) * 1000).toISOString()}` };
  return w;
}

/**
 * The alert-link prefix for Grafana: `<public base>/alert/heatmap.png?kid=K&grant=G`; the notification
 * template appends `&service=...&from=...&to=...`.
 */
export function alertLinkPrefix(publicBase: string, secret: Buffer, kid: string): string {
  return `${publicBase.replace(/\/+$/, '')}${ALERT_PATH}?kid=${encodeURIComponent(kid)}&grant=${alertGrant(secret, kid)}`;
}
