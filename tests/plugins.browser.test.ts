/**
 * The Grafana plugins in a real browser: Debian's chromium (driven by playwright-core) loads a test page
 * that mounts the real heatmap panel and the datasource's editors inside @grafana/ui's dark theme. A tiny
 * HTTP server stands in for Grafana's datasource proxy: /api/datasources/proxy/uid/tcplat/renderer/* goes
 * to a running renderer with the bearer token added (the browser never sees it), /influx/* to the real
 * test InfluxDB 1.x. Screenshots go to test-output/screenshots/.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import * as esbuild from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { InfluxV1Target } from '@tcplat/core';
import { seedPoints, testServer, writePoints, type TestServer } from './renderer-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.join(ROOT, 'test-output');
const SHOTS = path.join(OUT, 'screenshots');
const TOKEN = 'plugins-browser-test-token-0123456789';
const PROXY_PREFIX = '/api/datasources/proxy/uid/tcplat';

function missing(): string | null {
  return missingInflux() ?? (fs.existsSync(CHROMIUM) ? null : `no ${CHROMIUM} (Debian package chromium; scripts/setup installs it)`);
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
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'src/test-page/page.tsx')],
    outdir: outDir,
    entryNames: 'page',
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"', global: 'window' },
    banner: { js: 'var process = { env: { NODE_ENV: "production" } };' },
    loader: { '.svg': 'dataurl', '.png': 'dataurl', '.woff': 'empty', '.woff2': 'empty', '.ttf': 'empty', '.eot': 'empty' },
    plugins: [shim],
    logLevel: 'error',
  });
  const css = fs.existsSync(path.join(outDir, 'page.css')) ? '<link rel="stylesheet" href="/page.css">' : '';
  fs.writeFileSync(path.join(outDir, 'index.html'), `<!doctype html><html><head><meta charset="utf-8"><title>tcplat plugins</title>${css}</head><body style="margin:0"><div id="root"></div><script src="/page.js"></script></body></html>`);
}

/** Stand-in for Grafana's datasource proxy: routes `renderer` (adds the bearer token) and `influx`. */
function grafanaProxyStandIn(pageDir: string, targets: { renderer: string; influx: string }): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const m = /^\/api\/datasources\/proxy\/uid\/tcplat\/(renderer|influx)(\/.*)?$/.exec(url);
    if (!m) {
      const file = url === '/' || url.startsWith('/?') ? 'index.html' : url.slice(1).split('?')[0];
      const p = path.join(pageDir, path.basename(file));
      if (!fs.existsSync(p)) return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': p.endsWith('.js') ? 'text/javascript' : p.endsWith('.css') ? 'text/css' : 'text/html' });
      return fs.createReadStream(p).pipe(res);
    }
    const route = m[1] as 'renderer' | 'influx';
    const target = new URL((m[2] ?? '/') as string, targets[route]);
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: target.host };
    delete headers.cookie;
    if (route === 'renderer') headers.authorization = `Bearer ${TOKEN}`;
    const up = http.request(target, { method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    // Like Grafana's proxy when the upstream is down: 502 Bad Gateway.
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('Bad Gateway');
    });
    req.pipe(up);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function imageWidth(page: Page): Promise<number> {
  // (This file is type-checked without the DOM lib: the element is typed structurally.)
  return page.$eval('[data-testid="tcplat-panel-image"]', (img) => (img as unknown as { naturalWidth: number }).naturalWidth);
}

describeWith(missing(), 'plugins in chromium (panel + editors, renderer and InfluxDB behind a stand-in for Grafana’s datasource proxy)', () => {
  jest.setTimeout(90_000);
  let target: InfluxV1Target;
  let renderer: TestServer | undefined;
  let proxy: http.Server;
  let browser: Browser | undefined;
  let base: string;
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
    renderer = await testServer(target, ['--auth-token', TOKEN]);
    await build;
    proxy = await grafanaProxyStandIn(pageDir, { renderer: renderer.base, influx: target.url });
    base = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await renderer?.close();
    await new Promise((r) => proxy?.close(r));
    if (target) await dropDatabase(target);
  });

  test('the panel shows the renderer image, the editors work on real data, and a stopped renderer shows the error state', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 1150 }, deviceScaleFactor: 1 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${base}/?db=${encodeURIComponent(target.db)}&from=${from}&to=${now}&service=api&service=web`);

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

    // Copy link for alerts: the renderer signs a link that works without the token.
    await page.getByRole('button', { name: 'Copy link for alerts' }).click();
    const linkBox = page.getByLabel('Signed link');
    await linkBox.waitFor({ timeout: 15_000 });
    const link = await linkBox.inputValue();
    expect(link).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/render\/heatmap\.png\?.*from=.*&sig=/);
    expect(link).not.toContain(TOKEN);
    const signed = await fetch(link);
    expect(signed.status).toBe(200);
    expect(signed.headers.get('content-type')).toBe('image/png');
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-dark.png'), fullPage: true });

    // The renderer refuses a value (control character): the panel shows the renderer's own message.
    const bad = await browser!.newPage({ viewport: { width: 1000, height: 500 } });
    await bad.goto(`${base}/?db=${encodeURIComponent(target.db)}&from=${from}&to=${now}&service=${encodeURIComponent('api\u0007')}`);
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
    expect(await down.textContent()).toMatch(/Grafana cannot reach the renderer at http:\/\/renderer:7071 \(HTTP 502\)/);
    await page.screenshot({ path: path.join(SHOTS, 'plugins-panel-renderer-stopped.png'), fullPage: true });
    expect(errors).toEqual([]);
    await page.close();
  });
});
