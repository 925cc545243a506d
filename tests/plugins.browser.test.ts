/**
 * The Grafana plugins in a real browser: Debian's chromium (driven by playwright-core) loads a test page
 * that mounts the real heatmap panel and the datasource's editors inside @grafana/ui's dark theme. The
 * stand-in for Grafana's datasource proxy (tests/support/grafana-proxy.ts: Grafana's route matching,
 * reqRole, Go-rendered route templates, 401 -> 400) applies the routes of src/datasource/plugin.json: the
 * renderer routes add the bearer token (the browser never sees it), the InfluxQL route goes to the real
 * test InfluxDB 1.x. The user is an Editor (Copy link needs one). Screenshots go to test-output/screenshots/.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { InfluxV1Target } from '@tcplat/core';
import { seedPoints, testServer, writePoints, type TestServer } from './renderer-support';
import { encodePoints, MEASUREMENT, SESSION_BUCKET_FIELDS, sessionBucketIndex, sessionHistPoint, writeLines, type InfluxV2Target, type Point } from '@tcplat/core';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2, TEST_INFLUX2_TOKEN } from './support/influx';
import { missingGo, pluginRoutes, startGrafanaProxy, type GrafanaProxy, type StandInDatasource } from './support/grafana-proxy';
import { bundleTestPage } from './support/browser-bundle';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.join(ROOT, 'test-output');
const SHOTS = path.join(OUT, 'screenshots');
const TOKEN = 'plugins-browser-test-token-0123456789';
const PUBLIC_RENDERER = 'https://renderer.public.example';

function missing(): string | null {
  return missingInflux() ?? missingGo() ?? (fs.existsSync(CHROMIUM) ? null : `no ${CHROMIUM} (Debian package chromium; scripts/setup installs it)`);
}

/** Bundle src/test-page (the real plugin components) for the browser, with the thin @grafana/runtime. */
async function buildPage(outDir: string): Promise<void> {
  const shim: esbuild.Plugin = {
    name: 'tcplat-test-page',
    setup(b) {
      b.onResolve({ filter: /^@grafana\/runtime$/ }, () => ({ path: path.join(ROOT, 'src/test-page/runtime.ts') }));
      b.onResolve({ filter: /^@tcplat\/core$/ }, () => ({ path: path.join(ROOT, 'pkg/core/src/index.ts') }));
      // Node built-ins reached only by Node-side code of @tcplat/core (its config loader).
      b.onResolve({ filter: /^(node:)?(fs|path|os|crypto|zlib|dns|net)$/ }, (a) => ({ path: a.path, namespace: 'empty' }));
      b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'module.exports = {};', loader: 'js' }));
    },
  };
  await bundleTestPage(path.join(ROOT, 'src/test-page/page.tsx'), outDir, 'page', [shim]);
  const css = fs.existsSync(path.join(outDir, 'page.css')) ? '<link rel="stylesheet" href="/page.css">' : '';
  fs.writeFileSync(path.join(outDir, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><title>tcplat plugins</title>${css}</head><body style="margin:0"><div id="root"></div><script src="/page.js"></script></body></html>`);
}

async function imageWidth(page: Page): Promise<number> {
  // (This file is type-checked without the DOM lib: the element is typed structurally.)
  return page.$eval('[data-testid="tcplat-panel-image"]', (img) => (img as unknown as { naturalWidth: number }).naturalWidth);
}

describeWith(missing(), 'plugins in chromium (panel + editors, renderer and InfluxDB behind a stand-in for Grafana’s datasource proxy)', () => {
  jest.setTimeout(90_000);
  let target: InfluxV1Target;
  let renderer: TestServer | undefined;
  let proxy: GrafanaProxy | undefined;
  let browser: Browser | undefined;
  let base: string;
  let rendererBase: string;
  let flux: InfluxV2Target | undefined;
  const settings = () => `db=${encodeURIComponent(target.db)}&influx=${encodeURIComponent(target.url)}&renderer=${encodeURIComponent(rendererBase)}`;
  const now = Date.now();
  const from = now - 3_600_000;

  beforeAll(async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const pageDir = path.join(OUT, 'plugins-page');
    fs.rmSync(pageDir, { recursive: true, force: true });
    const build = buildPage(pageDir);
    target = await freshDatabase('plugins');
    await writePoints(
      target,
      seedPoints(
        [
          { service: 'api', dst: 'db:5432', perWindow: 30, latency: (i, w) => (i % 10 === 0 ? 1000 + w : 0.4 + (i % 7) * 0.3) },
          { service: 'web', dst: 'cache:6379', perWindow: 10, latency: (i) => 0.05 + i * 0.01 },
        ],
        from,
        now,
      ),
    );
    // Lifespans of api's connections (the agent with --probe-close): 3 of 50 ms and 1 of 5 s per minute.
    const sessions: Point[] = [];
    for (let t = Math.ceil(from / 60_000) * 60_000; t < now; t += 60_000) {
      const buckets = SESSION_BUCKET_FIELDS.map(() => 0);
      buckets[sessionBucketIndex(50)] = 3;
      buckets[sessionBucketIndex(5000)] = 1;
      sessions.push(sessionHistPoint({ host: 'h1', service: 'api', dst: 'db:5432' }, { count: 4, sumMs: 5150, minMs: 50, maxMs: 5000, buckets, retrans: 0, resetsIn: 0, resetsOut: 0 }, BigInt(t) * 1_000_000n));
    }
    await writePoints(target, sessions);
    // TLS handshakes of api (the agent's tls_handshake_hist: connect's schema under another name), 300-340 ms.
    await writePoints(target, seedPoints([{ service: 'api', dst: 'db:5432', perWindow: 5, latency: (i) => 300 + i * 10 }], from, now).map((p) => ({ ...p, measurement: MEASUREMENT.tlsHist })));
    // Links carry the renderer's public URL (never the request's Host); here it stands for renderer.base.
    renderer = await testServer(target, ['--auth-token', TOKEN, '--public-url', PUBLIC_RENDERER]);
    await build;
    const jsonData = { influxUrl: target.url, dialect: 'influxql', database: target.db, rendererUrl: renderer.base };
    const datasources: StandInDatasource[] = [
      { uid: 'tcplat', jsonData, secureJsonData: { rendererToken: TOKEN } },
      { uid: 'wrong-renderer-token', jsonData, secureJsonData: { rendererToken: 'not-the-renderer-token-0000' } },
    ];
    if (!missingInflux2()) {
      // InfluxDB 2.x: the same points in a fresh bucket, read by the datasource with a read-only token.
      flux = await freshBucket('plugins');
      await writeLines(flux, encodePoints(seedPoints([{ service: 'api', dst: 'db:5432', perWindow: 5, latency: (i) => 0.4 + i }], from, now)));
      datasources.push({
        uid: 'tcplat-flux',
        jsonData: { influxUrl: flux.url, dialect: 'flux', org: flux.org, bucket: flux.bucket, rendererUrl: renderer.base },
        secureJsonData: { influxToken: await readToken(flux), rendererToken: TOKEN },
      });
    }
    proxy = await startGrafanaProxy({
      routes: pluginRoutes(),
      datasources,
      defaultRole: 'Editor',
      staticDir: pageDir,
    });
    base = proxy.base;
    rendererBase = renderer.base;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await renderer?.close();
    await proxy?.close();
    if (target) await dropDatabase(target);
  });

  test('a wrong renderer token: Grafana answers 400 "Authentication to data source failed"; the panel and Save & test say to check the token', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 1150 }, deviceScaleFactor: 1 });
    await page.goto(`${base}/?ds=wrong-renderer-token&${settings()}&from=${from}&to=${now}&service=api`);
    const err = page.getByTestId('tcplat-panel-error');
    await err.waitFor({ timeout: 30_000 });
    expect(await err.textContent()).toMatch(/the renderer refused the datasource's credentials \(Grafana: Authentication to data source failed\)\. Check the renderer token/);
    await page.getByTestId('test-datasource').click();
    await page.waitForFunction(`(document.querySelector('[data-testid="test-result"]')?.textContent ?? '') !== ''`, undefined, { timeout: 30_000 });
    expect(await page.getByTestId('test-result').textContent()).toMatch(/^error: InfluxDB is fine, but: the renderer refused the datasource's credentials \(Grafana: Authentication to data source failed\)/);
    expect(await page.content()).not.toContain('not-the-renderer-token');
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-wrong-renderer-token.png'), fullPage: true });
    await page.close();
  });

  test("a Viewer sees the heatmap, and Copy link for alerts (an Editor's route) says it needs the Editor role", async () => {
    const context = await browser!.newContext({ viewport: { width: 1000, height: 700 } });
    await context.addCookies([{ name: 'stand_in_role', value: 'Viewer', url: base }]);
    const page = await context.newPage();
    await page.goto(`${base}/?${settings()}&from=${from}&to=${now}&service=api`);
    await page.waitForSelector('[data-testid="tcplat-panel"][data-state="ok"]', { timeout: 30_000 });
    await page.waitForFunction(`(document.querySelector('[data-testid="tcplat-panel-image"]')?.naturalWidth ?? 0) > 0`);
    await page.getByRole('button', { name: 'Copy link for alerts' }).click();
    const err = page.getByTestId('tcplat-panel-link-error');
    await err.waitFor({ timeout: 15_000 });
    expect(await err.textContent()).toMatch(/Grafana refused this request to the renderer \(plugin proxy route access denied\): it needs the Editor role/);
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-viewer-link.png') });
    await context.close();
  });

  // InfluxDB 2.x is needed here; under CI=true its absence fails (tests/support/prereq.ts's rule).
  (missingInflux2() && process.env.CI !== 'true' ? test.skip : test)('InfluxDB 2.x: the datasource queries Flux through its POST route with a read-only token', async () => {
    if (!flux) throw new Error(`cannot run: ${missingInflux2()}`);
    const page = await browser!.newPage({ viewport: { width: 1000, height: 1150 } });
    const n = proxy!.upstream.length;
    await page.goto(`${base}/?ds=tcplat-flux&dialect=flux&org=${flux.org}&bucket=${flux.bucket}&influx=${encodeURIComponent(flux.url)}&renderer=${encodeURIComponent(rendererBase)}&from=${from}&to=${now}&service=api`);
    await page.getByTestId('run').click();
    await page.waitForFunction(`/frames|error/.test(document.querySelector('[data-testid="frames"]')?.textContent ?? '')`, undefined, { timeout: 30_000 });
    expect(await page.getByTestId('frames').textContent()).toBe('1 frames: api');
    await page.getByTestId('test-datasource').click();
    await page.waitForFunction(`(document.querySelector('[data-testid="test-result"]')?.textContent ?? '') !== ''`, undefined, { timeout: 30_000 });
    expect(await page.getByTestId('test-result').textContent()).toBe(`success: Connected to InfluxDB 2.x: bucket ${flux.bucket} has tcplat data. Renderer OK.`);
    const influx = proxy!.upstream.slice(n).filter((u) => u.uid === 'tcplat-flux' && u.route?.startsWith('influx'));
    expect(influx.length).toBeGreaterThanOrEqual(2);
    for (const u of influx) expect([u.method, u.route, new URL(u.url).pathname, String(u.headers.authorization).startsWith('Token ')]).toEqual(['POST', 'influx/api/v2/query', '/api/v2/query', true]);
    await page.close();
  });

  test('a lifespan panel and a TLS handshake panel load real PNGs through their routes; the lifespan one sends no result filter', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 500 }, deviceScaleFactor: 1 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    for (const [query, chartPath, metric] of [
      // result=ok: a filter kept from a connect chart, dropped for lifespans (the renderer would refuse it).
      ['chart=lifespan&metric=tls&result=ok', '/render/lifespan.png', null],
      ['chart=heatmap&metric=tls', '/render/heatmap.png', 'tls'],
      ['chart=percentiles&metric=tls&result=failed', '/render/percentiles.png', 'tls'],
    ] as const) {
      const before = proxy!.upstream.length;
      await page.goto(`${base}/?${settings()}&from=${from}&to=${now}&service=api&${query}`);
      // A decoded image with data (api has lifespans and TLS handshakes; the failed-only one has none).
      const state = query.includes('failed') ? 'nodata' : 'ok';
      await page.waitForSelector(`[data-testid="tcplat-panel"][data-state="${state}"]`, { timeout: 30_000 });
      await page.waitForFunction(`(document.querySelector('[data-testid="tcplat-panel-image"]')?.naturalWidth ?? 0) > 0`);
      expect([query, await imageWidth(page)]).toEqual([query, 760]);
      const sent = proxy!.upstream.slice(before).filter((u) => u.route?.startsWith('renderer/render/'));
      expect([query, sent.length]).toEqual([query, 1]);
      const u = new URL(sent[0].url);
      expect([query, u.pathname, u.searchParams.get('metric'), u.searchParams.getAll('result'), u.searchParams.getAll('service')]).toEqual([
        query,
        chartPath,
        metric,
        query.includes('failed') ? ['failed'] : [],
        ['api'],
      ]);
      // The renderer token was added by the route, never seen by the page.
      expect(sent[0].headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(await page.content()).not.toContain(TOKEN);
      await page.screenshot({ path: path.join(SHOTS, `plugins-panel-${query.replace(/[^a-z=]+/g, '-')}.png`) });
    }
    // The alert link of the lifespan chart signs lifespan.png, and opens without the token.
    await page.goto(`${base}/?${settings()}&from=${from}&to=${now}&service=api&chart=lifespan`);
    await page.waitForSelector('[data-testid="tcplat-panel"][data-state="ok"]', { timeout: 30_000 });
    await page.getByRole('button', { name: 'Copy link for alerts' }).click();
    const linkBox = page.getByLabel('Signed link');
    await linkBox.waitFor({ timeout: 15_000 });
    const link = await linkBox.inputValue();
    expect(link).toMatch(/^https:\/\/renderer\.public\.example\/render\/lifespan\.png\?.*&sig=/);
    const signed = await fetch(renderer!.base + link.slice(PUBLIC_RENDERER.length));
    expect([signed.status, signed.headers.get('content-type'), signed.headers.get('x-tcplat-no-data')]).toEqual([200, 'image/png', null]);
    expect(errors).toEqual([]);
    await page.close();
  });

  test('the panel shows the renderer image, the editors work on real data, and a stopped renderer shows the error state', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 1150 }, deviceScaleFactor: 1 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/?${settings()}&from=${from}&to=${now}&service=api&service=web`);

    // The image arrives through the proxy (token added there) and decodes.
    await page.waitForSelector('[data-testid="tcplat-panel"][data-state="ok"]', { timeout: 30_000 });
    await page.waitForFunction(`(document.querySelector('[data-testid="tcplat-panel-image"]')?.naturalWidth ?? 0) > 0`);
    expect(await imageWidth(page)).toBe(760);
    const html = await page.content();
    expect(html).not.toContain(TOKEN);

    // The query editor lists services from InfluxDB; the datasource's query comes back as labelled frames.
    await page.getByLabel('Service').click();
    await page.getByRole('option', { name: 'web' }).waitFor();
    await page.keyboard.press('Escape');
    await page.getByTestId('run').click();
    await page.waitForFunction(`/frames/.test(document.querySelector('[data-testid="frames"]')?.textContent ?? '')`);
    expect(await page.getByTestId('frames').textContent()).toBe('2 frames: api, web');

    // Churn in the real editor: the metric's option says what it needs; its query reads tcp_session_hist,
    // where only api has lifespans.
    await page.getByLabel('Metric').click();
    const short = page.getByRole('option', { name: /churn: short-lived share/ });
    await short.waitFor();
    expect(await short.textContent()).toMatch(/lived under 1 s.*--probe-close/);
    await short.click();
    expect(await page.getByTestId('tcplat-metric-description').textContent()).toMatch(/--probe-close/);
    await page.getByTestId('run').click();
    await page.waitForFunction(`(document.querySelector('[data-testid="frames"]')?.textContent ?? '') === '1 frames: api'`, undefined, { timeout: 30_000 });

    // Copy link for alerts: the renderer signs a link that works without the token.
    await page.getByRole('button', { name: 'Copy link for alerts' }).click();
    const linkBox = page.getByLabel('Signed link');
    await linkBox.waitFor({ timeout: 15_000 });
    const link = await linkBox.inputValue();
    expect(link).toMatch(/^https:\/\/renderer\.public\.example\/render\/heatmap\.png\?.*from=.*&sig=/);
    expect(link).not.toContain(TOKEN);
    const signed = await fetch(renderer!.base + link.slice(PUBLIC_RENDERER.length));
    expect(signed.status).toBe(200);
    expect(signed.headers.get('content-type')).toBe('image/png');
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-dark.png'), fullPage: true });

    // The renderer refuses a value (control character): the panel shows the renderer's own message.
    const bad = await browser!.newPage({ viewport: { width: 1000, height: 500 } });
    await bad.goto(`${base}/?${settings()}&from=${from}&to=${now}&service=${encodeURIComponent('api\u0007')}`);
    const refused = bad.getByTestId('tcplat-panel-error');
    await refused.waitFor({ timeout: 30_000 });
    expect(await refused.textContent()).toMatch(/the renderer: service: values cannot contain control characters/);
    await bad.screenshot({ path: path.join(SHOTS, 'plugins-panel-renderer-refused.png') });
    await bad.close();

    // Renderer stopped: refresh gives the error state naming the renderer.
    await renderer!.close();
    renderer = undefined;
    await page.getByTestId('refresh').click();
    const down = page.getByTestId('tcplat-panel-error');
    await down.waitFor({ timeout: 30_000 });
    expect(await down.textContent()).toContain(`Grafana cannot reach the renderer at ${rendererBase} (HTTP 502)`);
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-renderer-stopped.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });

  test('every request the plugins made matched a route of plugin.json', () => {
    const used = new Set(proxy!.upstream.map((u) => u.route));
    expect(used.has(null)).toBe(false);
    for (const r of ['influx/query', 'renderer/render/heatmap.png', 'renderer/render/percentiles.png', 'renderer/render/lifespan.png', 'renderer/links', 'renderer/metrics']) expect(used).toContain(r);
  });
});

/** A token that can only read the bucket, made with the test 2.x's operator token. */
async function readToken(b: InfluxV2Target): Promise<string> {
  const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}`, 'Content-Type': 'application/json' };
  const orgID = ((await (await fetch(`${b.url}/api/v2/orgs?org=${b.org}`, { headers })).json()) as { orgs: { id: string }[] }).orgs[0].id;
  const id = ((await (await fetch(`${b.url}/api/v2/buckets?orgID=${orgID}&name=${b.bucket}`, { headers })).json()) as { buckets: { id: string }[] }).buckets[0].id;
  const res = await fetch(`${b.url}/api/v2/authorizations`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ orgID, description: 'plugins browser test: read', permissions: [{ action: 'read', resource: { type: 'buckets', id, orgID } }] }),
  });
  if (res.status !== 201) throw new Error(`cannot create a read token: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}
