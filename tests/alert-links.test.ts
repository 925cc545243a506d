/**
 * Alert notifications end to end: the provisioned notification template, run with Go's real text/template
 * (tests/alert-template/main.go, built here) on a sample alert whose labels are the provisioned rule's
 * labels with ${TCPLAT_ALERT_LINK} expanded as Grafana does, gives plain text with a renderer URL; that URL,
 * opened with no token against the real renderer on the real InfluxDB 1.x, is the service's heatmap PNG,
 * and is refused once expired, changed, or minted with a revoked key id.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import type { InfluxV1Target } from '@tcplat/core';
import { alertLinkCommand } from '../renderer/src/cli';
import { describeWith } from './support/prereq';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { colourMass, decodePng, seedPoints, testServer, writePoints, type TestServer } from './renderer-support';

const ROOT = path.resolve(__dirname, '..');
const TOKEN = 'alert-test-token-0123456789abcdef';
const SECRET = 'alert-test-link-secret-0123456789';
const PUBLIC = 'https://alerts.example/tcplat';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function missingGo(): string | null {
  return spawnSync('go', ['version']).status === 0 ? null : 'Go is not installed (the notification templates run on Go text/template)';
}
function missing(): string | null {
  return missingInflux() ?? missingGo() ?? (fs.existsSync('/usr/bin/python3') ? null : '/usr/bin/python3 is missing (sudo scripts/setup)');
}

const rulesDoc = YAML.parse(fs.readFileSync(path.join(ROOT, 'provisioning/alerting/tcplat-rules.yaml'), 'utf8'));
const templatesDoc = YAML.parse(fs.readFileSync(path.join(ROOT, 'provisioning/alerting/tcplat-templates.yaml'), 'utf8'));
const rules = rulesDoc.groups.flatMap((g: { rules: unknown[] }) => g.rules) as { uid: string; title: string; labels: Record<string, string> }[];

/** Grafana's env expansion of rule labels (provisioning values: ${VAR}, unset = empty). */
function expandLabels(labels: Record<string, string>, env: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) out[k] = v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '');
  return out;
}

describeWith(missing(), 'alert links: Go-rendered notification -> public renderer URL', () => {
  let work: string;
  let bin: string;
  let templateFile: string;
  let target: InfluxV1Target;
  let srv: TestServer;
  let prefix: string;
  // A fixed clock for the renderer; the data sit around it.
  const NOW = Math.floor(Date.now() / 60_000) * 60_000;
  let now = NOW;
  // Grant links are opt-in (--alert-link-grants): this suite tests them; the default (off) is tested last.
  const flags = ['--workers', '1', '--auth-token', TOKEN, '--link-secret', SECRET, '--public-url', PUBLIC, '--listen', '0.0.0.0:7071', '--alert-link-grants'];

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-alert-'));
    bin = path.join(work, 'alert-template');
    // Built outside any Go module, offline, with the toolchain on the machine.
    execFileSync('go', ['build', '-o', bin, path.join(ROOT, 'tests/alert-template/main.go')], {
      cwd: work,
      env: { ...process.env, GOWORK: 'off', GOTOOLCHAIN: 'local', GOFLAGS: '', GOPROXY: 'off' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    templateFile = path.join(work, 'tcplat.tmpl');
    fs.writeFileSync(templateFile, templatesDoc.templates.find((t: { name: string }) => t.name === 'tcplat').template);

    target = await freshDatabase('alerts');
    await writePoints(
      target,
      seedPoints(
        [
          // The alerting service: handshakes after a dropped SYN, ~1 s.
          { service: 'rails api', dst: 'pg:5432', perWindow: 10, latency: (i) => 1010 + i * 5 },
          // Another, fast one.
          { service: 'nest', dst: 'pg:5432', perWindow: 20, latency: (i) => 0.15 + 0.01 * (i % 10) },
        ],
        NOW - 3 * HOUR,
        NOW,
      ),
    );
    srv = await testServer(target, [...flags, '--alert-link-keys', 'k2026a,k2026b'], { now: () => now });
    const minted = alertLinkCommand(['k2026a', '--influx-db', 'x', ...flags, '--alert-link-keys', 'k2026a,k2026b'], {});
    expect([minted.code, minted.err]).toEqual([0, '']);
    prefix = minted.out.trim();
  }, 120_000);

  afterAll(async () => {
    await srv?.close();
    if (target) await dropDatabase(target);
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  /** Run a named template of the provisioned group on notification data, as Grafana would. */
  function runTemplate(name: string, data: unknown, mode: 'text' | 'email-html' = 'text'): string {
    const r = spawnSync(bin, [templateFile, name, ...(mode === 'text' ? [] : [mode])], { input: JSON.stringify(data), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`template ${name} failed: ${r.stderr}`);
    return r.stdout;
  }

  function alert(status: 'firing' | 'resolved', service: string, startsAt: number, endsAt: number | null, env = { TCPLAT_ALERT_LINK: prefix }) {
    const rule = rules[0];
    return {
      status,
      labels: { alertname: rule.title, grafana_folder: 'tcplat', ...expandLabels(rule.labels, env), service },
      annotations: { summary: `p99 TCP connect latency of ${service} is 1042 ms (over 500 ms for 5 minutes)`, description: `Successful handshakes of ${service} over the last 5 minutes.` },
      startsAt: new Date(startsAt).toISOString(),
      // Grafana sanitises a firing alert's EndsAt to zero (grafana/alerting templates/template_data.go).
      endsAt: endsAt === null ? '0001-01-01T00:00:00Z' : new Date(endsAt).toISOString(),
      dashboardURL: `http://grafana.example:3000/d/tcplat-connect-latency?from=${startsAt - HOUR}&to=${now}`,
      silenceURL: 'http://grafana.example:3000/alerting/silence/new?alertmanager=grafana&matcher=__alert_rule_uid__%3Dtcplat-connect-p99',
    };
  }
  const data = (alerts: ReturnType<typeof alert>[]) => ({
    receiver: 'team',
    status: alerts.some((a) => a.status === 'firing') ? 'firing' : 'resolved',
    alerts,
    groupLabels: { alertname: rules[0].title },
    commonLabels: { alertname: rules[0].title },
    commonAnnotations: {},
    externalURL: 'http://grafana.example:3000/',
  });

  const heatmapUrl = (text: string): string => {
    const m = /^Heatmap: (\S+)$/m.exec(text);
    if (!m) throw new Error(`no heatmap link in:\n${text}`);
    return m[1];
  };
  /** The public URL is the renderer behind a proxy at PUBLIC: open it on the test renderer, with no token. */
  const open = (url: string) => {
    expect(url.startsWith(`${PUBLIC}/alert/heatmap.png?`)).toBe(true);
    return srv.get(url.slice(PUBLIC.length));
  };

  test('the firing message is plain text with a link that opens the heatmap of that service, without any token', async () => {
    const startsAt = NOW - 20 * 60_000;
    const text = runTemplate('tcplat.message', data([alert('firing', 'rails api', startsAt, null)]));
    expect(text).toContain('[FIRING] p99 TCP connect latency of rails api is 1042 ms');
    expect(text).toContain('Dashboard: http://grafana.example:3000/d/tcplat-connect-latency');
    // Plain text: nothing Grafana would escape in an email, no Markdown image Slack or Teams would not show.
    expect(text).not.toMatch(/[<>]|!\[|<no value>/);
    const url = heatmapUrl(text);
    expect(url).not.toContain(TOKEN);
    expect(url).not.toContain(SECRET);
    const u = new URL(url);
    expect(u.searchParams.get('service')).toBe('rails api');
    expect(Number(u.searchParams.get('from'))).toBe(startsAt - HOUR);
    expect(Number(u.searchParams.get('to'))).toBe(startsAt + 23 * HOUR);
    expect(runTemplate('tcplat.title', data([alert('firing', 'rails api', startsAt, null)]))).toBe(`[FIRING:1] ${rules[0].title}`);

    const r = await open(url);
    expect([r.statusCode, r.headers['content-type']]).toEqual([200, 'image/png']);
    expect(r.headers['referrer-policy']).toBe('no-referrer');
    expect(r.headers['x-tcplat-no-data']).toBeUndefined();
    // Its picture is that service: ~1 s handshakes sit far higher than the fast service's.
    const other = await open(url.replace('service=rails+api', 'service=nest'));
    expect(other.statusCode).toBe(200);
    const a = decodePng(r.body);
    const b = decodePng(other.body);
    const box = { left: 90, right: a.width - 100, top: 46, bottom: a.height - 42 };
    const ma = colourMass(a, box);
    const mb = colourMass(b, box);
    expect(ma.count).toBeGreaterThan(100);
    expect(ma.meanRow).toBeLessThan(mb.meanRow - 0.3 * (box.bottom - box.top));
  });

  test("in an email's HTML part (html/template-escaped, whitespace collapsed) the message keeps its link whole", async () => {
    const d = data([alert('firing', 'rails api', NOW - 20 * 60_000, null)]);
    const text = runTemplate('tcplat.message', d);
    const html = runTemplate('tcplat.message', d, 'email-html');
    const inner = /^<div>([\s\S]*)<\/div>$/.exec(html)![1];
    // Nothing of ours became markup: only the escaping html/template adds.
    expect(inner).not.toMatch(/<[a-z/]/i);
    const decode = (x: string) => x.replace(/&amp;/g, '&').replace(/&#43;/g, '+').replace(/&#39;/g, "'").replace(/&#34;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>');
    expect(decode(inner)).toBe(text);
    // A browser shows the lines run together; the URL stays one whitespace-free token a mail client links.
    const shown = decode(inner).replace(/\s+/g, ' ');
    const url = heatmapUrl(text);
    expect(shown).toContain(` ${url} Dashboard: `);
    expect((await open(url)).statusCode).toBe(200);
  });

  test('resolved alerts link their own window, at most 24 h, ending ten minutes after they resolved', async () => {
    const short = alert('resolved', 'rails api', NOW - 2 * HOUR, NOW - 30 * 60_000);
    const long = alert('resolved', 'rails api', NOW - 40 * HOUR, NOW - HOUR);
    const text = runTemplate('tcplat.message', data([short, long]));
    expect(text.match(/^\[RESOLVED\]/gm)).toHaveLength(2);
    const [u1, u2] = [...text.matchAll(/^Heatmap: (\S+)$/gm)].map((m) => new URL(m[1]));
    expect([Number(u1.searchParams.get('from')), Number(u1.searchParams.get('to'))]).toEqual([NOW - 3 * HOUR, NOW - 20 * 60_000]);
    expect([Number(u2.searchParams.get('from')), Number(u2.searchParams.get('to'))]).toEqual([NOW - HOUR + 10 * 60_000 - DAY, NOW - HOUR + 10 * 60_000]);
    for (const u of [u1, u2]) expect((await open(u.href)).statusCode).toBe(200);
  });

  test('refused (403) once expired, when any part is changed, or when its key id is revoked', async () => {
    const startsAt = NOW - 20 * 60_000;
    const url = heatmapUrl(runTemplate('tcplat.message', data([alert('firing', 'rails api', startsAt, null)])));
    const u = new URL(url);
    const grant = u.searchParams.get('grant')!;
    const changed: [string, RegExp][] = [
      [url + '&host=h1', /carry only/],
      [url + '&overlay=max', /carry only/],
      [url + `&token=${TOKEN}`, /carry only/],
      [url + '&service=nest', /exactly one service/],
      [url.replace('service=rails+api', 'service=rails+api,nest'), /exactly one service/],
      [url.replace('service=rails+api', 'service=*'), /exactly one service/],
      [url.replace(`grant=${grant}`, `grant=${grant.slice(0, -1)}${grant.endsWith('0') ? '1' : '0'}`), /grant does not match/],
      [url.replace('kid=k2026a', 'kid=k2026b'), /grant does not match/],
      [url.replace(/from=\d+/, `from=${startsAt - 2 * HOUR}`), /at most 24 h/],
      [url.replace(/from=\d+/, 'from=now-1h'), /epoch milliseconds/],
    ];
    for (const [bad, why] of changed) {
      const r = await open(bad);
      expect([bad, r.statusCode]).toEqual([bad, 403]);
      expect(r.json().error).toMatch(why);
    }
    expect((await open(url)).statusCode).toBe(200);

    // Expired: --alert-link-ttl (7 days) after the end of its window.
    now = startsAt + 23 * HOUR + 7 * DAY + 60_000;
    try {
      const late = await open(url);
      expect(late.statusCode).toBe(403);
      expect(late.json().error).toMatch(/expired/);
    } finally {
      now = NOW;
    }

    // Revoked: the renderer restarted without k2026a. Its links stop opening; a prefix of k2026b works.
    const revoked = await testServer(target, [...flags, '--alert-link-keys', 'k2026b'], { now: () => now });
    try {
      const r = await revoked.get(url.slice(PUBLIC.length));
      expect(r.statusCode).toBe(403);
      expect(r.json().error).toMatch(/revoked/);
      const next = alertLinkCommand(['k2026b', '--influx-db', 'x', ...flags, '--alert-link-keys', 'k2026b'], {}).out.trim();
      const fresh = heatmapUrl(runTemplate('tcplat.message', data([alert('firing', 'rails api', startsAt, null, { TCPLAT_ALERT_LINK: next })])));
      expect((await revoked.get(fresh.slice(PUBLIC.length))).statusCode).toBe(200);
    } finally {
      await revoked.close();
    }
  });

  test('the grant in a notification opens nothing else: not the render routes, links, metrics', async () => {
    const grant = new URL(prefix).searchParams.get('grant')!;
    const asBearer = { authorization: `Bearer ${grant}` };
    for (const p of ['/render/heatmap.png?service=nest', '/render/percentiles.png?service=rails+api', '/metrics']) {
      expect([p, (await srv.get(p, asBearer)).statusCode]).toEqual([p, 401]);
      expect([p, (await srv.get(`${p}${p.includes('?') ? '&' : '?'}token=${grant}`)).statusCode]).toEqual([p, 401]);
    }
    expect((await srv.request('POST', '/links', { headers: asBearer, body: { url: '/render/heatmap.png' } })).statusCode).toBe(401);
    // Nor another chart under the alert path's name.
    expect((await srv.get(`/render/heatmap.png?kid=k2026a&grant=${grant}&service=nest&from=${NOW - HOUR}&to=${NOW}`)).statusCode).toBe(401);
  });

  test('without TCPLAT_ALERT_LINK the message has no heatmap line (and no broken link)', () => {
    const text = runTemplate('tcplat.message', data([alert('firing', 'rails api', NOW - 60_000, null, { TCPLAT_ALERT_LINK: '' })]));
    expect(text).toContain('[FIRING]');
    expect(text).not.toMatch(/Heatmap|alert\/heatmap/);
  });

  test('with grant links off (the default) the same link is refused: only per-alert signed links open', async () => {
    const url = heatmapUrl(runTemplate('tcplat.message', data([alert('firing', 'rails api', NOW - 20 * 60_000, null)])));
    const strict = await testServer(target, [...flags.filter((f) => f !== '--alert-link-grants'), '--alert-link-keys', 'k2026a'], { now: () => now });
    try {
      const r = await strict.get(url.slice(PUBLIC.length));
      expect(r.statusCode).toBe(403);
      expect(r.json().error).toMatch(/grant links are off/);
    } finally {
      await strict.close();
    }
  });

  test('tcplat renderer alert-link: needs the public URL and warns about a key id the renderer would refuse', () => {
    const noPublic = alertLinkCommand(['k1', '--influx-db', 'x', '--auth-token', TOKEN, '--listen', '0.0.0.0:7071'], {});
    expect(noPublic.code).toBe(2);
    expect(noPublic.err).toMatch(/--public-url/);
    const unlisted = alertLinkCommand(['k9', '--influx-db', 'x', ...flags, '--alert-link-keys', 'k1'], {});
    expect(unlisted.code).toBe(0);
    expect(unlisted.err).toMatch(/not in --alert-link-keys/);
    expect(alertLinkCommand(['bad kid!', '--influx-db', 'x', ...flags], {}).code).toBe(2);
    // The same secret and key id give the same prefix: Grafana's copy stays valid across renderer restarts.
    expect(alertLinkCommand(['k2026a', '--influx-db', 'x', ...flags, '--alert-link-keys', 'k2026a'], {}).out.trim()).toBe(prefix);
  });
});
