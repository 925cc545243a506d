/** Bearer tokens, signed expiring links and the refusal to run open beyond loopback. */
import fs from 'node:fs';
import { ConfigError, loadConfig } from '@tcplat/core';
import { RENDERER_OPTIONS, rendererConfig } from '../renderer/src/config';
import type { HistSource } from '../renderer/src/data';
import { describeWith } from './support/prereq';
import { testServer, type TestServer } from './renderer-support';

const TOKEN = 'test-token-0123456789abcdef';
const OTHER = 'other-token-0123456789abcdef';
const noRows: HistSource = { dialect: 'influxql', describe: () => 'fake', query: async () => [] };
const missingPython = fs.existsSync('/usr/bin/python3') ? null : '/usr/bin/python3 is missing (sudo scripts/setup)';

describe('renderer config', () => {
  const cfg = (argv: string[]) => rendererConfig(loadConfig(RENDERER_OPTIONS, ['--influx-db', 'x', ...argv], {}).values);

  test('beyond loopback without a token: refuses to start, saying what to do', () => {
    expect(() => cfg(['--listen', '0.0.0.0:7071'])).toThrow(ConfigError);
    expect(() => cfg(['--listen', '0.0.0.0:7071'])).toThrow(/--auth-token/);
    expect(() => cfg(['--listen', '[::]:7071'])).toThrow(/refuses to start unauthenticated/);
    expect(cfg(['--listen', '0.0.0.0:7071', '--auth-token', TOKEN]).authTokens).toEqual([TOKEN]);
    expect(cfg(['--listen', '127.0.0.1:7071']).authTokens).toEqual([]);
    expect(cfg([]).listen).toEqual({ host: '127.0.0.1', port: 7071 });
  });

  test('short tokens and secrets are refused; several tokens may be given', () => {
    expect(() => cfg(['--auth-token', 'short'])).toThrow(/16 characters/);
    expect(() => cfg(['--link-secret', 'short'])).toThrow(/16 characters/);
    expect(cfg(['--auth-token', `${TOKEN},${OTHER}`]).authTokens).toEqual([TOKEN, OTHER]);
  });

  test('alert-link key ids: listed, checked, and they need a link secret', () => {
    expect(cfg([]).alertLinkKeys).toEqual([]);
    expect(cfg(['--auth-token', TOKEN, '--alert-link-keys', ' k1, 2026-12.b ']).alertLinkKeys).toEqual(['k1', '2026-12.b']);
    expect(() => cfg(['--auth-token', TOKEN, '--alert-link-keys', 'k1,bad id'])).toThrow(/"bad id" is not a key id/);
    expect(() => cfg(['--alert-link-keys', 'k1'])).toThrow(/needs --link-secret/);
    expect(cfg(['--link-secret', OTHER, '--alert-link-keys', 'k1', '--alert-link-ttl', '2d']).alertLinkTtlMs).toBe(2 * 86_400_000);
  });

  test('the dialect follows the credentials', () => {
    expect(cfg([]).influx.version).toBe(1);
    const v2 = rendererConfig(loadConfig(RENDERER_OPTIONS, ['--influx-org', 'o', '--influx-bucket', 'b', '--influx-token', 't'], {}).values);
    expect(v2.influx.version).toBe(2);
  });
});

describeWith(missingPython, 'renderer auth', () => {
  let srv: TestServer;
  let now = Date.UTC(2025, 10, 25, 12);
  beforeAll(async () => {
    srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--auth-token', `${TOKEN},${OTHER}`, '--public-url', 'https://grafana.example/renderer'], {
      source: noRows,
      now: () => now,
    });
  });
  afterAll(async () => srv?.close());

  const auth = { authorization: `Bearer ${TOKEN}` };

  test('every route but /healthz needs a token', async () => {
    expect((await srv.get('/healthz')).statusCode).toBe(200);
    for (const path of ['/render/heatmap.png', '/render/percentiles.png', '/visualize/tcp-latency-heatmap?serviceName=a', '/metrics', '/nothing-here']) {
      const r = await srv.get(path);
      expect(r.statusCode).toBe(401);
      expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(r.json().error).toMatch(/Authorization: Bearer/);
    }
    expect((await srv.request('POST', '/links', { body: { url: '/render/heatmap.png' } })).statusCode).toBe(401);
  });

  test('Authorization: Bearer, ?token=, any configured token; a wrong one is 401', async () => {
    expect((await srv.get('/render/heatmap.png?service=a', auth)).statusCode).toBe(200);
    expect((await srv.get(`/render/heatmap.png?service=a&token=${OTHER}`)).statusCode).toBe(200);
    expect((await srv.get('/metrics', { authorization: `bearer ${OTHER}` })).statusCode).toBe(200);
    const bad = await srv.get('/render/heatmap.png', { authorization: 'Bearer nope-nope-nope-nope' });
    expect(bad.statusCode).toBe(401);
    expect(bad.json().error).toMatch(/not valid/);
  });

  test('POST /links mints a signed, expiring link that works without a token', async () => {
    const minted = await srv.request('POST', '/links', { headers: auth, body: { url: '/render/heatmap.png?service=rails&dst=pg:5432&from=now-6h&width=600', ttl: '1h' } });
    expect(minted.statusCode).toBe(201);
    const { url, expires } = minted.json();
    expect(url.startsWith('https://grafana.example/renderer/render/heatmap.png?')).toBe(true);
    expect(url).not.toContain(TOKEN);
    expect(expires).toBe(new Date(now + 3_600_000).toISOString());
    const path = url.slice('https://grafana.example/renderer'.length);
    const ok = await srv.get(path);
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['content-type']).toBe('image/png');

    // Any change to the query breaks the signature.
    for (const tampered of [path.replace('service=rails', 'service=nest'), path + '&host=h', path.replace('width=600', 'width=601'), path.replace(/exp=\d+/, (m: string) => `exp=${Number(m.slice(4)) + 3600}`)]) {
      const r = await srv.get(tampered);
      expect(r.statusCode).toBe(403);
      expect(r.json().error).toMatch(/signature/);
    }
    // A link for the heatmap does not open the percentiles.
    expect((await srv.get(path.replace('/render/heatmap.png', '/render/percentiles.png'))).statusCode).toBe(403);

    now += 2 * 3_600_000; // past its expiry
    try {
      const late = await srv.get(path);
      expect(late.statusCode).toBe(403);
      expect(late.json().error).toMatch(/expired/);
    } finally {
      now -= 2 * 3_600_000;
    }
  });

  test('pinned links freeze a relative range; path + params form works too', async () => {
    const minted = await srv.request('POST', '/links', { headers: auth, body: { path: '/render/percentiles.png', params: { service: ['a', 'b'], from: 'now-1h' }, pin: true } });
    expect(minted.statusCode).toBe(201);
    const u = new URL(minted.json().url);
    expect(u.searchParams.get('from')).toBe(String(now - 3_600_000));
    expect(u.searchParams.get('to')).toBe(String(now));
    expect(u.searchParams.getAll('service')).toEqual(['a', 'b']);
    expect((await srv.get(u.pathname.replace('/renderer', '') + u.search)).statusCode).toBe(200);
  });

  test('links refuse what would not render, other routes, and too long lifetimes', async () => {
    const cases: [unknown, string][] = [
      [{ url: '/render/heatmap.png?width=99999' }, 'width'],
      [{ url: '/render/heatmap.png?from=garbage' }, 'from'],
      [{ url: '/metrics' }, 'url'],
      [{ url: '/render/heatmap.png', ttl: '1000d' }, 'ttl'],
      [{ url: '/render/heatmap.png', ttl: 'soon' }, 'ttl'],
      [{ url: '/render/heatmap.png?evil=1' }, 'evil'],
      [{ path: '/render/heatmap.png', params: { width: 'abc' } }, 'width'],
    ];
    for (const [body, parameter] of cases) {
      const r = await srv.request('POST', '/links', { headers: auth, body });
      expect([r.statusCode, r.json().parameter]).toEqual([400, parameter]);
    }
    const notJson = await srv.request('POST', '/links', { headers: auth, body: { url: 1 } });
    expect(notJson.statusCode).toBe(400);
  });
});

describeWith(missingPython, 'POST /links hardening', () => {
  let srv: TestServer;
  const auth = { authorization: `Bearer ${TOKEN}` };
  beforeAll(async () => {
    srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--auth-token', TOKEN, '--public-url', 'https://renderer.example/tcplat'], { source: noRows });
  });
  afterAll(async () => srv?.close());

  /** Send a JSON text as it is (JSON.stringify escapes a lone surrogate as \\ud800, which is valid JSON). */
  const raw = async (json: string) => {
    const res = await fetch(srv.base + '/links', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: json });
    return { statusCode: res.status, body: (await res.json()) as { error: string; parameter?: string } };
  };

  test('a lone UTF-16 surrogate anywhere in the request is a 400 naming the parameter, never a 500', async () => {
    const cases: [string, string][] = [
      ['{"url":"/render/heatmap.png?service=\\ud800"}', 'url'],
      ['{"path":"/render/heatmap.png","params":{"service":"a\\udc00b"}}', 'service'],
      ['{"path":"/render/heatmap.png","params":{"title":["\\ud83d"]}}', 'title'],
      ['{"path":"/render/heatmap.png","params":{"\\ud800":"x"}}', 'params'],
      ['{"url":"/render/heatmap.png","ttl":"\\udfff1h"}', 'ttl'],
    ];
    for (const [json, parameter] of cases) {
      const r = await raw(json);
      expect([json, r.statusCode, r.body.parameter]).toEqual([json, 400, parameter]);
      expect(r.body.error).toMatch(/lone UTF-16 surrogate/);
    }
    // A well-formed pair (an emoji) is fine.
    const ok = await raw('{"path":"/render/heatmap.png","params":{"title":"db \\ud83d\\udc0c"}}');
    expect(ok.statusCode).toBe(201);
  });

  test('refuses to sign what the render route would refuse: arrays for single values, unknown keys', async () => {
    const cases: [unknown, string][] = [
      [{ path: '/render/heatmap.png', params: { theme: ['dark', 'light'] } }, 'theme'],
      [{ path: '/render/heatmap.png', params: { width: ['600', '700'] } }, 'width'],
      [{ path: '/render/heatmap.png', params: { from: ['now-1h', 'now-2h'] } }, 'from'],
      [{ url: '/render/percentiles.png?tz=UTC&tz=Europe/Berlin' }, 'tz'],
      [{ path: '/render/heatmap.png', params: { services: 'a' } }, 'services'],
      [{ url: '/render/heatmap.png', lifetime: '1h' }, 'lifetime'],
    ];
    for (const [body, parameter] of cases) {
      const r = await srv.request('POST', '/links', { headers: auth, body });
      expect([body, r.statusCode, r.json().parameter]).toEqual([body, 400, parameter]);
    }
    // What it does sign opens: repeated list parameters are lists on the render route too.
    const minted = await srv.request('POST', '/links', { headers: auth, body: { url: '/render/heatmap.png?service=a&service=b&overlay=p99&width=600' } });
    expect(minted.statusCode).toBe(201);
    const u = new URL(minted.json().url);
    expect((await srv.get(u.pathname.replace('/tcplat', '') + u.search)).statusCode).toBe(200);
  });

  test('minted links carry --public-url whatever Host the request names', async () => {
    const r = await fetch(srv.base + '/links', { method: 'POST', headers: { ...auth, host: 'evil.example:666', 'x-forwarded-host': 'evil.example', 'content-type': 'application/json' }, body: JSON.stringify({ url: '/render/heatmap.png' }) });
    expect(r.status).toBe(201);
    const { url } = (await r.json()) as { url: string };
    expect(url.startsWith('https://renderer.example/tcplat/render/heatmap.png?')).toBe(true);
    expect(url).not.toContain('evil');
  });
});

describeWith(missingPython, 'links without --public-url', () => {
  test('beyond loopback: a start-up warning, and POST /links refuses (409) instead of trusting the Host header', async () => {
    const lines: string[] = [];
    const { Writable } = await import('node:stream');
    const stream = new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) });
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--listen', '0.0.0.0:7071', '--auth-token', TOKEN, '--log-level', 'warn'], { source: noRows, logger: { stream } });
    try {
      const warn = lines.map((l) => JSON.parse(l)).find((l) => /--public-url/.test(l.msg));
      expect(warn?.level).toBe(40);
      const r = await fetch(srv.base + '/links', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, host: 'evil.example', 'content-type': 'application/json' }, body: '{"url":"/render/heatmap.png"}' });
      expect(r.status).toBe(409);
      expect(((await r.json()) as { error: string }).error).toMatch(/--public-url/);
    } finally {
      await srv.close();
    }
  });

  test('on loopback: links carry the listen address, not the Host header', async () => {
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1', '--listen', '127.0.0.1:7071', '--auth-token', TOKEN], { source: noRows });
    try {
      const r = await fetch(srv.base + '/links', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, host: 'evil.example', 'content-type': 'application/json' }, body: '{"url":"/render/heatmap.png"}' });
      expect(r.status).toBe(201);
      expect(((await r.json()) as { url: string }).url.startsWith('http://127.0.0.1:7071/render/heatmap.png?')).toBe(true);
    } finally {
      await srv.close();
    }
  });
});

describeWith(missingPython, 'renderer open on loopback', () => {
  test('no token needed; links need a secret', async () => {
    const srv = await testServer({ url: 'http://127.0.0.1:9', db: 'x' }, ['--workers', '1'], { source: noRows });
    try {
      expect((await srv.get('/render/heatmap.png?service=a')).statusCode).toBe(200);
      const r = await srv.request('POST', '/links', { body: { url: '/render/heatmap.png' } });
      expect(r.statusCode).toBe(409);
      expect(r.json().error).toMatch(/--link-secret/);
      expect((await srv.get('/render/heatmap.png?exp=1&sig=abc')).statusCode).toBe(403);
    } finally {
      await srv.close();
    }
  });
});
