/**
 * Alert relay: per-alert signed heatmap links, bound to one alert's service and window.
 *
 * Grafana cannot sign a link per alert (its notification templates have no HMAC), so a grant prefix in a
 * rule label (auth.ts, "grant" links) can be edited to show another service. The relay closes that gap:
 * Grafana's webhook contact point posts each notification here (`POST /alert/relay`, with the relay's
 * own bearer token, the contact point's `authorization_credentials`), the renderer signs one link per
 * alert over (key id, service, from, to, exp) under its link secret, and forwards a plain-text message to
 * the chat webhook it was given (`--alert-relay-to`: Slack, Mattermost, Rocket.Chat, or anything that
 * takes Slack's `{"text": ...}` incoming-webhook body) and/or mails it (`--alert-relay-smtp`, plain text). Changing any parameter of such a link breaks its
 * signature; dropping its key id from --alert-link-keys revokes it; it stops opening at `exp`.
 *
 * The payload is the one Grafana's webhook notifier sends (grafana/alerting receivers/webhook/v1/webhook.go:
 * `webhookMessage` = templates.ExtendedData + version, groupKey, truncatedAlerts, orgId, title, state,
 * message; each alert has status, labels, annotations, startsAt, endsAt (RFC 3339; "0001-01-01T00:00:00Z"
 * while firing), generatorURL, fingerprint, silenceURL, dashboardURL, panelURL). Grafana's webhook notifier
 * does not retry a failed send itself (it returns retry=false); Alertmanager's dedup stage sends the
 * notification again at the group's next flush (group_interval) because the notification log only records
 * successes. So the relay answers 502 when the chat webhook did not take the message, and nothing is lost.
 */
import nodemailer from 'nodemailer';
import { ALERT_MAX_WINDOW_MS, ALERT_PATH, signLink } from './auth';

/** One alert of Grafana's webhook payload, the fields the relay reads. */
export interface RelayAlert {
  status: 'firing' | 'resolved';
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAtMs: number;
  /** Undefined while firing (Grafana sends the zero time "0001-01-01T00:00:00Z"). */
  endsAtMs?: number;
  silenceURL?: string;
  generatorURL?: string;
}

export interface RelayPayload {
  status: 'firing' | 'resolved';
  title: string;
  alerts: RelayAlert[];
  truncatedAlerts: number;
}

export class RelayPayloadError extends Error {}

/** Alerts a notification may carry before the relay refuses it (Grafana's maxAlerts setting caps it too). */
export const RELAY_MAX_ALERTS = 200;
const LABEL_MAX = 1024;
/** Largest notification body the relay reads (RELAY_MAX_ALERTS alerts with long annotations fit). */
export const RELAY_BODY_LIMIT = 2 * 1024 * 1024;

function obj(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RelayPayloadError(`${where}: expected an object`);
  return v as Record<string, unknown>;
}

function strMap(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  const o = obj(v, where);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(o)) {
    if (typeof x !== 'string') throw new RelayPayloadError(`${where}.${k.slice(0, 64)}: expected a string`);
    out[k] = x.slice(0, LABEL_MAX);
  }
  return out;
}

function time(v: unknown, where: string): number | undefined {
  if (typeof v !== 'string') throw new RelayPayloadError(`${where}: expected an RFC 3339 time`);
  // Go's zero time: the alert has not ended.
  if (v.startsWith('0001-01-01')) return undefined;
  const ms = Date.parse(v);
  if (!Number.isFinite(ms)) throw new RelayPayloadError(`${where}: not a time: ${JSON.stringify(v.slice(0, 40))}`);
  return ms;
}

/** Grafana's webhook body -> what the relay needs; RelayPayloadError names the bad part. */
export function parseGrafanaWebhook(body: unknown): RelayPayload {
  const b = obj(body, 'body');
  if (!Array.isArray(b.alerts)) throw new RelayPayloadError('body.alerts: expected an array (is this a Grafana webhook contact point?)');
  if (b.alerts.length > RELAY_MAX_ALERTS) throw new RelayPayloadError(`body.alerts: at most ${RELAY_MAX_ALERTS} alerts per notification (set maxAlerts on the contact point)`);
  const alerts = b.alerts.map((a, i): RelayAlert => {
    const o = obj(a, `alerts[${i}]`);
    if (o.status !== 'firing' && o.status !== 'resolved') throw new RelayPayloadError(`alerts[${i}].status: expected firing or resolved`);
    const startsAtMs = time(o.startsAt, `alerts[${i}].startsAt`);
    if (startsAtMs === undefined) throw new RelayPayloadError(`alerts[${i}].startsAt: the zero time`);
    const endsAtMs = o.endsAt === undefined ? undefined : time(o.endsAt, `alerts[${i}].endsAt`);
    const url = (v: unknown) => (typeof v === 'string' && /^https?:\/\//.test(v) ? v.slice(0, 2048) : undefined);
    return {
      status: o.status,
      labels: strMap(o.labels, `alerts[${i}].labels`),
      annotations: strMap(o.annotations, `alerts[${i}].annotations`),
      startsAtMs,
      endsAtMs,
      silenceURL: url(o.silenceURL),
      generatorURL: url(o.generatorURL),
    };
  });
  const status = b.status === 'resolved' ? 'resolved' : 'firing';
  const title = typeof b.title === 'string' && b.title.trim() !== '' ? b.title.slice(0, 512) : `[${status.toUpperCase()}:${alerts.length}]`;
  const truncatedAlerts = typeof b.truncatedAlerts === 'number' && Number.isSafeInteger(b.truncatedAlerts) ? b.truncatedAlerts : 0;
  return { status, title, alerts, truncatedAlerts };
}

/**
 * The window an alert's heatmap shows, at most ALERT_MAX_WINDOW_MS: firing, from one hour before it
 * started for 24 h (the renderer draws up to now); resolved, until ten minutes after it ended and no more
 * than 24 h back from there (the same rule as the grant links' template).
 */
export function alertWindow(a: RelayAlert): { fromMs: number; toMs: number } {
  let fromMs = a.startsAtMs - 3_600_000;
  let toMs = fromMs + ALERT_MAX_WINDOW_MS;
  if (a.status === 'resolved' && a.endsAtMs !== undefined) {
    toMs = a.endsAtMs + 600_000;
    fromMs = Math.max(fromMs, toMs - ALERT_MAX_WINDOW_MS);
    if (fromMs >= toMs) fromMs = toMs - 3_600_000;
  }
  return { fromMs: Math.floor(fromMs), toMs: Math.floor(toMs) };
}

/** The parameters a relay-signed alert link carries (plus `sig`), sorted as canonicalQueryString() sorts them. */
export const ALERT_SIGNED_PARAMS = ['exp', 'from', 'kid', 'service', 'to'] as const;

/**
 * A link to one alert's heatmap, signed over every parameter: `<base>/alert/heatmap.png?exp&from&kid&service&to&sig`.
 * `exp` (Unix seconds) is the end of the window plus `ttlMs`.
 */
export function signAlertLink(publicBase: string, secret: Buffer, kid: string, service: string, fromMs: number, toMs: number, ttlMs: number): string {
  const query = { exp: String(Math.floor((toMs + ttlMs) / 1000)), from: String(fromMs), kid, service, to: String(toMs) };
  const qs = ALERT_SIGNED_PARAMS.map((k) => `${k}=${encodeURIComponent(query[k])}`).join('&');
  return `${publicBase.replace(/\/+$/, '')}${ALERT_PATH}?${qs}&sig=${signLink(secret, ALERT_PATH, query)}`;
}

export interface RelayLinkOptions {
  publicBase: string;
  secret: Buffer;
  kid: string;
  ttlMs: number;
}

/**
 * The plain-text message (no HTML, no Markdown images: it reads the same in Slack, Mattermost, Teams and
 * mail): the notification's title, then per alert its status, summary, description, heatmap link (when it
 * has a service label), rule and silence links. Firing alerts first.
 */
export function relayText(p: RelayPayload, link: RelayLinkOptions): { text: string; links: number } {
  const lines = [p.title];
  let links = 0;
  const ordered = [...p.alerts.filter((a) => a.status === 'firing'), ...p.alerts.filter((a) => a.status === 'resolved')];
  for (const a of ordered) {
    lines.push('');
    const head = a.annotations.summary || a.labels.alertname || 'alert';
    lines.push(`[${a.status.toUpperCase()}] ${head}`);
    if (a.annotations.description) lines.push(a.annotations.description);
    const service = a.labels.service;
    if (service) {
      const w = alertWindow(a);
      lines.push(`Heatmap: ${signAlertLink(link.publicBase, link.secret, link.kid, service, w.fromMs, w.toMs, link.ttlMs)}`);
      links++;
    }
    if (a.generatorURL) lines.push(`Rule: ${a.generatorURL}`);
    if (a.silenceURL) lines.push(`Silence: ${a.silenceURL}`);
  }
  if (p.truncatedAlerts > 0) lines.push('', `(${p.truncatedAlerts} more alerts not shown)`);
  return { text: lines.join('\n') + '\n', links };
}

export class ForwardError extends Error {}

/**
 * POST `{"text": text}` to the chat webhook (Slack's incoming-webhook body), `attempts` times at most with
 * a short backoff, each within `timeoutMs`. Throws ForwardError with the last status or error; the URL
 * (whose path is the chat's secret) never appears in the message.
 */
export async function forwardText(url: string, text: string, opts: { timeoutMs: number; attempts: number; backoffMs?: number }): Promise<{ attempts: number }> {
  let last = '';
  for (let i = 1; i <= opts.attempts; i++) {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text }),
        signal: AbortSignal.timeout(opts.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) return { attempts: i };
      last = `HTTP ${res.status}`;
      // A 4xx other than 429 will not get better by retrying (a revoked webhook, a bad body).
      if (res.status >= 400 && res.status < 500 && res.status !== 429) break;
    } catch (e) {
      const err = e as Error & { cause?: { code?: string } };
      last = err.name === 'TimeoutError' ? `no answer within ${opts.timeoutMs} ms` : (err.cause?.code ?? err.message);
    }
    if (i < opts.attempts) await new Promise((r) => setTimeout(r, (opts.backoffMs ?? 500) * i));
  }
  throw new ForwardError(`the chat webhook did not take the message (${last}, ${opts.attempts} attempts)`);
}

/** Mail delivery of the relay: an SMTP server URL (a secret: it may carry a password), sender, recipients. */
export interface MailTarget {
  /** smtp://[user:pass@]host[:port] (STARTTLS when the server offers it) or smtps://... (TLS from the start). */
  url: string;
  from: string;
  to: string[];
}

/** Send the message as a plain-text mail (subject = the notification's title). Throws ForwardError. */
export async function mailText(target: MailTarget, subject: string, text: string, opts: { timeoutMs: number }): Promise<void> {
  const transport = nodemailer.createTransport(target.url, {
    connectionTimeout: opts.timeoutMs,
    greetingTimeout: opts.timeoutMs,
    socketTimeout: opts.timeoutMs,
  } as never);
  try {
    await transport.sendMail({ from: target.from, to: target.to, subject, text });
  } catch (e) {
    const err = e as Error & { code?: string; responseCode?: number };
    // Never the URL (it may carry the SMTP password): the server's answer code or the socket error.
    throw new ForwardError(`the mail server did not take the message (${err.responseCode !== undefined ? `SMTP ${err.responseCode}` : (err.code ?? 'error')})`);
  } finally {
    transport.close();
  }
}
