/**
 * The alert relay end to end: Grafana's webhook contact point posts a notification to the real renderer
 * (`POST /alert/relay`) on the real InfluxDB 1.x; the renderer signs one link per alert, bound to that
 * alert's service and window, and forwards a plain-text message to a chat webhook; the link, opened with
 * no token, is that service's heatmap PNG, and is refused once any parameter is changed, once it expired,
 * or once its key id is revoked.
 *
 * Two stand-ins, because neither Grafana nor a chat service runs here:
 * - Grafana's webhook notifier (a test-only fake): the body is what grafana/alerting
 *   receivers/webhook/v1/webhook.go marshals (`webhookMessage`: templates.ExtendedData — receiver, status,
 *   alerts[] with status, labels, annotations, startsAt, endsAt as RFC 3339 with Go's zero time
 *   "0001-01-01T00:00:00Z" while firing, generatorURL, fingerprint, silenceURL, dashboardURL, panelURL,
 *   values — then groupLabels, commonLabels, commonAnnotations, externalURL — plus version "1", groupKey,
 *   truncatedAlerts, orgId, title, state, message), and the header it sets from the contact point's
 *   `authorization_scheme` (default "Bearer") and `authorization_credentials`: "Authorization: <scheme>
 *   <credentials>" (receivers/webhook/v1/config.go, webhook.go). On a failed send the notifier returns
 *   retry=false and Alertmanager sends the notification again at the group's next flush: the fake does
 *   that by posting the same body again.
 * - A Slack-style incoming webhook (a test-only fake): takes a POST of `{"text": ...}` as JSON and answers
 *   200 "ok", as Slack documents its incoming webhooks (api.slack.com/messaging/webhooks; Mattermost's are
 *   compatible), or fails on demand with 503, a status Slack's webhooks also answer when unavailable.
 * - A mail server (a test-only fake): the SMTP dialogue of RFC 5321 (220 greeting; EHLO, MAIL FROM,
 *   RCPT TO answered 250; DATA 354, the message up to <CRLF>.<CRLF>, then 250, or 451 "try again later"
 *   on demand; QUIT 221), no STARTTLS offered. The message is read as a mail client would: headers, and a
 *   quoted-printable body decoded (RFC 2045).
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { InfluxV1Target } from '@tcplat/core';
import { describeWith } from './support/prereq';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { colourMass, decodePng, seedPoints, testServer, writePoints, type TestServer } from './renderer-support';

const TOKEN = 'relay-test-render-token-0123456789';
const SECRET = 'relay-test-link-secret-0123456789';
const RELAY_TOKEN = 'relay-test-webhook-token-0123456789';
const PUBLIC = 'https://alerts.example/tcplat';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function missing(): string | null {
  return missingInflux() ?? null;
}

/** A chat incoming webhook: records the texts it took; `fail` makes it answer 503. */
class FakeChat {
  readonly texts: string[] = [];
  fail = 0;
  private server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (this.fail > 0) {
        this.fail--;
        res.writeHead(503).end('busy');
        return;
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { text: string };
      this.texts.push(body.text);
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  url = '';
  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/services/T000/B000/XXXX`;
  }
  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** An SMTP sink: records each message (raw, dot-unstuffed); `fail` makes DATA answer 451. */
class FakeMailServer {
  readonly messages: { from: string; to: string[]; data: string }[] = [];
  fail = 0;
  port = 0;
  private server = net.createServer((sock) => {
    let buf = '';
    let inData = false;
    let from = '';
    let to: string[] = [];
    sock.write('220 sink.test ESMTP\r\n');
    sock.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          const data = buf.slice(0, end).replace(/^\.\./gm, '.');
          buf = buf.slice(end + 5);
          inData = false;
          if (this.fail > 0) {
            this.fail--;
            sock.write('451 4.3.0 try again later\r\n');
          } else {
            this.messages.push({ from, to, data });
            sock.write('250 2.0.0 queued\r\n');
          }
          from = '';
          to = [];
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') sock.write('250-sink.test\r\n250 8BITMIME\r\n');
        else if (verb === 'MAIL') (from = /<(.*)>/.exec(line)?.[1] ?? ''), sock.write('250 2.1.0 ok\r\n');
        else if (verb === 'RCPT') to.push(/<(.*)>/.exec(line)?.[1] ?? ''), sock.write('250 2.1.5 ok\r\n');
        else if (verb === 'DATA') (inData = true), sock.write('354 end with <CRLF>.<CRLF>\r\n');
        else if (verb === 'QUIT') sock.end('221 2.0.0 bye\r\n');
        else sock.write('250 2.0.0 ok\r\n');
      }
    });
    sock.on('error', () => undefined);
  });
  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** A mail as a client reads it: its headers and its text body (quoted-printable decoded). */
function readMail(data: string): { headers: Record<string, string>; text: string } {
  const [head, ...rest] = data.split('\r\n\r\n');
  const headers: Record<string, string> = {};
  for (const l of head.replace(/\r\n[ \t]+/g, ' ').split('\r\n')) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = rest.join('\r\n\r\n');
  if (/quoted-printable/i.test(headers['content-transfer-encoding'] ?? '')) {
    body = Buffer.from(body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8');
  }
  return { headers, text: body.replace(/\r\n/g, '\n') };
}

describeWith(missing(), 'alert relay: Grafana webhook -> per-alert signed links -> chat', () => {
  let target: InfluxV1Target;
  let chat: FakeChat;
  let srv: TestServer;
  const NOW = Math.floor(Date.now() / 60_000) * 60_000;
  let now = NOW;
  const flags = () => [
    '--workers', '1', '--auth-token', TOKEN, '--link-secret', SECRET, '--public-url', PUBLIC, '--listen', '0.0.0.0:7071',
    '--alert-link-keys', 'k1,k2', '--alert-relay-token', RELAY_TOKEN, '--alert-relay-to', chat.url,
  ];

  beforeAll(async () => {
    chat = new FakeChat();
    await chat.start();
    target = await freshDatabase('relay');
    await writePoints(
      target,
      seedPoints(
        [
          { service: 'rails api', dst: 'pg:5432', perWindow: 10, latency: (i) => 1010 + i * 5 },
          { service: 'nest', dst: 'pg:5432', perWindow: 20, latency: (i) => 0.15 + 0.01 * (i % 10) },
        ],
        NOW - 3 * HOUR,
        NOW,
      ),
    );
    srv = await testServer(target, flags(), { now: () => now });
  }, 120_000);

  afterAll(async () => {
    await srv?.close();
    await chat?.close();
    if (target) await dropDatabase(target);
  });

  function alert(status: 'firing' | 'resolved', service: string | null, startsAt: number, endsAt: number | null) {
    return {
      status,
      labels: { alertname: 'tcplat: p99 connect latency', grafana_folder: 'tcplat', ...(service === null ? {} : { service }) },
      annotations: { summary: `p99 TCP connect latency of ${service} is 1042 ms`, description: `Successful handshakes of ${service} over the last 5 minutes.` },
      startsAt: new Date(startsAt).toISOString(),
      endsAt: endsAt === null ? '0001-01-01T00:00:00Z' : new Date(endsAt).toISOString(),
      generatorURL: 'http://grafana.example:3000/alerting/grafana/tcplat-connect-p99/view',
      fingerprint: 'c6eadffa33fcdf37',
      silenceURL: 'http://grafana.example:3000/alerting/silence/new?alertmanager=grafana&matcher=__alert_rule_uid__%3Dtcplat-connect-p99',
      dashboardURL: '',
      panelURL: '',
      values: { B: 1042, C: 1 },
    };
  }
  /** webhookMessage as grafana/alerting receivers/webhook/v1/webhook.go marshals it. */
  function payload(alerts: ReturnType<typeof alert>[]) {
    const firing = alerts.filter((a) => a.status === 'firing').length;
    return {
      receiver: 'tcplat-relay',
      status: firing > 0 ? 'firing' : 'resolved',
      alerts,
      groupLabels: { alertname: 'tcplat: p99 connect latency' },
      commonLabels: { alertname: 'tcplat: p99 connect latency' },
      commonAnnotations: {},
      externalURL: 'http://grafana.example:3000/',
      version: '1',
      groupKey: '{}/{}:{alertname="tcplat: p99 connect latency"}',
      truncatedAlerts: 0,
      orgId: 1,
      title: firing > 0 ? `[FIRING:${firing}] tcplat: p99 connect latency` : '[RESOLVED] tcplat: p99 connect latency',
      state: firing > 0 ? 'alerting' : 'ok',
      message: '**Firing**\n\nLabels:\n - alertname = tcplat: p99 connect latency\n',
    };
  }
  const post = (body: unknown, credentials: string | null = RELAY_TOKEN, server = srv) =>
    server.request('POST', '/alert/relay', { headers: credentials === null ? {} : { authorization: `Bearer ${credentials}` }, body });
  const links = (text: string) => [...text.matchAll(/^Heatmap: (\S+)$/gm)].map((m) => m[1]);
  const open = (url: string, server = srv) => {
    expect(url.startsWith(`${PUBLIC}/alert/heatmap.png?`)).toBe(true);
    return server.get(url.slice(PUBLIC.length));
  };

  test("each alert's link opens its own service's heatmap without any token; the message is plain text", async () => {
    const before = chat.texts.length;
    const r = await post(payload([alert('firing', 'rails api', NOW - 20 * 60_000, null), alert('firing', 'nest', NOW - 10 * 60_000, null)]));
    expect([r.statusCode, r.json()]).toEqual([200, { ok: true, alerts: 2, links: 2 }]);
    expect(chat.texts.length).toBe(before + 1);
    const text = chat.texts.at(-1)!;
    expect(text.split('\n')[0]).toBe('[FIRING:2] tcplat: p99 connect latency');
    expect(text).toContain('[FIRING] p99 TCP connect latency of rails api is 1042 ms');
    expect(text).toContain('Silence: http://grafana.example:3000/alerting/silence/new');
    expect(text).not.toMatch(/[<>]|!\[/);
    expect(text).not.toContain(TOKEN);
    expect(text).not.toContain(SECRET);
    expect(text).not.toContain(RELAY_TOKEN);
    const [rails, nest] = links(text);
    const u = new URL(rails);
    expect(u.searchParams.get('service')).toBe('rails api');
    expect(Number(u.searchParams.get('from'))).toBe(NOW - 20 * 60_000 - HOUR);
    expect(Number(u.searchParams.get('to'))).toBe(NOW - 20 * 60_000 + 23 * HOUR);
    expect(u.searchParams.get('kid')).toBe('k2');

    const a = await open(rails);
    const b = await open(nest);
    expect([a.statusCode, a.headers['content-type'], b.statusCode]).toEqual([200, 'image/png', 200]);
    // Each picture is its service: ~1 s handshakes sit far higher than the fast service's.
    const ia = decodePng(a.body);
    const ib = decodePng(b.body);
    const box = { left: 90, right: ia.width - 100, top: 46, bottom: ia.height - 42 };
    expect(colourMass(ia, box).meanRow).toBeLessThan(colourMass(ib, box).meanRow - 0.3 * (box.bottom - box.top));
  });

  test('refused (403) when any parameter changes: the service, the window, the expiry, the key id, an added one', async () => {
    await post(payload([alert('firing', 'rails api', NOW - 20 * 60_000, null)]));
    const url = links(chat.texts.at(-1)!)[0];
    const u = new URL(url);
    const exp = u.searchParams.get('exp')!;
    const changed: [string, RegExp][] = [
      [url.replace('service=rails%20api', 'service=nest'), /signature does not match/],
      [url.replace(/from=\d+/, `from=${NOW - 2 * HOUR}`), /signature does not match/],
      [url.replace(/to=\d+/, `to=${NOW}`), /signature does not match/],
      [url.replace(`exp=${exp}`, `exp=${Number(exp) + 86_400}`), /signature does not match/],
      [url.replace('kid=k2', 'kid=k1'), /signature does not match/],
      [url + '&overlay=max', /carry only/],
      [url + `&token=${TOKEN}`, /carry only/],
      [url.replace(/&sig=[^&]+/, ''), /no signature|grant links are off/],
    ];
    expect(url).toContain('service=rails%20api');
    for (const [bad, why] of changed) {
      const r = await open(bad);
      expect([bad, r.statusCode]).toEqual([bad, 403]);
      expect(r.json().error).toMatch(why);
    }
    expect((await open(url)).statusCode).toBe(200);
    // The signature opens nothing but the alert path: not the render routes under the same parameters.
    expect((await srv.get(`/render/heatmap.png${url.slice(url.indexOf('?'))}`)).statusCode).toBe(403);
  });

  test('resolved alerts link their own window; links expire --alert-link-ttl after it; a retired key id revokes them', async () => {
    await post(payload([alert('resolved', 'rails api', NOW - 2 * HOUR, NOW - 30 * 60_000)]));
    const url = links(chat.texts.at(-1)!)[0];
    const u = new URL(url);
    expect([Number(u.searchParams.get('from')), Number(u.searchParams.get('to'))]).toEqual([NOW - 3 * HOUR, NOW - 20 * 60_000]);
    expect(Number(u.searchParams.get('exp'))).toBe(Math.floor((NOW - 20 * 60_000 + 7 * DAY) / 1000));
    expect((await open(url)).statusCode).toBe(200);

    now = NOW - 20 * 60_000 + 7 * DAY + 60_000;
    try {
      const late = await open(url);
      expect([late.statusCode, late.json().error]).toEqual([403, expect.stringMatching(/expired/)]);
    } finally {
      now = NOW;
    }

    // The renderer restarted without k2: every link it signed stops opening; the relay now signs with k3.
    const revoked = await testServer(target, [...flags().map((f) => (f === 'k1,k2' ? 'k3' : f))], { now: () => now });
    try {
      const r = await open(url, revoked);
      expect([r.statusCode, r.json().error]).toEqual([403, expect.stringMatching(/revoked/)]);
      expect((await post(payload([alert('firing', 'rails api', NOW - 20 * 60_000, null)]), RELAY_TOKEN, revoked)).statusCode).toBe(200);
      const fresh = links(chat.texts.at(-1)!)[0];
      expect(new URL(fresh).searchParams.get('kid')).toBe('k3');
      expect((await open(fresh, revoked)).statusCode).toBe(200);
    } finally {
      await revoked.close();
    }
  });

  test('a chat webhook that fails: retried, then 502 so Grafana sends it again; nothing is lost', async () => {
    const body = payload([alert('firing', 'rails api', NOW - 5 * 60_000, null)]);
    const before = chat.texts.length;
    // Busy twice: the relay's own retries get it through.
    chat.fail = 2;
    expect((await post(body)).statusCode).toBe(200);
    expect(chat.texts.length).toBe(before + 1);
    // Busy beyond the relay's three attempts: 502; Grafana's next flush posts the same body and it arrives.
    chat.fail = 3;
    const failed = await post(body);
    expect([failed.statusCode, failed.json().error]).toEqual([502, expect.stringMatching(/HTTP 503, 3 attempts/)]);
    expect(failed.text).not.toContain(chat.url);
    expect(chat.texts.length).toBe(before + 1);
    expect((await post(body)).statusCode).toBe(200);
    expect(chat.texts.length).toBe(before + 2);
    const metrics = (await srv.get('/metrics', { authorization: `Bearer ${TOKEN}` })).text;
    expect(metrics).toMatch(/tcplat_renderer_alert_relay_total\{outcome="failed"\} 1/);
  });

  test('bad callers and bad bodies: 401 without the relay token (the render token is not it), 400 naming the part', async () => {
    const body = payload([alert('firing', 'rails api', NOW - 5 * 60_000, null)]);
    for (const cred of [null, TOKEN, `${RELAY_TOKEN}x`]) {
      const r = await post(body, cred);
      expect([String(cred), r.statusCode]).toEqual([String(cred), 401]);
    }
    // The relay token opens nothing else.
    expect((await srv.get('/render/heatmap.png?service=nest', { authorization: `Bearer ${RELAY_TOKEN}` })).statusCode).toBe(401);
    const bad: [unknown, RegExp][] = [
      [{ alerts: 'x' }, /body.alerts: expected an array/],
      [{ alerts: [{ ...alert('firing', 'nest', NOW, null), status: 'pending' }] }, /alerts\[0\].status/],
      [{ alerts: [{ ...alert('firing', 'nest', NOW, null), startsAt: 'yesterday' }] }, /alerts\[0\].startsAt: not a time/],
      [{ alerts: [{ ...alert('firing', 'nest', NOW, null), labels: { service: 7 } }] }, /alerts\[0\].labels.service: expected a string/],
      [{ alerts: Array.from({ length: 201 }, () => alert('firing', 'nest', NOW, null)) }, /at most 200 alerts/],
    ];
    for (const [b, why] of bad) {
      const r = await post(b);
      expect(r.statusCode).toBe(400);
      expect(r.json().error).toMatch(why);
    }
    // An alert without a service label: forwarded, without a heatmap line (nothing to bind it to).
    const before = chat.texts.length;
    const r = await post(payload([alert('firing', null, NOW - 60_000, null)]));
    expect([r.statusCode, r.json().links]).toEqual([200, 0]);
    expect(chat.texts.length).toBe(before + 1);
    expect(chat.texts.at(-1)).not.toMatch(/Heatmap/);
  });

  test('by mail: a plain-text mail per notification whose link opens that service only; a refused mail is 502 and resent', async () => {
    const smtp = new FakeMailServer();
    await smtp.start();
    const mailFlags = [
      '--workers', '1', '--auth-token', TOKEN, '--link-secret', SECRET, '--public-url', PUBLIC, '--listen', '0.0.0.0:7071', '--alert-link-keys', 'k1',
      '--alert-relay-token', RELAY_TOKEN, '--alert-relay-smtp', `smtp://127.0.0.1:${smtp.port}`, '--alert-relay-mail-from', 'tcplat@example.com', '--alert-relay-mail-to', 'oncall@example.com, sre@example.com',
    ];
    const mailer = await testServer(target, mailFlags, { now: () => now });
    try {
      const body = payload([alert('firing', 'rails api', NOW - 20 * 60_000, null)]);
      const r = await post(body, RELAY_TOKEN, mailer);
      expect([r.statusCode, r.json()]).toEqual([200, { ok: true, alerts: 1, links: 1 }]);
      expect(smtp.messages).toHaveLength(1);
      const m = smtp.messages[0];
      expect([m.from, m.to]).toEqual(['tcplat@example.com', ['oncall@example.com', 'sre@example.com']]);
      const mail = readMail(m.data);
      expect(mail.headers.subject).toBe('[FIRING:1] tcplat: p99 connect latency');
      expect(mail.headers['content-type']).toMatch(/^text\/plain/);
      expect(mail.text).toContain('[FIRING] p99 TCP connect latency of rails api is 1042 ms');
      expect(mail.text).not.toContain(TOKEN);
      const url = links(mail.text)[0];
      expect(new URL(url).searchParams.get('service')).toBe('rails api');
      expect((await open(url, mailer)).statusCode).toBe(200);
      expect((await open(url.replace('service=rails%20api', 'service=nest'), mailer)).statusCode).toBe(403);

      // The mail server refuses (451): 502, nothing recorded; Grafana's resend is delivered.
      smtp.fail = 1;
      const refused = await post(body, RELAY_TOKEN, mailer);
      expect([refused.statusCode, refused.json().error]).toEqual([502, expect.stringMatching(/mail server did not take the message \(SMTP 451\)/)]);
      expect(smtp.messages).toHaveLength(1);
      expect((await post(body, RELAY_TOKEN, mailer)).statusCode).toBe(200);
      expect(smtp.messages).toHaveLength(2);
    } finally {
      await mailer.close();
      await smtp.close();
    }
    // Mail needs a sender and recipients: a clear error at start.
    await expect(testServer(target, mailFlags.filter((f, i, a) => f !== '--alert-relay-mail-from' && a[i - 1] !== '--alert-relay-mail-from'))).rejects.toThrow(/--alert-relay-mail-from/);
  });

  test('off unless configured: 404 on a renderer without --alert-relay-token', async () => {
    const plain = await testServer(target, ['--workers', '1', '--auth-token', TOKEN, '--link-secret', SECRET, '--public-url', PUBLIC, '--listen', '0.0.0.0:7071', '--alert-link-keys', 'k1']);
    try {
      const r = await post(payload([alert('firing', 'nest', NOW, null)]), RELAY_TOKEN, plain);
      expect([r.statusCode, r.json().error]).toEqual([404, expect.stringMatching(/relay is off/)]);
    } finally {
      await plain.close();
    }
  });
});
