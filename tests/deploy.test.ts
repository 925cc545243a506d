/**
 * Everything deployable that is not `tcplat up`: docker-compose.yml, Dockerfile, provisioning/ (datasources,
 * dashboard, alert rules, notification template) and deploy/kubernetes/, parsed and cross-checked against
 * the code they deploy: plugin ids from src/*\/plugin.json, renderer routes and parameters from
 * renderer/src, CLI flags and defaults from the agent's and renderer's option specs, and measurement, tag
 * and field names from pkg/core. No Docker engine or Grafana runs here; every Flux query of the dashboard
 * and the alert rules runs on the real InfluxDB 2.x that `npm test` starts.
 */
import { expandValues } from '../src/shared/variables';
import { migrateQuery } from '../src/datasource/migrate';
import { METRICS, type TcplatQuery } from '../src/datasource/types';
import type { TimeRange } from '@grafana/data';
import { chartOf, renderParams } from '../src/panel/render';
import { DEFAULT_PANEL_OPTIONS } from '../src/panel/types';
import { COLOUR_SCALES, OVERLAYS, RENDER_KINDS, RENDER_METRICS, renderQuery } from '../src/shared/renderer';
import { fluxRows } from './support/flux';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import semver from 'semver';
import YAML from 'yaml';
import {
  BUCKET_FIELDS,
  CONNECT_FIELD,
  TLS_FIELD,
  encodePoints,
  connectPoint,
  histPoint,
  HIST_FIELD,
  HIST_QUERY_TAGS,
  loadConfig,
  Histogram,
  int,
  MEASUREMENT,
  RESULTS,
  SESSION_BUCKET_FIELDS,
  SESSION_HIST_FIELD,
  SHORT_LIVED_FIELDS,
  sessionBucketIndex,
  sessionHistPoint,
  TAG,
  TLS_RESULTS,
  queryFlux,
  writeLines,
  type ConnectResult,
  type InfluxV2Target,
  type OptionSpec,
  type Point,
} from '@tcplat/core';
import { AGENT_OPTIONS } from '../agent/src/options';
import { ROLLUP_OPTIONS } from '../agent/src/rollup/cli';
import { ROUTES } from '../renderer/src/app';
import { RENDERER_OPTIONS } from '../renderer/src/config';
import { DEFAULT_LIMITS, parseRenderParams } from '../renderer/src/params';
import { freshBucket, missingInflux2 } from './support/influx';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const read = (rel: string) => fs.readFileSync(path.join(ROOT, rel), 'utf8');
const yaml = (rel: string) => YAML.parse(read(rel));
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const DS_PLUGIN = JSON.parse(read('src/datasource/plugin.json')) as { id: string; type: string; routes: { path: string }[]; dependencies: { grafanaDependency: string } };
const PANEL_PLUGIN = JSON.parse(read('src/panel/plugin.json')) as { id: string; type: string };
const PLUGINS: Record<string, string> = { [DS_PLUGIN.id]: 'src/datasource', [PANEL_PLUGIN.id]: 'src/panel' };

const compose = yaml('docker-compose.yml') as Any;
const services = compose.services as Record<string, Any>;
const envExample = read('.env.example');
const ENV_EXAMPLE_VARS = new Set([...envExample.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]));

const PROVISIONING_FILES = (function walk(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(`${dir}/${e.name}`) : [`${dir}/${e.name}`]));
})('provisioning');
const datasources = (yaml('provisioning/datasources/tcplat.yaml') as Any).datasources as Any[];
const DS_UIDS = new Set(datasources.map((d) => d.uid as string));
const dashboardFiles = PROVISIONING_FILES.filter((f) => f.endsWith('.json'));
const dashboards = dashboardFiles.map((f) => JSON.parse(read(f)) as Any);
const dashboard = dashboards.find((d) => d.title === 'TCP connect latency');
/** The dashboard's query variables (its datasource variables aside). */
const queryVariables = (dashboard.templating.list as Any[]).filter((v) => v.type === 'query');

/**
 * The provisioned uid a dashboard datasource reference stands for. The dashboard names datasources only
 * through its datasource variables (`${ds_tcplat}`), as Grafana's export does, so it imports elsewhere:
 * the variable's plugin type must be the reference's type, and its current value a provisioned uid.
 */
function resolveDatasource(ref: { type: string; uid: string }): string {
  const m = /^\$\{(\w+)\}$/.exec(ref.uid);
  if (!m) throw new Error(`datasource uid ${JSON.stringify(ref.uid)} is hard-coded: use a datasource variable`);
  const v = (dashboard.templating.list as Any[]).find((x) => x.name === m[1] && x.type === 'datasource');
  if (!v) throw new Error(`no datasource variable ${m[1]}`);
  if (v.query !== ref.type) throw new Error(`variable ${m[1]} lists ${v.query} datasources, the reference is a ${ref.type}`);
  return v.current.value as string;
}
const rules = (yaml('provisioning/alerting/tcplat-rules.yaml') as Any).groups.flatMap((g: Any) => g.rules) as Any[];
const templates = (yaml('provisioning/alerting/tcplat-templates.yaml') as Any).templates as Any[];
const K8S_FILES = fs.readdirSync(path.join(ROOT, 'deploy/kubernetes')).filter((f) => /\.ya?ml$/.test(f));
const k8s = K8S_FILES.flatMap((f) => YAML.parseAllDocuments(read(`deploy/kubernetes/${f}`)).map((d) => ({ file: f, doc: d.toJS() as Any })));

/** TCPLAT_<FLAG> names an option spec accepts (secrets also as _FILE). */
function envNames(specs: readonly OptionSpec[]): Set<string> {
  const out = new Set<string>(['TCPLAT_CONFIG']);
  for (const s of specs) {
    const n = `TCPLAT_${s.name.toUpperCase().replace(/-/g, '_')}`;
    out.add(n);
    if (s.secret) out.add(`${n}_FILE`);
  }
  return out;
}
const optionDefault = (specs: readonly OptionSpec[], name: string) => specs.find((s) => s.name === name)?.default as string;
const portOf = (hostport: string) => Number(/:(\d+)$/.exec(hostport)![1]);
const AGENT_PORT = portOf(optionDefault(AGENT_OPTIONS, 'listen'));
const RENDERER_PORT = portOf(optionDefault(RENDERER_OPTIONS, 'listen'));
const INFLUX_PORT = Number(new URL(optionDefault(RENDERER_OPTIONS, 'influx-url')).port);

/** `${VAR}`, `${VAR:-x}`, `${VAR:?msg}` and `$VAR` references in a text (not Grafana's `$__file{...}` expanders). */
function envRefs(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.replace(/\$__\w+\{[^}]*\}/g, '').matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g)) out.add(m[1] ?? m[2]);
  return out;
}

/** Grafana's `$__file{PATH}` references in a provisioning value. */
const fileRefs = (text: string) => [...text.matchAll(/\$__file\{([^}]*)\}/g)].map((m) => m[1]);

/** Compose `environment:` as a map (list or map form). */
function envMap(svc: Any): Record<string, string> {
  const e = svc.environment ?? {};
  if (Array.isArray(e)) return Object.fromEntries(e.map((x: string) => [x.split('=')[0], x.slice(x.indexOf('=') + 1)]));
  return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, String(v)]));
}

/** Every Flux query of the dashboard (variables and panel targets) and of the alert rules. */
function fluxQueries(): { where: string; flux: string; kind: string }[] {
  const out: { where: string; flux: string; kind: string }[] = [];
  for (const v of queryVariables) out.push({ where: `variable ${v.name}`, flux: typeof v.query === 'string' ? v.query : v.query.query, kind: `var:${v.name}` });
  for (const p of dashboard.panels) {
    for (const t of p.targets ?? []) if (t.query) out.push({ where: `panel ${p.id} "${p.title}" ${t.refId}`, flux: t.query, kind: `panel:${p.id}` });
  }
  for (const r of rules) {
    for (const d of r.data) if (d.datasourceUid !== '__expr__') out.push({ where: `rule ${r.uid} ${d.refId}`, flux: d.model.query, kind: `rule:${r.uid}` });
  }
  return out;
}

describe('docker-compose.yml', () => {
  test('has the four services and the token init step, and the images and Dockerfile stages they name exist', () => {
    expect(Object.keys(services).sort()).toEqual(['agent', 'grafana', 'influxdb', 'influxdb-tokens', 'renderer', 'rollup']);
    expect(services.influxdb.image).toBe('influxdb:2.7');
    expect(services['influxdb-tokens'].image).toMatch(/^node:20-/);
    // A pinned 12.3.x patch (the newest known: deploy/README.md says how it was picked) that the plugins'
    // grafanaDependency admits.
    const grafanaVersion = /^grafana\/grafana:(12\.3\.\d+)$/.exec(services.grafana.image)![1];
    expect(semver.satisfies(grafanaVersion, DS_PLUGIN.dependencies.grafanaDependency)).toBe(true);
    expect(semver.gte(grafanaVersion, '12.3.11')).toBe(true);
    const stages = new Set([...read('Dockerfile').matchAll(/^FROM\s+\S+\s+AS\s+(\S+)/gim)].map((m) => m[1]));
    for (const name of ['agent', 'renderer']) {
      expect(services[name].build.context).toBe('.');
      expect(stages).toContain(services[name].build.target);
    }
  });

  test('every host path it mounts exists, or is a plugin build output whose source plugin.json exists', () => {
    const mounts: { svc: string; src: string; dst: string }[] = [];
    for (const [svc, s] of Object.entries(services)) {
      for (const v of (s.volumes ?? []) as string[]) {
        const [src, dst] = v.split(':');
        if (src.startsWith('./') || src.startsWith('/')) mounts.push({ svc, src, dst });
        else expect(Object.keys(compose.volumes)).toContain(src);
      }
    }
    const pluginMounts = new Set<string>();
    for (const m of mounts) {
      if (m.src.startsWith('/')) continue; // host kernel paths, checked with the agent
      const dist = /^\.\/dist\/([^/]+)$/.exec(m.src);
      if (dist) {
        expect(Object.keys(PLUGINS)).toContain(dist[1]);
        expect(fs.existsSync(path.join(ROOT, PLUGINS[dist[1]], 'plugin.json'))).toBe(true);
        expect(m.dst).toBe(`/var/lib/grafana/plugins/${dist[1]}`);
        pluginMounts.add(dist[1]);
        continue;
      }
      expect([m.svc, m.src, fs.existsSync(path.join(ROOT, m.src))]).toEqual([m.svc, m.src, true]);
    }
    expect([...pluginMounts].sort()).toEqual(Object.keys(PLUGINS).sort());
  });

  test('Grafana loads both plugins unsigned and mounts the provisioning folders where it reads them', () => {
    const env = envMap(services.grafana);
    expect(env.GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS.split(',').sort()).toEqual(Object.keys(PLUGINS).sort());
    const mounted = new Map<string, string>();
    for (const v of services.grafana.volumes as string[]) {
      const [src, dst] = v.split(':');
      if (src.startsWith('./provisioning')) mounted.set(src.replace(/^\.\//, ''), dst);
    }
    // Every provisioning file is inside a mounted folder, under /etc/grafana/provisioning/<kind>.
    for (const f of PROVISIONING_FILES) {
      const dir = [...mounted.keys()].find((m) => f.startsWith(`${m}/`));
      expect([f, dir !== undefined]).toEqual([f, true]);
      expect(mounted.get(dir!)).toMatch(/^\/etc\/grafana\/provisioning\/(datasources|dashboards|alerting)$/);
    }
    // The dashboard provider's path and the home dashboard are where those files land in the container.
    const containerPath = (f: string) => {
      const dir = [...mounted.keys()].find((m) => f.startsWith(`${m}/`))!;
      return mounted.get(dir)! + f.slice(dir.length);
    };
    const provider = (yaml('provisioning/dashboards/tcplat.yaml') as Any).providers[0];
    for (const f of dashboardFiles) expect(containerPath(f).startsWith(`${provider.options.path}/`)).toBe(true);
    expect(dashboardFiles.map(containerPath)).toContain(env.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH);
  });

  test('every ${VAR} of the provisioning files is given to Grafana, and every .env variable is documented', () => {
    const env = envMap(services.grafana);
    for (const f of PROVISIONING_FILES.filter((x) => /\.ya?ml$/.test(x))) {
      const doc = yaml(f) as Any;
      // Grafana expands env vars in datasources, providers and alert rule labels, never in annotations,
      // queries or templates, whose `$labels` / `$values` are Go template variables.
      // Contact point settings are expanded too (values.JSONValue in grafana/grafana
      // pkg/services/provisioning/alerting/contact_point_types.go).
      const expanded: unknown[] = [doc.datasources, doc.providers, ...(doc.groups ?? []).flatMap((g: Any) => g.rules.map((r: Any) => r.labels)), ...(doc.contactPoints ?? []).flatMap((c: Any) => c.receivers.map((r: Any) => r.settings))];
      for (const v of envRefs(JSON.stringify(expanded))) expect([f, v, v in env]).toEqual([f, v, true]);
    }
    for (const v of envRefs(JSON.stringify(compose))) expect([v, ENV_EXAMPLE_VARS.has(v)]).toEqual([v, true]);
    for (const s of Object.values(compose.secrets) as Any[]) expect(ENV_EXAMPLE_VARS.has(s.environment)).toBe(true);
    // Nothing secret-looking is written into compose or provisioning literally.
    expect(read('docker-compose.yml')).not.toMatch(/TOKEN:\s*[a-f0-9]{16,}/i);
    expect(envExample).toMatch(/openssl rand -hex 32/);
  });

  test('InfluxDB is initialised from .env and published on the CLI default port', () => {
    const env = envMap(services.influxdb);
    expect(env.DOCKER_INFLUXDB_INIT_MODE).toBe('setup');
    for (const k of ['USERNAME', 'PASSWORD', 'ORG', 'BUCKET', 'ADMIN_TOKEN']) expect(env[`DOCKER_INFLUXDB_INIT_${k}`]).toMatch(/^\$\{[A-Z_]+/);
    expect(services.influxdb.ports).toContain(`127.0.0.1:${INFLUX_PORT}:8086`);
  });

  test('the agent: privileged eBPF in the host PID and network namespaces, kernel paths mounted, CLI env only', () => {
    const a = services.agent;
    const caps = new Set<string>(a.cap_add ?? []);
    expect(a.privileged === true || ['BPF', 'PERFMON', 'SYS_ADMIN'].every((c) => caps.has(c))).toBe(true);
    expect(a.pid).toBe('host');
    expect(a.network_mode).toBe('host');
    // Host cgroup namespace: cgroup paths (cgroup: rules, containers) as the host names them.
    expect(a.cgroup).toBe('host');
    const targets = (a.volumes as string[]).map((v) => v.split(':'));
    for (const p of ['/sys/kernel/btf', '/sys/kernel/tracing', '/sys/fs/cgroup']) expect(targets.some(([s, d]) => s === p && d === p)).toBe(true);
    const env = envMap(a);
    const known = envNames(AGENT_OPTIONS);
    for (const k of Object.keys(env)) expect([k, known.has(k)]).toEqual([k, true]);
    expect(portOf(env.TCPLAT_LISTEN)).toBe(AGENT_PORT);
    expect(new URL(env.TCPLAT_INFLUX_URL).port).toBe(String(INFLUX_PORT));
    expect(env.TCPLAT_SPOOL_DIR).toBe(optionDefault(AGENT_OPTIONS, 'spool-dir'));
    expect(targets.some(([, d]) => d === env.TCPLAT_SPOOL_DIR)).toBe(true);
    for (const s of a.secrets ?? []) expect(Object.keys(compose.secrets)).toContain(s);
  });

  test('the renderer: beyond loopback with a token, published on its CLI default port', () => {
    const r = services.renderer;
    const env = envMap(r);
    const known = envNames(RENDERER_OPTIONS);
    for (const k of Object.keys(env).filter((x) => x.startsWith('TCPLAT_'))) expect([k, known.has(k)]).toEqual([k, true]);
    expect(portOf(env.TCPLAT_LISTEN)).toBe(RENDERER_PORT);
    expect(env.TCPLAT_LISTEN.startsWith('127.')).toBe(false);
    expect(env.TCPLAT_AUTH_TOKEN ?? env.TCPLAT_AUTH_TOKEN_FILE).toBeTruthy();
    expect(r.ports).toContain(`127.0.0.1:${RENDERER_PORT}:${RENDERER_PORT}`);
    // Grafana reaches it by service name on the same port.
    expect(new URL(envMap(services.grafana).TCPLAT_RENDERER_URL).port).toBe(String(RENDERER_PORT));
    expect(new URL(envMap(services.grafana).INFLUX_URL).port).toBe(String(INFLUX_PORT));
  });
});

describe('least privilege: the operator token stays with InfluxDB, each service gets only its own token', () => {
  const init = services['influxdb-tokens'];
  const initEnv = envMap(init);
  // NAME=read|write:FILE:UID, as deploy/compose/influx-tokens.mjs reads it.
  const tokens = Object.fromEntries(
    initEnv.TCPLAT_TOKENS.split(',').map((spec) => {
      const m = /^([a-z-]+)=(read|write):([^:]+):(\d+)$/.exec(spec)!;
      expect(m).not.toBeNull();
      return [m[1], { action: m[2], file: m[3], uid: Number(m[4]) }];
    }),
  ) as Record<string, { action: string; file: string; uid: number }>;
  /** The named volume mounted (in `svc`) at the directory holding `file`, and where. */
  const volumeAt = (svc: Any, file: string) =>
    (svc.volumes as string[])
      .map((v) => v.split(':'))
      .find(([src, dst]) => !src.startsWith('.') && !src.startsWith('/') && file.startsWith(`${dst}/`));
  const tokenVolumes = (svc: Any) => (svc.volumes ?? []).map((v: string) => v.split(':')[0]).filter((v: string) => v.startsWith('influx-token-'));

  test('the init step makes a write-only token for the agent and read-only ones for Grafana and the renderer, from the operator token', () => {
    expect(Object.fromEntries(Object.entries(tokens).map(([k, v]) => [k, v.action]))).toEqual({ agent: 'write', grafana: 'read', renderer: 'read' });
    expect(init.restart).toBe('no');
    expect(init.entrypoint).toEqual(['node', '/tcplat/influx-tokens.mjs']);
    expect(fs.existsSync(path.join(ROOT, 'deploy/compose/influx-tokens.mjs'))).toBe(true);
    expect(init.secrets).toEqual(['influx_operator_token']);
    expect(compose.secrets.influx_operator_token.environment).toBe('INFLUX_OPERATOR_TOKEN');
    expect(envMap(services.influxdb).DOCKER_INFLUXDB_INIT_ADMIN_TOKEN).toMatch(/^\$\{INFLUX_OPERATOR_TOKEN:\?/);
    // The user each image runs as can read its file (mode 0400): root, Grafana's 472, the renderer stage's USER node.
    expect(read('Dockerfile')).toMatch(/FROM runtime AS renderer[\s\S]*USER node/);
    expect([tokens.agent.uid, tokens.grafana.uid, tokens.renderer.uid]).toEqual([0, 472, 1000]);
  });

  test('nothing but InfluxDB and the init step sees the operator token', () => {
    for (const [name, svc] of Object.entries(services)) {
      const text = JSON.stringify(svc);
      const sees = text.includes('INFLUX_OPERATOR_TOKEN') || (svc.secrets ?? []).includes('influx_operator_token');
      expect([name, sees]).toEqual([name, name === 'influxdb' || name === 'influxdb-tokens']);
    }
    expect(read('provisioning/datasources/tcplat.yaml')).not.toMatch(/OPERATOR/);
  });

  test('the rollup service keeps the fleet rollups current with tcplat rollup --fleet-only --follow, on the agent image and the agent token', () => {
    const r = services.rollup;
    expect(r.image).toBe(services.agent.image);
    const { values } = loadConfig(ROLLUP_OPTIONS, r.command.slice(1), {});
    expect([r.command[0], values['fleet-only'], typeof values.follow]).toEqual(['rollup', true, 'number']);
    const known = envNames(ROLLUP_OPTIONS);
    for (const k of Object.keys(envMap(r))) expect([k, known.has(k)]).toEqual([k, true]);
    expect(tokenVolumes(r)).toEqual(tokenVolumes(services.agent));
    expect(envMap(r).TCPLAT_INFLUX_TOKEN_FILE).toBe(envMap(services.agent).TCPLAT_INFLUX_TOKEN_FILE);
    expect(r.depends_on['influxdb-tokens'].condition).toBe('service_completed_successfully');
  });

  test("each service mounts exactly one token volume, its own, where it reads its token", () => {
    for (const name of ['agent', 'renderer', 'grafana']) {
      const svc = services[name];
      const t = tokens[name];
      const [initVolume] = volumeAt(init, t.file)!;
      expect([name, tokenVolumes(svc)]).toEqual([name, [initVolume]]);
      expect(Object.keys(compose.volumes)).toContain(initVolume);
      const inSvc = (svc.volumes as string[]).map((v) => v.split(':')).find(([src]) => src === initVolume)!;
      expect([name, inSvc[2]]).toEqual([name, 'ro']);
      // Where the service reads it: the agent and renderer from TCPLAT_INFLUX_TOKEN_FILE, Grafana from $__file{...}.
      const where = name === 'grafana' ? fileRefs(JSON.stringify(datasources)) : [envMap(svc).TCPLAT_INFLUX_TOKEN_FILE];
      const initDir = volumeAt(init, t.file)![1];
      for (const f of where) expect([name, f]).toEqual([name, `${inSvc[1]}${t.file.slice(initDir.length)}`]);
      expect(svc.depends_on['influxdb-tokens'].condition).toBe('service_completed_successfully');
    }
    // Both Grafana datasources read with Grafana's token.
    const refs = fileRefs(JSON.stringify(datasources));
    expect(refs.length).toBe(2);
    expect(tokenVolumes(init).sort()).toEqual(['influx-token-agent', 'influx-token-grafana', 'influx-token-renderer']);
  });
});

const GO_MISSING = (process.env.PATH ?? '').split(':').some((p) => fs.existsSync(path.join(p, 'go'))) ? null : 'no Go toolchain on PATH (needed to build tests/go/compose-load)';
describeWith(GO_MISSING, 'docker-compose.yml loaded by compose-go (the loader docker compose uses)', () => {
  jest.setTimeout(600_000);
  let bin = '';
  beforeAll(() => {
    bin = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-compose-load-')), 'compose-load');
    execFileSync('go', ['build', '-o', bin, './compose-load'], { cwd: path.join(ROOT, 'tests/go'), stdio: ['ignore', 'ignore', 'pipe'], timeout: 540_000 });
  }, 600_000);
  const load = (envFile: string) => {
    try {
      return { project: JSON.parse(execFileSync(bin, ['-f', 'docker-compose.yml', '--env-file', envFile], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as Any, error: '' };
    } catch (e) {
      return { project: undefined, error: String((e as { stderr?: string }).stderr ?? e) };
    }
  };

  test('with .env.example it loads: schema, interpolation and every reference (secrets, volumes, depends_on) resolve', () => {
    const { project, error } = load('.env.example');
    expect(error).toBe('');
    expect(Object.keys(project.services).sort()).toEqual(Object.keys(services).sort());
    // What compose resolves is what the tests above read from the YAML: each service's token volume.
    for (const name of ['agent', 'grafana', 'renderer']) {
      const vols = (project.services[name].volumes as Any[]).filter((v) => v.type === 'volume' && String(v.source).startsWith('influx-token-'));
      expect([name, vols.map((v) => [v.source, v.read_only])]).toEqual([name, [[`influx-token-${name}`, true]]]);
    }
    expect(project.services['influxdb-tokens'].environment.INFLUX_ORG).toBe('tcplat');
    expect(project.services.influxdb.environment.DOCKER_INFLUXDB_INIT_ADMIN_TOKEN).toBe('change-me-openssl-rand-hex-32');
    expect(project.services.grafana.environment.INFLUX_OPERATOR_TOKEN).toBeUndefined();
  });

  test('without the operator token in the env file it refuses, naming the variable', () => {
    const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-env-')), '.env');
    fs.writeFileSync(f, envExample.replace(/^INFLUX_OPERATOR_TOKEN=.*$/m, ''));
    const { error } = load(f);
    expect(error).toMatch(/INFLUX_OPERATOR_TOKEN/);
    expect(error).toMatch(/set it in .env/);
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  test('multi-stage: build, agent and renderer stages, the one CLI as entrypoint', () => {
    expect(text).toMatch(/^FROM node:\$\{NODE_VERSION\}-bookworm AS build$/m);
    expect(text).toMatch(/npm run build/);
    expect(text).toMatch(/make -C bpf tcplat-probe/);
    // bin/tcplat runs as an executable, so node gets the flags of its #! line (the young-generation
    // bound that keeps the agent's RSS down, README Performance) in the image as everywhere else.
    expect(text).toMatch(/ENTRYPOINT \["\/app\/bin\/tcplat"\]/);
    expect(read('bin/tcplat').split('\n')[0]).toMatch(/^#!\/usr\/bin\/env -S node --max-semi-space-size=\d+$/);
    expect(fs.statSync(path.join(ROOT, 'bin/tcplat')).mode & 0o111).toBe(0o111);
  });
  test('every path it copies from the build context exists', () => {
    for (const m of text.matchAll(/^COPY (?!--from)(.+) (\S+)$/gm)) {
      for (const src of m[1].split(/\s+/)) if (src !== '.') expect([src, fs.existsSync(path.join(ROOT, src))]).toEqual([src, true]);
    }
    // The renderer's Python worker and the probe source are where the stages take them from.
    expect(fs.existsSync(path.join(ROOT, 'renderer/python/worker.py'))).toBe(true);
    expect(fs.existsSync(path.join(ROOT, 'bpf/tcplat-probe.c'))).toBe(true);
    expect(read('.dockerignore')).toMatch(/^node_modules$/m);
  });
});

describe('provisioning', () => {
  test('datasources: the core InfluxDB in Flux mode and ours, fixed uids, secrets only from env', () => {
    const influx = datasources.find((d) => d.type === 'influxdb');
    expect(influx.uid).toBe('tcplat-influxdb');
    expect(influx.jsonData.version).toBe('Flux');
    expect(influx.jsonData.organization).toBeTruthy();
    expect(influx.jsonData.defaultBucket).toBeTruthy();
    const ours = datasources.find((d) => d.type === DS_PLUGIN.id);
    expect(ours.uid).toBe('tcplat');
    expect(ours.jsonData.dialect).toBe('flux');
    // jsonData and secureJsonData keys are the plugin's own settings (src/datasource/types.ts).
    const types = read('src/datasource/types.ts');
    const block = (name: string) => new RegExp(`interface ${name}\\b[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(types)![1];
    for (const k of Object.keys(ours.jsonData)) expect([k, new RegExp(`\\b${k}\\?:`).test(block('TcplatOptions'))]).toEqual([k, true]);
    for (const k of Object.keys(ours.secureJsonData)) expect([k, new RegExp(`\\b${k}\\?:`).test(block('TcplatSecureOptions'))]).toEqual([k, true]);
    for (const d of datasources) for (const v of Object.values(d.secureJsonData ?? {})) expect(v).toMatch(/^(\$\{[A-Z_]+\}|\$__file\{\/run\/[\w/.-]+\})$/);
  });

  test('dashboard: every panel and target uses a provisioned datasource; panel types exist', () => {
    expect(dashboard).toBeDefined();
    expect(dashboard.uid).toBe('tcplat-connect-latency');
    const CORE_PANELS = new Set(['timeseries', 'table', 'stat', 'heatmap', 'text', 'row', 'bargauge', 'gauge']);
    const ids = new Set<number>();
    for (const p of dashboard.panels) {
      expect(ids.has(p.id)).toBe(false);
      ids.add(p.id);
      expect([p.title, CORE_PANELS.has(p.type) || p.type === PANEL_PLUGIN.id]).toEqual([p.title, true]);
      if (p.datasource) expect([p.title, DS_UIDS.has(resolveDatasource(p.datasource))]).toEqual([p.title, true]);
      for (const t of p.targets ?? []) expect([p.title, t.refId, DS_UIDS.has(resolveDatasource(t.datasource ?? p.datasource))]).toEqual([p.title, t.refId, true]);
    }
    for (const v of queryVariables) expect(DS_UIDS.has(resolveDatasource(v.datasource))).toBe(true);
    expect(dashboard.templating.list.map((v: Any) => v.name)).toEqual(['ds_influxdb', 'ds_tcplat', 'host', 'service', 'dst']);
    // Each datasource variable lists its plugin's datasources and defaults to the provisioned one of that type.
    for (const v of dashboard.templating.list.filter((x: Any) => x.type === 'datasource')) {
      expect(datasources.find((d) => d.uid === v.current.value)?.type).toBe(v.query);
    }
  });

  test('exported, the dashboard imports anywhere: no datasource uid is hard-coded, only datasource variables', () => {
    const refs: { where: string; uid: string }[] = [];
    (function walk(o: Any, where: string): void {
      if (Array.isArray(o)) o.forEach((x, i) => walk(x, `${where}[${i}]`));
      else if (o && typeof o === 'object') {
        if (typeof o.uid === 'string' && typeof o.type === 'string' && where.endsWith('datasource')) refs.push({ where, uid: o.uid });
        for (const [k, v] of Object.entries(o)) walk(v, `${where}.${k}`);
      }
    })({ panels: dashboard.panels, templating: dashboard.templating }, '');
    expect(refs.length).toBeGreaterThan(10);
    for (const r of refs) expect([r.where, r.uid]).toEqual([r.where, expect.stringMatching(/^\$\{ds_\w+\}$/)]);
    // The JSON spells no provisioned uid at all outside the datasource variables' defaults.
    const text = JSON.stringify({ panels: dashboard.panels, templating: queryVariables });
    for (const uid of DS_UIDS) expect([uid, text.includes(`"${uid}"`)]).toEqual([uid, false]);
  });

  test('the heatmap panel sits beside the percentiles, on our datasource, with the panel options it defines', () => {
    const heat = dashboard.panels.find((p: Any) => p.type === PANEL_PLUGIN.id);
    const pct = dashboard.panels.find((p: Any) => p.type === 'timeseries');
    expect(heat.gridPos.y).toBe(pct.gridPos.y);
    expect(datasources.find((d) => d.uid === resolveDatasource(heat.datasource)).type).toBe(DS_PLUGIN.id);
    expect(heat.options.datasource.uid).toBe(heat.datasource.uid);
    expect(heat.options.service).toBe('$service');
    expect(heat.options.dst).toBe('$dst');
    const types = read('src/panel/types.ts');
    const fields = /interface PanelOptions \{([\s\S]*?)\n\}/.exec(types)![1];
    for (const k of Object.keys(heat.options)) expect([k, new RegExp(`\\b${k}\\??:`).test(fields)]).toEqual([k, true]);
  });

  test('dashboard: every tcplat panel asks for a chart the panel and the renderer know; a lifespan chart in the churn row, a TLS one in the TLS row', () => {
    const panels = dashboard.panels.filter((p: Any) => p.type === PANEL_PLUGIN.id);
    expect(panels.length).toBeGreaterThanOrEqual(3);
    const known: Record<string, readonly unknown[]> = { chart: RENDER_KINDS, metric: RENDER_METRICS, colourScale: COLOUR_SCALES };
    // A TimeRange as render.ts reads it (valueOf of from/to, raw): @grafana/data's ESM dependencies do not load in the node project.
    const now = Date.now();
    const range = { from: new Date(now - 3_600_000), to: new Date(now), raw: { from: 'now-1h', to: 'now' } } as unknown as TimeRange;
    for (const p of panels) {
      const where = `panel ${p.id} "${p.title}"`;
      // Every option is one of the panel's, each enumerated one among its values: a typo (chart: "lifespans")
      // would draw an error in the panel, not the chart.
      for (const [k, values] of Object.entries(known)) if (k in p.options) expect([where, k, p.options[k], values.includes(p.options[k])]).toEqual([where, k, p.options[k], true]);
      for (const o of p.options.overlays ?? []) expect([where, o, (OVERLAYS as readonly string[]).includes(o)]).toEqual([where, o, true]);
      expect([where, Object.keys(p.options).filter((k) => !(k in DEFAULT_PANEL_OPTIONS))]).toEqual([where, []]);
      // The renderer accepts what the panel sends for these options (its own parser, as for a request).
      const options = { ...DEFAULT_PANEL_OPTIONS, ...p.options, service: 'api', dst: '', host: '' };
      const rp = renderParams(options, { width: 800, height: 300, devicePixelRatio: 1, timeRange: range, timeZone: 'utc', isDark: true, replaceVariables: (t: string) => t });
      const raw = Object.fromEntries([...new Set(renderQuery(rp).keys())].map((k) => [k, renderQuery(rp).getAll(k).length > 1 ? renderQuery(rp).getAll(k) : renderQuery(rp).get(k)!]));
      const kind = chartOf(options).kind;
      expect([where, parseRenderParams(kind, raw, DEFAULT_LIMITS, Date.now()).kind]).toEqual([where, kind]);
    }
    const rows = dashboard.panels.filter((p: Any) => p.type === 'row');
    const inRow = (i: number) => panels.filter((p: Any) => p.gridPos.y > rows[i].gridPos.y && (i + 1 >= rows.length || p.gridPos.y < rows[i + 1].gridPos.y));
    const lifespan = inRow(0).filter((p: Any) => p.options.chart === 'lifespan');
    expect(lifespan.length).toBe(1);
    expect(lifespan[0].description).toMatch(/--probe-close/);
    expect(lifespan[0].options.result).toBe('');
    const tls = inRow(1).filter((p: Any) => p.options.metric === 'tls');
    expect(tls.map((p: Any) => p.options.chart)).toEqual(['heatmap']);
    // The connect heatmap above the rows stays what it was.
    expect(chartOf(panels[0].options)).toEqual({ kind: 'heatmap', metric: 'connect' });
  });

  test('dashboard: the tcplat datasource panels (churn, TLS rows) name only metrics, tags and variables that exist', () => {
    const variables = new Set((dashboard.templating.list as Any[]).map((v) => v.name));
    const ours = dashboard.panels.filter((p: Any) => p.type === 'timeseries' && resolveDatasource(p.datasource) === 'tcplat');
    expect(ours.length).toBeGreaterThanOrEqual(5);
    const used = new Set<string>();
    for (const p of ours) {
      for (const t of p.targets as TcplatQuery[]) {
        const where = `panel ${p.id} "${p.title}" ${t.refId}`;
        expect([where, (METRICS as readonly string[]).includes(t.metric)]).toEqual([where, true]);
        used.add(t.metric);
        // Saved in the current shape: the datasource reads it as it is.
        expect([where, migrateQuery(t)]).toEqual([where, t]);
        for (const k of Object.keys(t)) expect([where, k, ['refId', 'datasource', 'version', 'metric', 'groupBy', ...HIST_QUERY_TAGS].includes(k)]).toEqual([where, k, true]);
        for (const g of t.groupBy ?? []) expect([where, g, (HIST_QUERY_TAGS as readonly string[]).includes(g)]).toEqual([where, g, true]);
        for (const tag of HIST_QUERY_TAGS) {
          for (const v of t[tag] ?? []) {
            const ok = v.startsWith('$') ? variables.has(v.slice(1)) : tag === 'result' && (RESULTS as readonly string[]).includes(v);
            expect([where, tag, v, ok]).toEqual([where, tag, v, true]);
          }
        }
        // The dashboard's selection applies: every tcplat query filters on the three variables.
        expect([where, t.service, t.dst, t.host]).toEqual([where, ['$service'], ['$dst'], ['$host']]);
      }
    }
    for (const m of ['newConnRate', 'openMean', 'lifespanP50', 'lifespanP99', 'shortShare', 'p99', 'tlsP99', 'tlsFailureRate']) expect([m, used.has(m)]).toEqual([m, true]);
    // Two rows below the connect panels: churn, then TLS.
    const rows = dashboard.panels.filter((p: Any) => p.type === 'row');
    expect(rows.map((r: Any) => r.title)).toEqual(['Connection churn', 'TLS handshake']);
    const connectBottom = Math.max(...dashboard.panels.filter((p: Any) => p.id <= 7).map((p: Any) => p.gridPos.y + p.gridPos.h));
    expect(rows[0].gridPos.y).toBeGreaterThanOrEqual(connectBottom);
    const inRow = (i: number) => ours.filter((p: Any) => p.gridPos.y > rows[i].gridPos.y && (i + 1 >= rows.length || p.gridPos.y < rows[i + 1].gridPos.y));
    const metricsOf = (p: Any) => (p.targets as TcplatQuery[]).map((t) => t.metric);
    // Churn panels say they need --probe-close.
    for (const p of inRow(0)) expect([p.title, /--probe-close/.test(p.description)]).toEqual([p.title, true]);
    expect(inRow(0).flatMap(metricsOf).sort()).toEqual(['lifespanP50', 'lifespanP99', 'newConnRate', 'openMean', 'shortShare']);
    // TCP connect p99 and TLS handshake p99 of the same service -> destination in one panel, side by side.
    const both = inRow(1).find((p: Any) => metricsOf(p).includes('tlsP99'));
    expect(metricsOf(both)).toEqual(['p99', 'tlsP99']);
    for (const t of both.targets) expect(t.groupBy).toEqual(['service', 'dst']);
    expect(inRow(1).flatMap(metricsOf)).toContain('tlsFailureRate');
  });

  test("each variable's All is `.*`: a regex for the Flux panels, and no filter at all for the heatmap panel", () => {
    for (const v of queryVariables) {
      expect([v.name, v.includeAll, v.allValue]).toEqual([v.name, true, '.*']);
      // What the panel does with it: Grafana replaces $service by the All value; the panel then sends no
      // service filter to the renderer (rather than a list of every value, which the renderer caps).
      const replace = (t: string, fmt: (v: string | string[]) => string) => t.replace(`$${v.name}`, fmt(v.allValue));
      expect(expandValues([`$${v.name}`], replace)).toEqual([]);
    }
  });

  test('every Flux query names only measurements, tags and fields of the schema', () => {
    const measurements = new Set<string>(Object.values(MEASUREMENT));
    const tags = new Set<string>(Object.values(TAG));
    const fields: Record<string, Set<string>> = {
      [MEASUREMENT.connect]: new Set(Object.values(CONNECT_FIELD)),
      [MEASUREMENT.connectHist]: new Set([...Object.values(HIST_FIELD), ...BUCKET_FIELDS]),
      [MEASUREMENT.sessionHist]: new Set([...Object.values(SESSION_HIST_FIELD), ...SESSION_BUCKET_FIELDS]),
      // tls_handshake_hist is tcp_connect_hist's schema; tls_handshake points have their own fields (TLS_FIELD).
      [MEASUREMENT.tlsHist]: new Set([...Object.values(HIST_FIELD), ...BUCKET_FIELDS]),
      [MEASUREMENT.tls]: new Set(Object.values(TLS_FIELD)),
    };
    const allFields = new Set(Object.values(fields).flatMap((s) => [...s]));
    // Columns Flux itself has, or that a query creates.
    const fluxColumns = new Set(['_measurement', '_field', '_value', '_time', '_start', '_stop', 'stat', 'mean_ms']);
    const queries = fluxQueries();
    expect(queries.length).toBeGreaterThanOrEqual(11);
    for (const { where, flux } of queries) {
      const used = [...flux.matchAll(/r\._measurement == "([^"]+)"/g)].map((m) => m[1]);
      expect([where, used.length > 0 || /tagValues/.test(flux)]).toEqual([where, true]);
      for (const m of used) expect([where, m, measurements.has(m)]).toEqual([where, m, true]);
      const fieldSet = used.length === 1 ? fields[used[0]] : allFields;
      for (const m of flux.matchAll(/r\._field [!=]= "([^"]+)"/g)) expect([where, m[1], fieldSet.has(m[1])]).toEqual([where, m[1], true]);
      for (const m of flux.matchAll(/\br\.([a-z_]+)/g)) {
        if (m[1].startsWith('_')) continue;
        // Rows after pivot/reduce carry fields as columns, and the accumulators of reduce().
        const ok = tags.has(m[1]) || allFields.has(m[1]) || ['n', 'total', 'failed', 'mean_ms', 'short', 'closed', 'connects'].includes(m[1]);
        expect([where, m[1], ok]).toEqual([where, m[1], true]);
      }
      for (const m of flux.matchAll(/columns: \[([^\]]*)\]/g)) {
        for (const c of m[1].split(',').map((x) => x.trim().replace(/"/g, '')).filter(Boolean)) expect([where, c, tags.has(c) || fluxColumns.has(c)]).toEqual([where, c, true]);
      }
      for (const m of flux.matchAll(/tag: "([^"]+)"/g)) expect([where, tags.has(m[1])]).toEqual([where, true]);
      for (const m of flux.matchAll(/r\.result [!=]= "([^"]+)"/g)) expect((RESULTS as readonly string[]).includes(m[1]) || (TLS_RESULTS as readonly string[]).includes(m[1])).toBe(true);
      // A set of fields (the churn rule's short-lived buckets) is pkg/core's, exactly.
      for (const m of flux.matchAll(/contains\(value: r\._field, set: \[([^\]]*)\]\)/g)) expect([where, JSON.parse(`[${m[1]}]`)]).toEqual([where, [...SHORT_LIVED_FIELDS]]);
      // Variables only inside regex literals, in the regex format: the values never become Flux code.
      for (const m of flux.matchAll(/\$\{?(\w+)(:\w+)?\}?/g)) expect([where, m[0], m[2]]).toEqual([where, m[0], ':regex']);
    }
  });

  test('alert rules: datasources exist, the condition chain is complete, and they point at the dashboard', () => {
    expect(rules.map((r) => r.uid).sort()).toEqual(['tcplat-churn-short-lived', 'tcplat-connect-failure-rate', 'tcplat-connect-p99', 'tcplat-tls-failure-rate', 'tcplat-tls-p99']);
    for (const r of rules) {
      const refs = new Set(r.data.map((d: Any) => d.refId));
      expect(refs.has(r.condition)).toBe(true);
      for (const d of r.data) {
        expect([r.uid, d.refId, d.datasourceUid === '__expr__' || DS_UIDS.has(d.datasourceUid)]).toEqual([r.uid, d.refId, true]);
        if (d.datasourceUid !== '__expr__') expect(datasources.find((x) => x.uid === d.datasourceUid).type).toBe('influxdb');
        if (d.model.expression) expect(refs.has(d.model.expression)).toBe(true);
      }
      expect(r.dashboardUid).toBe(dashboard.uid);
      expect(dashboard.panels.map((p: Any) => p.id)).toContain(r.panelId);
      expect(r.for).toMatch(/^\d+m$/);
    }
  });

  test('alert rules carry the renderer alert-link prefix in a label Grafana expands from its environment', () => {
    for (const r of rules) {
      // Labels are expanded from the environment at provisioning; annotations and templates are not.
      expect([r.uid, r.labels.tcplat_alert_link]).toEqual([r.uid, '${TCPLAT_ALERT_LINK}']);
      // No link through Grafana's API: it answers 401 JSON to a reader without a session.
      expect(JSON.stringify(r.annotations)).not.toMatch(/\/api\/|heatmap_url/);
    }
    expect(envMap(services.grafana).TCPLAT_ALERT_LINK).toBeDefined();
    // The renderer serves the path the prefix names, and compose/k8s give it a public URL and key ids.
    expect(ROUTES.alert).toBe('/alert/heatmap.png');
    const env = envMap(services.renderer);
    expect(env.TCPLAT_PUBLIC_URL).toMatch(/^\$\{TCPLAT_RENDERER_PUBLIC_URL:\?/);
    expect(env.TCPLAT_ALERT_LINK_KEYS).toBeDefined();
    const publicUrl = /^TCPLAT_RENDERER_PUBLIC_URL=(.*)$/m.exec(envExample)![1];
    expect(new URL(publicUrl).hostname).not.toMatch(/^(localhost|127\.|renderer$)/);
  });

  test('the relay contact point posts to the renderer route with the relay token, and the renderer is configured for it', () => {
    const cps = (yaml('provisioning/alerting/tcplat-contact-points.yaml') as Any).contactPoints as Any[];
    const r = cps.flatMap((c) => c.receivers).find((x: Any) => x.uid === 'tcplat-relay');
    expect(r.type).toBe('webhook');
    const genv = envMap(services.grafana);
    expect(r.settings.url.replace('${TCPLAT_RENDERER_URL}', genv.TCPLAT_RENDERER_URL)).toBe(`http://renderer:${RENDERER_PORT}${ROUTES.alertRelay}`);
    expect([r.settings.authorization_scheme, r.settings.authorization_credentials]).toEqual(['Bearer', '${TCPLAT_ALERT_RELAY_TOKEN}']);
    // The title uses the provisioned template.
    expect(templates.map((t: Any) => t.template).join('\n')).toContain('define "tcplat.title"');
    expect(r.settings.title).toContain('template "tcplat.title"');
    // The renderer gets the same token (as a secret file) and the chat webhook; grants stay off by default.
    const renv = envMap(services.renderer);
    expect(renv.TCPLAT_ALERT_RELAY_TOKEN_FILE).toMatch(/^\/run\/secrets\//);
    expect(renv.TCPLAT_ALERT_RELAY_TO_FILE).toMatch(/^\/run\/secrets\//);
    expect(compose.secrets[renv.TCPLAT_ALERT_RELAY_TOKEN_FILE.split('/').pop()!].environment).toBe('TCPLAT_ALERT_RELAY_TOKEN');
    expect(renv.TCPLAT_ALERT_LINK_GRANTS).toMatch(/:-false\}$/);
  });

  test('the notification templates are plain text with the heatmap link (tests/alert-links.test.ts runs them)', () => {
    const t = templates.find((x) => x.name === 'tcplat').template as string;
    expect(t).toContain('define "tcplat.message"');
    expect(t).toContain('.Labels.tcplat_alert_link');
    // No HTML (Grafana escapes it in email), no Markdown image (Slack and Teams do not show it).
    expect(t.replace(/\{\{[^}]*\}\}/g, '')).not.toMatch(/<[a-z/]|!\[/i);
  });
});

describe('deploy/kubernetes', () => {
  const kinds = (kind: string) => k8s.filter((x) => x.doc?.kind === kind).map((x) => x.doc);
  const deployment = (name: string) => kinds('Deployment').find((d) => d.metadata.name === name);
  const secret = kinds('Secret')[0];
  const configMap = kinds('ConfigMap')[0];

  function checkEnv(container: Any, specs: readonly OptionSpec[]) {
    const known = envNames(specs);
    for (const e of container.env) {
      if (e.name.startsWith('TCPLAT_')) expect([e.name, known.has(e.name)]).toEqual([e.name, true]);
      const ref = e.valueFrom?.secretKeyRef;
      if (ref) {
        expect(ref.name).toBe(secret.metadata.name);
        expect(Object.keys(secret.stringData)).toContain(ref.key);
      }
    }
    for (const f of container.envFrom ?? []) {
      expect(f.configMapRef.name).toBe(configMap.metadata.name);
      for (const k of Object.keys(configMap.data)) expect([k, known.has(k)]).toEqual([k, true]);
    }
  }

  test('every manifest parses, in one namespace', () => {
    expect(k8s.length).toBeGreaterThanOrEqual(6);
    const ns = kinds('Namespace')[0].metadata.name;
    for (const { file, doc } of k8s) if (doc.kind !== 'Namespace') expect([file, doc.metadata.namespace]).toEqual([file, ns]);
    expect(K8S_FILES).toContain('secret.example.yaml');
  });

  test('the agent DaemonSet: host PID, eBPF privileges, node name as host, probes on its API', () => {
    const ds = kinds('DaemonSet')[0];
    const spec = ds.spec.template.spec;
    expect(spec.hostPID).toBe(true);
    const c = spec.containers[0];
    const caps = new Set<string>(c.securityContext.capabilities?.add ?? []);
    expect(c.securityContext.privileged === true || ['BPF', 'PERFMON', 'SYS_ADMIN'].every((x) => caps.has(x))).toBe(true);
    const host = c.env.find((e: Any) => e.name === 'TCPLAT_HOST');
    expect(host.valueFrom.fieldRef.fieldPath).toBe('spec.nodeName');
    checkEnv(c, AGENT_OPTIONS);
    const listen = c.env.find((e: Any) => e.name === 'TCPLAT_LISTEN').value;
    expect(portOf(listen)).toBe(AGENT_PORT);
    // Beyond loopback the agent refuses to start without an API token.
    expect(c.env.some((e: Any) => e.name === 'TCPLAT_API_TOKEN')).toBe(true);
    const port = c.ports.find((p: Any) => p.name === c.livenessProbe.httpGet.port);
    expect(port.containerPort).toBe(AGENT_PORT);
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.resources.requests && c.resources.limits).toBeTruthy();
    const volumes = new Map<string, string>(spec.volumes.map((v: Any) => [v.name, v.hostPath?.path]));
    for (const p of ['/sys/kernel/btf', '/sys/kernel/tracing', '/sys/fs/cgroup']) {
      const m = c.volumeMounts.find((x: Any) => x.mountPath === p);
      expect([p, volumes.get(m?.name)]).toEqual([p, p]);
    }
    const spool = c.env.find((e: Any) => e.name === 'TCPLAT_SPOOL_DIR').value;
    expect(c.volumeMounts.some((m: Any) => m.mountPath === spool && volumes.get(m.name))).toBe(true);
  });

  test('least privilege: the agent gets only the write-only InfluxDB token, the renderer only the read-only one', () => {
    const tokenKey = (c: Any) => c.env.find((e: Any) => e.name === 'TCPLAT_INFLUX_TOKEN').valueFrom.secretKeyRef.key;
    const secretKeys = (c: Any) => c.env.filter((e: Any) => e.valueFrom?.secretKeyRef).map((e: Any) => e.valueFrom.secretKeyRef.key).sort();
    const agent = kinds('DaemonSet')[0].spec.template.spec.containers[0];
    const renderer = deployment('tcplat-renderer').spec.template.spec.containers[0];
    expect(tokenKey(agent)).toBe('influx-write-token');
    expect(tokenKey(renderer)).toBe('influx-read-token');
    expect(secretKeys(agent)).toEqual(['agent-api-token', 'influx-write-token']);
    // Plus the alert relay's token, chat webhook and SMTP server, optional (absent: the relay is off).
    expect(secretKeys(renderer)).toEqual(['alert-relay-smtp', 'alert-relay-to', 'alert-relay-token', 'influx-read-token', 'renderer-token']);
    for (const e of renderer.env.filter((x: Any) => /^TCPLAT_ALERT_RELAY_/.test(x.name) && x.valueFrom)) expect([e.name, e.valueFrom.secretKeyRef.optional]).toEqual([e.name, true]);
    for (const c of [agent, renderer]) expect(c.envFrom ?? []).toEqual((c.envFrom ?? []).filter((f: Any) => f.configMapRef));
    // The example Secret holds scoped tokens only, and says how to make them.
    expect(Object.keys(secret.stringData).sort()).toEqual(['agent-api-token', 'alert-relay-smtp', 'alert-relay-to', 'alert-relay-token', 'influx-read-token', 'influx-write-token', 'renderer-token']);
    const text = read('deploy/kubernetes/secret.example.yaml');
    expect(text).toMatch(/--write-bucket/);
    expect(text).toMatch(/--read-bucket/);
  });

  test('the rollup Deployment: one replica of tcplat rollup --fleet-only --follow with the agents\' token', () => {
    const dep = deployment('tcplat-rollup');
    expect(dep.spec.replicas).toBe(1);
    const c = dep.spec.template.spec.containers[0];
    checkEnv(c, ROLLUP_OPTIONS);
    const { values } = loadConfig(ROLLUP_OPTIONS, c.args.slice(1), {});
    expect([c.args[0], values['fleet-only'], typeof values.follow]).toEqual(['rollup', true, 'number']);
    expect(c.image.split(':')[0]).toBe(kinds('DaemonSet')[0].spec.template.spec.containers[0].image.split(':')[0]);
    expect(c.env.find((e: Any) => e.name === 'TCPLAT_INFLUX_TOKEN').valueFrom.secretKeyRef.key).toBe('influx-write-token');
  });

  test('the renderer Deployment and Service: token from the Secret, probes on /healthz', () => {
    const dep = deployment('tcplat-renderer');
    const c = dep.spec.template.spec.containers[0];
    checkEnv(c, RENDERER_OPTIONS);
    expect(c.env.find((e: Any) => e.name === 'TCPLAT_AUTH_TOKEN').valueFrom.secretKeyRef).toBeTruthy();
    expect(portOf(c.env.find((e: Any) => e.name === 'TCPLAT_LISTEN').value)).toBe(RENDERER_PORT);
    expect(c.livenessProbe.httpGet.path).toBe(ROUTES.healthz);
    expect(c.readinessProbe.httpGet.path).toBe(ROUTES.healthz);
    const svc = kinds('Service')[0];
    expect(svc.spec.selector).toEqual(dep.spec.selector.matchLabels);
    expect(svc.spec.ports[0].port).toBe(RENDERER_PORT);
  });
});

/** Grafana's `regex` variable format: escaped values, several as an alternation. */
function regexFormat(values: string[]): string {
  const esc = values.map((v) => v.replace(/[\\^$*+?.()|[\]{}/]/g, '\\$&'));
  return esc.length === 1 ? esc[0] : `(${esc.join('|')})`;
}

/** What Grafana sends InfluxDB: macros and variables replaced by text. */
function interpolate(flux: string, bucket: string, fromMs: number, toMs: number, vars: Record<string, string[]>): string {
  return flux
    .replace(/v\.timeRangeStart/g, new Date(fromMs).toISOString())
    .replace(/v\.timeRangeStop/g, new Date(toMs).toISOString())
    .replace(/v\.windowPeriod/g, '10000ms')
    .replace(/v\.defaultBucket/g, JSON.stringify(bucket))
    .replace(/\$\{(\w+):regex\}/g, (_m, name: string) => regexFormat(vars[name]));
}

describe('deploy/kubernetes/grafana-helm: the plugins installed into a Grafana of the Helm chart', () => {
  const values = yaml('deploy/kubernetes/grafana-helm/values.yaml') as Any;
  const init = values.extraInitContainers.find((c: Any) => c.name === 'tcplat-plugins');

  test('the init container unpacks the ConfigMap of zips into the chart\'s storage volume; both plugins allowed unsigned', () => {
    const mounts = Object.fromEntries(init.volumeMounts.map((m: Any) => [m.name, m.mountPath]));
    // "storage" is the chart's own volume at /var/lib/grafana (grafana-community/helm-charts charts/grafana/templates/_pod.tpl).
    expect(mounts.storage).toBe('/var/lib/grafana');
    const zipVolume = values.extraVolumes.find((v: Any) => mounts[v.name] === '/zips');
    expect(zipVolume.configMap.name).toBe('tcplat-grafana-plugins');
    expect(values['grafana.ini'].plugins.allow_loading_unsigned_plugins.split(',').sort()).toEqual(Object.keys(PLUGINS).sort());
    expect(init.command.at(-1)).toContain(Object.keys(PLUGINS).join(' '));
    // The same Grafana as compose, and one the plugins declare they run on.
    expect(`grafana/grafana:${values.image.tag}`).toBe(services.grafana.image);
    expect(semver.satisfies(values.image.tag, DS_PLUGIN.dependencies.grafanaDependency)).toBe(true);
    expect(read('deploy/README.md')).toContain('deploy/kubernetes/grafana-helm/values.yaml');
  });

  const built = Object.keys(PLUGINS).every((id) => fs.existsSync(path.join(ROOT, 'dist', id, 'module.js')));
  const unzip = ['/usr/bin/unzip', '/bin/unzip'].some((p) => fs.existsSync(p));
  describeWith(!built ? 'the plugins are not built (npm run build:plugins)' : unzip ? null : 'no unzip (Debian package unzip; scripts/setup installs it)', 'its script, run for real on the zips of npm run package', () => {
    test('installs both plugins where Grafana reads them, replaces them on the next start, refuses an ambiguous ConfigMap', () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-helm-'));
      try {
        const zips = path.join(tmp, 'zips');
        const lib = path.join(tmp, 'var-lib-grafana');
        fs.mkdirSync(lib);
        const pkg = spawnSync(process.execPath, [path.join(ROOT, 'scripts/package.js'), '--no-build', '--out', zips], { encoding: 'utf8' });
        expect(pkg.status).toBe(0);
        // The container's script with its two mount points moved into the temp dir.
        const script = (init.command.at(-1) as string).replaceAll('/var/lib/grafana', lib).replaceAll('/zips', zips);
        const run = () => spawnSync('sh', ['-c', script], { encoding: 'utf8' });
        const check = () => {
          for (const id of Object.keys(PLUGINS)) {
            expect(JSON.parse(fs.readFileSync(path.join(lib, 'plugins', id, 'plugin.json'), 'utf8')).id).toBe(id);
            expect(fs.readFileSync(path.join(lib, 'plugins', id, 'module.js')).equals(fs.readFileSync(path.join(ROOT, 'dist', id, 'module.js')))).toBe(true);
          }
        };
        const r = run();
        expect([r.status, r.stderr]).toEqual([0, '']);
        check();
        // The next start (a new version in the ConfigMap) replaces each plugin folder whole.
        fs.writeFileSync(path.join(lib, 'plugins', DS_PLUGIN.id, 'stale.js'), 'left from an older version');
        expect(run().status).toBe(0);
        check();
        expect(fs.existsSync(path.join(lib, 'plugins', DS_PLUGIN.id, 'stale.js'))).toBe(false);
        const first = fs.readdirSync(zips).find((f) => f.startsWith(DS_PLUGIN.id) && f.endsWith('.zip'))!;
        fs.copyFileSync(path.join(zips, first), path.join(zips, `${DS_PLUGIN.id}-9.9.9.zip`));
        const twice = run();
        expect(twice.status).toBe(1);
        expect(twice.stderr).toContain(`must hold exactly one ${DS_PLUGIN.id}-<version>.zip`);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });
  });
});

describeWith(missingInflux2(), 'dashboard and alert queries on InfluxDB 2.x', () => {
  let target: InfluxV2Target;
  const NOW = Date.now();
  const FROM = NOW - 15 * 60_000;
  const HOSTS = ['node-a', 'node/b'];
  const SERVICES = ['rails', 'nest.api'];
  const DSTS = ['10.0.0.5:5432', 'redis:6379'];
  // A host outside the selection, with too few connects for the alerts' minimum.
  const LONE = { host: 'node-c', service: 'lonely', dst: 'lonely:1', result: 'ok' as ConnectResult };

  beforeAll(async () => {
    target = await freshBucket('deploy');
    const points: Point[] = [];
    let seq = 0n;
    // 10 minutes of 10 s windows: every host x service x dst, 25 ok connects and 2 refused per window.
    for (let w = NOW - 10 * 60_000; w < NOW - 10_000; w += 10_000) {
      const start = BigInt(Math.floor(w / 10_000) * 10_000) * 1_000_000n;
      for (const host of HOSTS) {
        for (const service of SERVICES) {
          for (const dst of DSTS) {
            for (const [result, n] of [['ok', 25], ['refused', 2]] as [ConnectResult, number][]) {
              const h = new Histogram();
              for (let i = 0; i < n; i++) {
                const ms = result === 'ok' ? (service === 'rails' ? 900 : 0.4) + i * 0.01 : 0.05;
                h.add(ms);
                points.push(connectPoint({ host, service, dst, result, comm: service, family: 'ipv4', latencyMs: ms, synRetrans: ms > 500 ? 1 : 0, pid: 100, sport: 40000 + i, timeNs: start + 1_000_000n + seq++ }));
              }
              points.push(histPoint({ host, service, dst, result }, h, start, result === 'ok' && service === 'rails' ? n : 0));
            }
            // Churn (issue 15): rails closes 20 connections of 50 ms and 5 of 5 s per window (80 % short-lived),
            // nest.api 3 of 5 minutes (pooled).
            const lifespans = service === 'rails' ? [...Array<number>(20).fill(50), ...Array<number>(5).fill(5000)] : Array<number>(3).fill(300_000);
            const buckets = SESSION_BUCKET_FIELDS.map(() => 0);
            for (const ms of lifespans) buckets[sessionBucketIndex(ms)]++;
            const sum = lifespans.reduce((a, b) => a + b, 0);
            points.push(sessionHistPoint({ host, service, dst }, { count: lifespans.length, sumMs: sum, minMs: Math.min(...lifespans), maxMs: Math.max(...lifespans), buckets, retrans: 0, resetsIn: 0, resetsOut: 0 }, start));
            // TLS (issue 16): 3 handshakes per window, rails' slow (1.5 s), nest.api's fast plus one failure.
            for (const result of ['ok', 'failed'] as const) {
              const lat = result === 'ok' ? Array<number>(3).fill(service === 'rails' ? 1500 : 20) : service === 'rails' ? [] : [5];
              if (lat.length === 0) continue;
              const h = new Histogram();
              lat.forEach((ms, i) => {
                h.add(ms);
                points.push({ measurement: MEASUREMENT.tls, tags: { host, service, dst, result, comm: service, family: 'ipv4' }, fields: { [TLS_FIELD.latencyMs]: ms + i * 0.01, [TLS_FIELD.pid]: int(100) }, timeNs: start + 2_000_000n + seq++ });
              });
              points.push({ ...histPoint({ host, service, dst, result: result as ConnectResult }, h, start), measurement: MEASUREMENT.tlsHist });
            }
          }
        }
      }
    }
    const lone = new Histogram();
    for (let i = 0; i < 5; i++) lone.add(2000);
    points.push(histPoint(LONE, lone, BigInt(Math.floor((NOW - 60_000) / 10_000) * 10_000) * 1_000_000n));
    await writeLines(target, encodePoints(points));
  });

  test('every query runs, with all values and with one of each variable, and the main panels return rows', async () => {
    const all = { host: HOSTS, service: SERVICES, dst: DSTS };
    const one = { host: [HOSTS[1]], service: [SERVICES[1]], dst: [DSTS[0]] };
    for (const vars of [all, one]) {
      for (const q of fluxQueries()) {
        const flux = interpolate(q.flux, target.bucket, FROM, NOW, vars);
        let rows: Record<string, string>[];
        try {
          rows = fluxRows(await queryFlux(target, flux));
        } catch (e) {
          throw new Error(`${q.where}: ${(e as Error).message}\n${flux}`);
        }
        // Services and destinations of the selected hosts only: never the lone one of node-c.
        if (q.kind === 'var:host') expect(rows.map((r) => r._value).sort()).toEqual([...HOSTS, LONE.host].sort());
        if (q.kind === 'var:service') expect(rows.map((r) => r._value).sort()).toEqual([...SERVICES].sort());
        if (q.kind === 'var:dst') expect(rows.map((r) => r._value).sort()).toEqual([...DSTS].sort());
        if (q.kind.startsWith('panel:')) expect([q.where, rows.length > 0]).toEqual([q.where, true]);
      }
    }
  });

  test('the numbers are right: p99 per service, connects/s, failures/s, the slowest destination first', async () => {
    const all = { host: HOSTS, service: SERVICES, dst: DSTS };
    const run = async (where: string) => fluxRows(await queryFlux(target, interpolate(fluxQueries().find((q) => q.where.startsWith(where))!.flux, target.bucket, FROM, NOW, all)));
    const p99 = await run('panel 2 "Connect latency p50 / p95 / p99 by service" C');
    const rails = p99.filter((r) => r.service === 'rails').map((r) => Number(r._value));
    expect(Math.min(...rails)).toBeGreaterThan(900);
    expect(Math.max(...p99.filter((r) => r.service === 'nest.api').map((r) => Number(r._value)))).toBeLessThan(1);
    // 2 hosts x 2 dsts x 27 attempts per 10 s window = 10.8 connects/s per service.
    const rate = await run('panel 4');
    const full = rate.filter((r) => r.service === 'rails').map((r) => Number(r._value));
    expect(Math.max(...full)).toBeCloseTo(10.8, 5);
    const failures = await run('panel 5');
    expect(new Set(failures.map((r) => r.result))).toEqual(new Set(['refused']));
    const slowest = await run('panel 7');
    expect(slowest[0].service).toBe('rails');
    expect(Number(slowest[0].connects)).toBeGreaterThan(0);
  });

  test('the alert queries give one value per service: p99 over 500 ms for the slow one, failure rate 2/27', async () => {
    for (const r of rules.filter((x) => x.uid.startsWith('tcplat-connect-'))) {
      const q = r.data.find((d: Any) => d.refId === 'A');
      const from = NOW - q.relativeTimeRange.from * 1000;
      const rows = fluxRows(await queryFlux(target, interpolate(q.model.query, target.bucket, from, NOW, {})));
      expect(rows.map((x) => x.service).sort()).toEqual([...SERVICES].sort());
      const by = Object.fromEntries(rows.map((x) => [x.service, Number(x._value)]));
      if (r.uid === 'tcplat-connect-p99') {
        expect(by.rails).toBeGreaterThan(500);
        expect(by['nest.api']).toBeLessThan(500);
      } else {
        expect(by.rails).toBeCloseTo((100 * 2) / 27, 6);
      }
    }
  });

  test('the churn and TLS alert queries: short-lived share 80 % for rails, TLS p99 1.5 s for rails, TLS failures 1/4 for nest.api', async () => {
    const one = async (uid: string) => {
      const q = rules.find((x) => x.uid === uid).data.find((d: Any) => d.refId === 'A');
      const rows = fluxRows(await queryFlux(target, interpolate(q.model.query, target.bucket, NOW - q.relativeTimeRange.from * 1000, NOW, {})));
      return Object.fromEntries(rows.map((x) => [x.service, Number(x._value)]));
    };
    const threshold = (uid: string) => rules.find((x) => x.uid === uid).data.find((d: Any) => d.refId === 'C').model.conditions[0].evaluator.params[0];
    // The lone service has neither 20 closed connections nor 1 connect/s: no value, so no alert.
    const churn = await one('tcplat-churn-short-lived');
    expect(Object.keys(churn).sort()).toEqual([...SERVICES].sort());
    expect(churn.rails).toBeCloseTo(80, 6);
    expect(churn['nest.api']).toBe(0);
    expect(churn.rails > threshold('tcplat-churn-short-lived') && churn['nest.api'] < threshold('tcplat-churn-short-lived')).toBe(true);
    const p99 = await one('tcplat-tls-p99');
    expect(p99.rails).toBeGreaterThan(1500);
    expect(p99.rails).toBeLessThan(1501);
    expect(p99['nest.api']).toBeLessThan(threshold('tcplat-tls-p99'));
    expect(threshold('tcplat-tls-p99')).toBe(1000);
    const failures = await one('tcplat-tls-failure-rate');
    expect(failures['nest.api']).toBeCloseTo(25, 6);
    expect(failures.rails).toBe(0);
    expect(threshold('tcplat-tls-failure-rate')).toBe(5);
  });
});
