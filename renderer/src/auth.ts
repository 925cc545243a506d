/**
 * Bearer tokens and signed links.
 *
 * With tokens configured, every route but /healthz needs one: `Authorization: Bearer T` or `?token=T`,
 * or a signed link. A signed link carries `exp` (Unix seconds) and `sig`, an HMAC-SHA256 (base64url)
 * over the route path and its canonical query (parameters sorted by name then value, `sig` and `token`
 * excluded), so no parameter can be changed, added or removed without breaking it.
 */
import crypto from 'node:crypto';

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

function safeEqual(a: string, b: string): boolean {
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

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
