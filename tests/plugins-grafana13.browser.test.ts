/**
 * The BUILT plugins (dist/<id>/module.js) in real Chromium against the modules two Grafana versions share
 * with plugins: React 18 + @grafana/* 12.3 (the root's packages) and React 19 + @grafana/* 13 (the
 * tests/grafana13 workspace). src/test-page/host.tsx, bundled once per set, loads each module.js as an AMD
 * module the way Grafana's loader does and mounts the panel and the datasource's editors. Both plugins must
 * load and draw in both: the panel shows the renderer's PNG (as a data: URL, which Grafana's CSP allows),
 * the editors list values from the real InfluxDB 1.x, queries give frames, and unsubscribing from a query
 * aborts its HTTP request for real.
 *
 * A small HTTP server serves the host pages and dist/, and passes /api/datasources/proxy/uid/tcplat/
 * {renderer,influx}/* on to the running renderer (adding its bearer token) and the test InfluxDB; Grafana's
 * full proxy semantics are tested in tests/plugins.browser.test.ts. Screenshots: test-output/screenshots/.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import * as esbuild from 'esbuild';
import { chromium, type Browser } from 'playwright-core';
import { SESSION_BUCKET_FIELDS, sessionBucketIndex, sessionHistPoint, type InfluxV1Target, type Point } from '@tcplat/core';
import { seedPoints, testServer, writePoints, type TestServer } from './renderer-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { bundleTestPage } from './support/browser-bundle';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.join(ROOT, 'test-output');
const SHOTS = path.join(OUT, 'screenshots');
const TOKEN = 'plugins-grafana13-test-token-0123456789';
const G13 = path.join(ROOT, 'tests/grafana13');
const PLUGIN_IDS = ['tcplat-connect-datasource', 'tcplat-heatmap-panel'];

/** The two module sets: what Grafana 12.3 and Grafana 13 share with plugins. */
const SETS = [
  { name: 'grafana-12.3', react: /^18\./, modulesFrom: null as string | null },
  { name: 'grafana-13', react: /^19\./, modulesFrom: G13 },
];

function missing(): string | null {
  for (const id of PLUGIN_IDS) if (!fs.existsSync(path.join(ROOT, 'dist', id, 'module.js'))) return `dist/${id}/module.js is not built (run npm run build:plugins)`;
  if (!fs.existsSync(path.join(G13, 'node_modules/@grafana/ui/package.json')) && !fs.existsSync(path.join(G13, 'node_modules/react/package.json')))
    return 'the tests/grafana13 workspace is not installed (npm ci)';
  return missingInflux() ?? (fs.existsSync(CHROMIUM) ? null : `no ${CHROMIUM} (Debian package chromium; scripts/setup installs it)`);
}

/** Bundle the host page; with modulesFrom, React and @grafana/* (anywhere in the graph) come from there. */
async function buildHost(outDir: string, modulesFrom: string | null): Promise<void> {
  const shared = /^(react|react-dom|scheduler|@grafana\/(data|ui|runtime|schema|e2e-selectors|i18n))(\/.*)?$/;
  const plugin: esbuild.Plugin = {
    name: 'tcplat-host',
    setup(b) {
      b.onResolve({ filter: /^@tcplat\/core$/ }, () => ({ path: path.join(ROOT, 'pkg/core/src/index.ts') }));
      if (modulesFrom) {
        b.onResolve({ filter: shared }, async (a) => {
          if (a.pluginData === 'redirected') return undefined;
          const r = await b.resolve(a.path, { resolveDir: modulesFrom, kind: a.kind, pluginData: 'redirected' });
          return r.errors.length ? { errors: r.errors } : { path: r.path, sideEffects: r.sideEffects };
        });
      }
    },
  };
  await bundleTestPage(path.join(ROOT, 'src/test-page/host.tsx'), outDir, 'host', [plugin]);
  const css = fs.existsSync(path.join(outDir, 'host.css')) ? '<link rel="stylesheet" href="host.css">' : '';
  fs.writeFileSync(
    path.join(outDir, 'index.html'),
    // Grafana's index.html sets grafanaBootData before anything of @grafana/runtime runs.
    `<!doctype html><html><head><meta charset="utf-8"><title>tcplat plugins host</title>${css}` +
      `<script>window.grafanaBootData = { assets: { dark: '', light: '' }, settings: { featureToggles: {} }, user: {}, navTree: [] };</script></head>` +
      `<body style="margin:0"><div id="status">loading</div><div id="root"></div><script src="host.js"></script></body></html>`,
  );
}

interface Held {
  closed: boolean;
}

/** Serves /<set>/ host pages and /public/plugins/<id>/ from dist/, and stands in for the datasource proxy. */
function server(hostDirs: Record<string, string>, targets: { renderer: string; influx: string }, held: Held[], hold: { on: boolean }): Promise<http.Server> {
  const s = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/api\/datasources\/proxy\/uid\/tcplat\/(renderer|influx)(\/.*)?$/.exec(url.pathname);
    if (m) {
      const route = m[1] as 'renderer' | 'influx';
      if (route === 'influx' && hold.on) {
        const h: Held = { closed: false };
        held.push(h);
        res.on('close', () => (h.closed = true));
        return;
      }
      const target = new URL(`${m[2] ?? '/'}${url.search}`, targets[route]);
      const headers: http.OutgoingHttpHeaders = { ...req.headers, host: target.host };
      if (route === 'renderer') headers.authorization = `Bearer ${TOKEN}`;
      const up = http.request(target, { method: req.method, headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('Bad Gateway');
      });
      req.pipe(up);
      return;
    }
    let file: string | undefined;
    const p = /^\/public\/plugins\/([a-z0-9-]+)\/(.+)$/.exec(url.pathname);
    if (p && PLUGIN_IDS.includes(p[1])) file = path.join(ROOT, 'dist', p[1], path.normalize(p[2]).replace(/^(\.\.[/\\])+/, ''));
    // Grafana serves @grafana/ui's icons under public/build/img/ (the page's base is /<set>/).
    const icon = /^\/([a-z0-9.-]+)\/public\/build\/img\/(icons\/[a-z0-9-]+\/[a-z0-9-]+\.svg)$/.exec(url.pathname);
    const set = SETS.find((x) => x.name === icon?.[1]);
    if (icon && set) file = path.join(set.modulesFrom ?? ROOT, 'node_modules/@grafana/ui/dist/public/img', icon[2]);
    const h = /^\/([a-z0-9.-]+)\/(.*)$/.exec(url.pathname);
    if (!file && h && hostDirs[h[1]]) file = path.join(hostDirs[h[1]], path.basename(h[2] || 'index.html'));
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : file.endsWith('.svg') ? 'image/svg+xml' : 'text/html' });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

describeWith(missing(), 'built plugins on Grafana 12.3 (React 18) and Grafana 13 (React 19) shared modules, in chromium', () => {
  jest.setTimeout(180_000);
  let target: InfluxV1Target;
  let renderer: TestServer | undefined;
  let proxy: http.Server;
  let browser: Browser | undefined;
  let base: string;
  const held: Held[] = [];
  const hold = { on: false };
  const now = Date.now();
  const from = now - 3_600_000;

  beforeAll(async () => {
    fs.mkdirSync(SHOTS, { recursive: true });
    const hostDirs: Record<string, string> = {};
    const builds = SETS.map((set) => {
      const dir = path.join(OUT, `plugins-host-${set.name}`);
      fs.rmSync(dir, { recursive: true, force: true });
      hostDirs[set.name] = dir;
      return buildHost(dir, set.modulesFrom);
    });
    target = await freshDatabase('plugins13');
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
    renderer = await testServer(target, ['--auth-token', TOKEN]);
    await Promise.all(builds);
    proxy = await server(hostDirs, { renderer: renderer.base, influx: target.url }, held, hold);
    base = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await renderer?.close();
    await new Promise((r) => proxy?.close(r));
    if (target) await dropDatabase(target);
  });

  test.each(SETS)('$name: both plugins load from module.js, draw, query, and cancel', async (set) => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 1300 }, deviceScaleFactor: 1 });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`);
    });
    page.on('response', (r) => {
      // spinner.svg is Grafana's own icon (public/img/icons/unicons in grafana/grafana), not in @grafana/ui's package.
      if (r.status() >= 400 && !/\/public\/build\/img\/icons\/unicons\/spinner\.svg$/.test(r.url())) errors.push(`HTTP ${r.status()} ${r.url()}`);
    });
    await page.goto(`${base}/${set.name}/?db=${encodeURIComponent(target.db)}&from=${from}&to=${now}&service=api&service=web`);
    await page.waitForFunction(`document.getElementById('status')?.textContent !== 'loading'`, undefined, { timeout: 60_000 });
    expect(await page.textContent('#status')).toBe('loaded');
    expect(await page.getByTestId('host-react').textContent()).toMatch(set.react);

    // The panel: the renderer's PNG through the proxy, decoded, shown as a data: URL (no blob:).
    await page.waitForSelector('[data-testid="tcplat-panel"][data-state="ok"]', { timeout: 60_000 });
    await page.waitForFunction(`(document.querySelector('[data-testid="tcplat-panel-image"]')?.naturalWidth ?? 0) > 0`, undefined, { timeout: 30_000 });
    const img = await page.$eval('[data-testid="tcplat-panel-image"]', (el) => {
      const i = el as unknown as { naturalWidth: number; src: string };
      return { width: i.naturalWidth, src: i.src.slice(0, 22) };
    });
    expect(img).toEqual({ width: 760, src: 'data:image/png;base64,' });

    // The editors: the config editor renders its fields, the query editor lists services from InfluxDB.
    expect(await page.getByLabel('Renderer URL').inputValue()).toBe('http://renderer:7071');
    expect(await page.getByLabel('Database').inputValue()).toBe(target.db);
    await page.getByLabel('Service').click();
    await page.getByRole('option', { name: 'web' }).waitFor({ timeout: 30_000 });
    await page.keyboard.press('Escape');

    // Queries through the datasource's Observable: p99 per service, and one heatmap-rows frame of buckets.
    await page.getByTestId('run').click();
    await page.waitForFunction(`/frames/.test(document.querySelector('[data-testid="bucket-frames"]')?.textContent ?? '')`, undefined, { timeout: 30_000 });
    expect(await page.getByTestId('frames').textContent()).toBe('2 frames: timeseries-multi 2 fields api, timeseries-multi 2 fields web');
    expect(await page.getByTestId('bucket-frames').textContent()).toBe('1 frames: heatmap-rows 33 fields 0.01');
    await page.screenshot({ path: path.join(SHOTS, `plugins-host-${set.name}.png`), fullPage: true });

    // Cancelling: the proxy holds the query's request; unsubscribing aborts it (the connection closes).
    held.length = 0;
    hold.on = true;
    try {
      await page.evaluate(`window.tcplatHost.startHeldQuery()`);
      // A range reaching now reads its newest windows from finer levels (pkg/core planHistParts): up to
      // four requests in parallel, each held; wait for the first, then a moment for the others.
      for (let i = 0; i < 300 && held.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 1000));
      expect(held.length).toBeGreaterThanOrEqual(1);
      expect(held.length).toBeLessThanOrEqual(4);
      expect(held.every((h) => !h.closed)).toBe(true);
      await page.evaluate(`window.tcplatHost.cancelHeldQuery()`);
      for (let i = 0; i < 300 && !held.every((h) => h.closed); i++) await new Promise((r) => setTimeout(r, 100));
      expect(held.map((h) => h.closed)).toEqual(held.map(() => true));
    } finally {
      hold.on = false;
    }

    // The built panel draws connection lifespans: lifespan.png through the proxy, a real PNG with data.
    const renders: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/renderer/render/')) renders.push(r.url());
    });
    await page.goto(`${base}/${set.name}/?db=${encodeURIComponent(target.db)}&from=${from}&to=${now}&service=api&chart=lifespan`);
    await page.waitForSelector('[data-testid="tcplat-panel"][data-state="ok"]', { timeout: 60_000 });
    await page.waitForFunction(`(document.querySelector('[data-testid="tcplat-panel-image"]')?.naturalWidth ?? 0) > 0`, undefined, { timeout: 30_000 });
    expect(renders.map((u) => new URL(u).pathname)).toEqual(['/api/datasources/proxy/uid/tcplat/renderer/render/lifespan.png']);
    expect(await page.getAttribute('[data-testid="tcplat-panel-image"]', 'alt')).toBe('tcplat connection lifespans');
    await page.screenshot({ path: path.join(SHOTS, `plugins-host-${set.name}-lifespan.png`) });

    expect(errors).toEqual([]);
    await page.close();
  });
});
