/**
 * Both plugin.json files against Grafana's plugin.json schema (docs/sources/developers/plugins/
 * plugin.schema.json): required fields, the id pattern, allowed keys, version/updated placeholders, and
 * that the logos exist.
 */
import fs from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { RENDER_PATHS } from './shared/renderer';

const ID = /^[0-9a-z]+-([0-9a-z]+-)?(app|panel|datasource|secretsmanager|transformer)$/;
const TOP_KEYS = new Set(['$schema', 'alerting', 'annotations', 'autoEnabled', 'backend', 'builtIn', 'category', 'dependencies', 'enterpriseFeatures', 'executable', 'hideFromList', 'id', 'includes', 'info', 'logs', 'metrics', 'name', 'pascalName', 'preload', 'queryOptions', 'routes', 'skipDataQuery', 'state', 'streaming', 'tracing', 'type']);
const INFO_KEYS = new Set(['author', 'build', 'description', 'keywords', 'links', 'logos', 'screenshots', 'updated', 'version']);
const ROUTE_KEYS = new Set(['path', 'method', 'url', 'reqSignedIn', 'reqRole', 'headers', 'body', 'tokenAuth', 'jwtTokenAuth', 'urlParams']);

const plugins = [
  { dir: path.join(__dirname, 'datasource'), id: 'tcplat-connect-datasource', type: 'datasource' },
  { dir: path.join(__dirname, 'panel'), id: 'tcplat-heatmap-panel', type: 'panel' },
];

describe.each(plugins)('$id plugin.json', ({ dir, id, type }) => {
  const json = JSON.parse(fs.readFileSync(path.join(dir, 'plugin.json'), 'utf8'));

  test('required fields, id and type', () => {
    for (const k of ['type', 'name', 'id', 'info', 'dependencies']) expect(json).toHaveProperty(k);
    expect(json.id).toBe(id);
    expect(json.id).toMatch(ID);
    expect(json.type).toBe(type);
    expect(typeof json.name).toBe('string');
    for (const k of Object.keys(json)) expect(TOP_KEYS).toContain(k);
  });

  test('info: logos, version, updated, keywords, author', () => {
    for (const k of ['logos', 'version', 'updated', 'keywords']) expect(json.info).toHaveProperty(k);
    for (const k of Object.keys(json.info)) expect(INFO_KEYS).toContain(k);
    expect(json.info.version).toMatch(/^((0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)|%VERSION%)$/);
    expect(json.info.updated).toMatch(/^(\d{4}-\d{2}-\d{2}|%TODAY%)$/);
    expect(json.info.keywords.length).toBeGreaterThan(0);
    expect(json.info.author.name).toBeTruthy();
    for (const k of ['small', 'large']) {
      expect(json.info.logos[k]).toMatch(/\.svg$/);
      expect(fs.existsSync(path.join(dir, json.info.logos[k]))).toBe(true);
    }
    expect(fs.existsSync(path.join(dir, 'README.md'))).toBe(true);
  });

  test('dependencies: exactly the Grafana versions that share react/jsx-runtime with plugins', () => {
    // Grafana shares react/jsx-runtime from 12.3.0 and, backported, 11.6.11, 12.0.10, 12.1.7 and 12.2.5
    // (grafana/grafana#108478 and its release-* backports); our bundles leave it external, so older
    // versions cannot load them. Grafana and the plugin validator read the range with Masterminds/semver,
    // whose `||` ranges node-semver reads alike.
    const dep = json.dependencies.grafanaDependency;
    expect(semver.validRange(dep)).not.toBeNull();
    for (const v of ['11.6.11', '12.0.10', '12.1.7', '12.2.5', '12.2.9', '12.3.0', '12.3.3', '13.0.0', '13.2.3']) expect([v, semver.satisfies(v, dep)]).toEqual([v, true]);
    for (const v of ['11.6.10', '11.5.3', '12.0.0', '12.0.9', '12.1.6', '12.2.4', '10.4.0']) expect([v, semver.satisfies(v, dep)]).toEqual([v, false]);
    expect(Array.isArray(json.dependencies.plugins)).toBe(true);
  });

  test('info.links: none, or real https links (no placeholders)', () => {
    for (const l of json.info.links ?? []) {
      expect(l.url).toMatch(/^https:\/\/[^/]+\.[a-z]+\/\S+/);
      expect(l.url).not.toMatch(/example\.com|github\.com\/?$|localhost/);
    }
  });

  if (type === 'datasource') {
    test('routes inject the secrets on the server, one method per endpoint; metrics on, no backend', () => {
      expect(json.metrics).toBe(true);
      expect(json.backend).toBe(false);
      for (const r of json.routes) for (const k of Object.keys(r)) expect(ROUTE_KEYS).toContain(k);
      const byPath = Object.fromEntries(json.routes.map((r: { path: string }) => [r.path, r]));
      expect(byPath['influx/api/v2/query']).toMatchObject({ method: 'POST', url: '{{ .JsonData.influxUrl }}/api/v2/query' });
      expect(byPath['influx/api/v2/query'].headers).toEqual([{ name: 'Authorization', content: 'Token {{ .SecureJsonData.influxToken | orEmpty }}' }]);
      expect(byPath['influx/query']).toMatchObject({ method: 'GET', url: '{{ .JsonData.influxUrl }}/query' });
      expect(byPath['influx/query'].urlParams).toEqual([
        { name: 'u', content: '{{ .JsonData.influxUser | orEmpty }}' },
        { name: 'p', content: '{{ .SecureJsonData.influxPassword | orEmpty }}' },
      ]);
      for (const p of ['renderer/render/heatmap.png', 'renderer/render/percentiles.png', 'renderer/render/lifespan.png', 'renderer/links', 'renderer/metrics']) {
        expect(byPath[p].url).toBe(`{{ .JsonData.rendererUrl }}/${p.slice('renderer/'.length)}`);
        expect(byPath[p].headers).toEqual([{ name: 'Authorization', content: 'Bearer {{ .SecureJsonData.rendererToken | orEmpty }}' }]);
      }
      expect([byPath['renderer/links'].reqRole, byPath['renderer/metrics'].reqRole]).toEqual(['Editor', 'Editor']);
      // Every chart the panel can ask for has its route (a chart without one reaches the renderer without
      // the token in Grafana: 401, shown as "Authentication to data source failed").
      for (const chart of Object.values(RENDER_PATHS)) expect([chart, byPath[`renderer${chart}`]?.method]).toEqual([chart, 'GET']);
      // (Who can do what through them, behind Grafana's proxy rules: tests/grafana-proxy.test.ts.)
    });
  }
});
