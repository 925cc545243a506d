/**
 * A stand-in for Grafana's datasource proxy (`/api/datasources/proxy/uid/<uid>/<path>`), for tests that
 * cannot run a Grafana server. It follows Grafana's own code, rule by rule; each rule names the file and
 * function of grafana/grafana it follows (read at main, Grafana 12.x):
 *
 * - pkg/services/datasourceproxy/datasourceproxy.go, extractProxyPath/getProxyPath: the proxy path is the
 *   request's escaped path after `/api/datasources/proxy/uid/<uid>/`.
 * - pkg/api/pluginproxy/ds_proxy.go, validateRequest: the FIRST route whose method (empty or "*" = any)
 *   equals the request's and whose path (util.CleanRelativePath of both) is a string prefix of the proxy
 *   path matches; then hasAccessToRoute checks its reqRole against the user's org role
 *   (Viewer < Editor < Admin), and a miss is JsonApiErr(403, "plugin proxy route access denied"). No
 *   matching route is NOT an error there: the request goes to the datasource's own URL (NewDataSourceProxy,
 *   datasource.ValidateURL: empty URL = empty target) with no route credentials; with an empty URL the
 *   transport fails and pkg/util/proxyutil/reverse_proxy.go errorHandler answers 502 (504 on a timeout),
 *   empty body.
 * - ds_proxy.go director + pkg/api/pluginproxy/ds_auth_provider.go ApplyRoute: the remaining path is
 *   strings.TrimPrefix(proxyPath, route.Path), appended to the rendered route URL's path with
 *   util.JoinURLFragments (pkg/util/url.go) and set as the URL's (unescaped) Path, so Go sends it
 *   re-escaped; urlParams are added to the query (pluginproxy/utils.go addQueryString: url.Values.Add, then
 *   Encode, which sorts by key); headers are set (addHeaders: Header.Set, replacing the browser's). The
 *   cookie header is cleared (proxyutil.ClearCookieHeader), X-DS-Authorization becomes Authorization,
 *   Origin and Referer are removed (reverse_proxy.go wrapDirector).
 * - Templates (route URL, header contents, urlParam names and contents) are rendered by REAL Go
 *   text/template, by tests/go/gotemplate, exactly as pluginproxy/utils.go interpolateString does
 *   (orEmpty, missing keys print "<no value>"): no re-implementation of Go templates here.
 * - ds_proxy.go HandleRequest's modifyResponse: an upstream 401 becomes 400 "Bad Request" with the
 *   plain-text body "Authentication to data source failed" and no upstream headers; then
 *   reverse_proxy.go modifyResponse drops Set-Cookie and adds Grafana's proxy response headers
 *   (proxyutil.SetProxyResponseHeaders: Content-Security-Policy: sandbox).
 *
 * The user's org role comes from the test: the `x-stand-in-role` request header, else a
 * `stand_in_role` cookie (what a browser page can set), else the stand-in's default role; neither goes
 * upstream. Other requests are served from `staticDir` when given.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

const ROOT = path.resolve(__dirname, '../..');

export type OrgRole = 'Viewer' | 'Editor' | 'Admin';
const ROLE_RANK: Record<OrgRole, number> = { Viewer: 1, Editor: 2, Admin: 3 };

/** A route of plugin.json (grafana/grafana pkg/plugins/plugins.go `Route`; the fields we use). */
export interface PluginRoute {
  path: string;
  method?: string;
  reqRole?: OrgRole;
  url?: string;
  headers?: { name: string; content: string }[];
  urlParams?: { name: string; content: string }[];
}

export interface StandInDatasource {
  uid: string;
  /** The datasource's own URL (ds.URL); our plugin sets none, so unmatched paths go nowhere. */
  url?: string;
  jsonData: Record<string, unknown>;
  secureJsonData: Record<string, string>;
}

export interface UpstreamRequest {
  uid: string;
  route: string | null;
  method: string;
  url: string;
  headers: http.OutgoingHttpHeaders;
}

export interface GrafanaProxy {
  base: string;
  /** Requests the stand-in sent upstream, newest last. */
  upstream: UpstreamRequest[];
  close(): Promise<void>;
}

/** tests/go/gotemplate, built once per process (Go's build cache makes later builds quick). */
let helper: Promise<string> | undefined;
export function missingGo(): string | null {
  const paths = (process.env.PATH ?? '').split(':');
  return paths.some((p) => fs.existsSync(path.join(p, 'go'))) ? null : 'no Go toolchain on PATH (the stand-in renders route templates with Go text/template)';
}
function goHelper(): Promise<string> {
  helper ??= new Promise((resolve, reject) => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-gotemplate-')), 'gotemplate');
    execFile('go', ['build', '-o', out, './gotemplate'], { cwd: path.join(ROOT, 'tests/go'), timeout: 300_000 }, (err, _o, stderr) =>
      err ? reject(new Error(`go build tests/go/gotemplate failed: ${stderr || err.message}`)) : resolve(out),
    );
  });
  return helper;
}

/** Render Grafana route templates with Go's text/template (see tests/go/gotemplate). */
export async function renderTemplates(templates: string[], jsonData: Record<string, unknown>, secureJsonData: Record<string, string>): Promise<string[]> {
  const bin = await goHelper();
  const out = await new Promise<string>((resolve, reject) => {
    const child = execFile(bin, [], { timeout: 60_000 }, (err, stdout, stderr) => (err ? reject(new Error(`gotemplate: ${stderr || err.message}`)) : resolve(stdout)));
    child.stdin!.end(JSON.stringify({ templates, jsonData, secureJsonData }));
  });
  return (JSON.parse(out) as { out?: string; error?: string }[]).map((r, i) => {
    // Grafana logs a template error and leaves that part of the request as it was; we fail loudly instead.
    if (r.out === undefined) throw new Error(`route template ${JSON.stringify(templates[i])}: ${r.error}`);
    return r.out;
  });
}

interface RenderedRoute {
  route: PluginRoute;
  url: string;
  headers: [string, string][];
  params: [string, string][];
}

async function renderRoutes(routes: PluginRoute[], ds: StandInDatasource): Promise<RenderedRoute[]> {
  const templates: string[] = [];
  for (const r of routes) {
    templates.push(r.url ?? '');
    for (const h of r.headers ?? []) templates.push(h.content);
    for (const p of r.urlParams ?? []) templates.push(p.name, p.content);
  }
  const out = await renderTemplates(templates, ds.jsonData, ds.secureJsonData);
  let i = 0;
  return routes.map((route) => ({
    route,
    url: out[i++],
    headers: (route.headers ?? []).map((h) => [h.name, out[i++]] as [string, string]),
    params: (route.urlParams ?? []).map(() => [out[i++], out[i++]] as [string, string]),
  }));
}

/** util.CleanRelativePath: filepath.Clean(filepath.Join("/", p)) made relative to "/" ("." for the root). */
export function cleanRelativePath(p: string): string {
  const clean = path.posix.normalize(`/${p}`).replace(/\/+$/, '');
  return clean === '' ? '.' : clean.slice(1);
}

/** util.JoinURLFragments. */
export function joinURLFragments(a: string, b: string): string {
  if (b.length === 0) return a;
  const aslash = a.endsWith('/');
  const bslash = b.startsWith('/');
  if (aslash && bslash) return a + b.slice(1);
  if (!aslash && !bslash) return `${a}/${b}`;
  return a + b;
}

/** net/url's escape(s, encodePath): what Go sends for a URL whose Path was set without a RawPath. */
function goEscapePath(p: string): string {
  let out = '';
  for (const b of Buffer.from(p, 'utf8')) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.~$&+,/:;=@]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** url.Values.Encode: keys sorted, each value QueryEscape'd (space as +). */
function goEncodeQuery(pairs: [string, string][]): string {
  const byKey = new Map<string, string[]>();
  for (const [k, v] of pairs) byKey.set(k, [...(byKey.get(k) ?? []), v]);
  const esc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+').replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return [...byKey.keys()]
    .sort()
    .flatMap((k) => byKey.get(k)!.map((v) => `${esc(k)}=${esc(v)}`))
    .join('&');
}

/** Go's url.ParseQuery pairs of a raw query string, in order. */
function parseQuery(raw: string): [string, string][] {
  return [...new URLSearchParams(raw)];
}

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
const PREFIX = /^\/api\/datasources\/proxy\/uid\/([\w-]+)\/?/;

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

export async function startGrafanaProxy(opts: {
  routes: PluginRoute[];
  datasources: StandInDatasource[];
  defaultRole?: OrgRole;
  staticDir?: string;
}): Promise<GrafanaProxy> {
  const rendered = new Map<string, { ds: StandInDatasource; routes: RenderedRoute[] }>();
  for (const ds of opts.datasources) rendered.set(ds.uid, { ds, routes: await renderRoutes(opts.routes, ds) });
  const upstream: UpstreamRequest[] = [];

  const server = http.createServer((req, res) => {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const escapedPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const rawQuery = q < 0 ? '' : rawUrl.slice(q + 1);
    const m = PREFIX.exec(escapedPath);
    if (!m) return serveStatic(opts.staticDir, escapedPath, res);
    const entry = rendered.get(m[1]);
    if (!entry) return json(res, 404, { message: 'Data source not found' });
    const proxyPath = escapedPath.slice(m[0].length);
    const roleHeader = req.headers['x-stand-in-role'];
    const roleCookie = /(?:^|;\s*)stand_in_role=(\w+)/.exec(req.headers.cookie ?? '')?.[1];
    const role = (typeof roleHeader === 'string' ? roleHeader : roleCookie ?? opts.defaultRole ?? 'Viewer') as OrgRole;
    if (!(role in ROLE_RANK)) return json(res, 400, { message: `stand-in: unknown role ${role}` });

    // validateRequest: the first route whose method and cleaned path prefix match.
    let matched: RenderedRoute | undefined;
    for (const r of entry.routes) {
      const method = r.route.method ?? '';
      if (method !== '' && method !== '*' && method !== req.method) continue;
      if (!cleanRelativePath(proxyPath).startsWith(cleanRelativePath(r.route.path))) continue;
      if (r.route.reqRole && ROLE_RANK[role] < ROLE_RANK[r.route.reqRole]) return json(res, 403, { message: 'plugin proxy route access denied' });
      matched = r;
      break;
    }

    // director: the datasource's own URL first, then ApplyRoute for a matched route.
    let target: URL | null = null;
    let pathname: string;
    let query = parseQuery(rawQuery);
    const headers: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.includes(k) && k !== 'host' && k !== 'x-stand-in-role') headers[k] = v;
    delete headers.cookie;
    delete headers.origin;
    delete headers.referer;
    headers['user-agent'] = 'Grafana/12.3 (tcplat stand-in)';
    const dsAuth = headers['x-ds-authorization'];
    if (typeof dsAuth === 'string' && dsAuth !== '') {
      delete headers['x-ds-authorization'];
      headers.authorization = dsAuth;
    }
    const dsUrl = entry.ds.url ? new URL(entry.ds.url) : null;
    try {
      pathname = joinURLFragments(dsUrl?.pathname.replace(/^\/$/, '') ?? '', decodeURIComponent(proxyPath));
    } catch {
      pathname = proxyPath; // Go logs "Failed to unescape raw path" and sends what it has.
    }
    if (dsUrl) target = dsUrl;
    if (matched) {
      const remaining = proxyPath.startsWith(matched.route.path) ? proxyPath.slice(matched.route.path.length) : proxyPath;
      let routeUrl: URL | null = null;
      try {
        routeUrl = new URL(matched.url);
      } catch {
        routeUrl = null; // Go's url.Parse accepts "<no value>/query" as a bare path: no scheme, no host.
      }
      target = routeUrl && /^https?:$/.test(routeUrl.protocol) ? routeUrl : null;
      // The escaped remainder becomes the unescaped Path, so Go re-escapes it ("%2e" goes out as "%252e").
      pathname = joinURLFragments(routeUrl?.pathname ?? matched.url, remaining);
      query = [...query, ...matched.params];
      for (const [name, value] of matched.headers) headers[name.toLowerCase()] = value;
    }
    const outPath = goEscapePath(pathname) + (query.length ? `?${goEncodeQuery(query)}` : '');
    upstream.push({ uid: entry.ds.uid, route: matched?.route.path ?? null, method: req.method ?? 'GET', url: target ? `${target.origin}${outPath}` : outPath, headers });
    if (!target) {
      // The transport cannot send a request without scheme and host: errorHandler's 502.
      req.resume();
      return res.writeHead(502).end();
    }
    headers.host = target.host;
    const up = http.request({ protocol: target.protocol, hostname: target.hostname, port: target.port, path: outPath, method: req.method, headers }, (r) => {
      if (r.statusCode === 401) {
        r.resume();
        const msg = 'Authentication to data source failed';
        res.writeHead(400, 'Bad Request', { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(msg), 'content-security-policy': 'sandbox' });
        return res.end(msg);
      }
      const h: http.OutgoingHttpHeaders = { ...r.headers, 'content-security-policy': 'sandbox' };
      delete h['set-cookie'];
      for (const k of HOP_BY_HOP) delete h[k];
      res.writeHead(r.statusCode ?? 502, h);
      r.pipe(res);
    });
    up.setTimeout(30_000, () => up.destroy(Object.assign(new Error('timeout'), { timeout: true })));
    up.on('error', (e: Error & { timeout?: boolean }) => {
      if (!res.headersSent) res.writeHead(e.timeout ? 504 : 502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    upstream,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function serveStatic(dir: string | undefined, urlPath: string, res: http.ServerResponse): void {
  if (!dir) return void res.writeHead(404).end();
  const file = urlPath === '/' ? 'index.html' : urlPath.slice(1);
  const p = path.join(dir, path.basename(file));
  if (!fs.existsSync(p)) return void res.writeHead(404).end();
  res.writeHead(200, { 'content-type': p.endsWith('.js') ? 'text/javascript' : p.endsWith('.css') ? 'text/css' : 'text/html' });
  fs.createReadStream(p).pipe(res);
}

/** The routes of the datasource's plugin.json. */
export function pluginRoutes(): PluginRoute[] {
  return (JSON.parse(fs.readFileSync(path.join(ROOT, 'src/datasource/plugin.json'), 'utf8')) as { routes: PluginRoute[] }).routes;
}
