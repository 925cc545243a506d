/**
 * The built plugins and `npm run package` (scripts/package.js), as Grafana takes them:
 * - module.js leaves React's automatic-JSX runtime to Grafana (no React 18 internals in the bundle), or it
 *   cannot load on Grafana 13 (React 19);
 * - each zip unpacks, with Python's zipfile (an implementation independent of our writer), into one folder
 *   named after the plugin id with module.js, plugin.json, README.md, CHANGELOG.md, LICENSE and img/;
 * - installed the way Grafana installs a zip (pkg/plugins/storage/fs.go: the first folder of every member is
 *   renamed to the plugin id, plugin.json is read right below it) it gives the plugin folder that was built.
 * Needs the built plugins (npm test builds them; alone: npm run build:plugins).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describeWith } from './support/prereq';

const ROOT = path.resolve(__dirname, '..');
const PYTHON = '/usr/bin/python3';
const PLUGINS = [
  { id: 'tcplat-connect-datasource', src: 'src/datasource' },
  { id: 'tcplat-heatmap-panel', src: 'src/panel' },
];
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function missing(): string | null {
  for (const p of PLUGINS) if (!fs.existsSync(path.join(ROOT, 'dist', p.id, 'module.js'))) return `dist/${p.id}/module.js is not built (run npm run build:plugins)`;
  return fs.existsSync(PYTHON) ? null : `no ${PYTHON}`;
}

/** Members of a zip and their bytes (base64), read by Python's zipfile, which also checks every CRC. */
function unzipWithPython(file: string): Map<string, Buffer> {
  const script = [
    'import base64, json, sys, zipfile',
    'z = zipfile.ZipFile(sys.argv[1])',
    'bad = z.testzip()',
    'assert bad is None, "bad CRC in " + str(bad)',
    'print(json.dumps([[i.filename, i.external_attr >> 16, base64.b64encode(z.read(i)).decode()] for i in z.infolist()]))',
  ].join('\n');
  const r = spawnSync(PYTHON, ['-c', script, file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python zipfile could not read ${file}: ${r.stderr}`);
  const out = new Map<string, Buffer>();
  for (const [name, mode, b64] of JSON.parse(r.stdout) as [string, number, string][]) {
    expect([name, mode & 0o777]).toEqual([name, 0o644]);
    out.set(name, Buffer.from(b64, 'base64'));
  }
  return out;
}

/** Every file under dir, relative, with forward slashes. */
function filesUnder(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => {
    const r = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory() ? filesUnder(dir, r) : [r];
  });
}

describeWith(missing(), 'the built plugins', () => {
  test.each(PLUGINS)('$id: module.js takes react/jsx-runtime from Grafana and carries no React internals', ({ id }) => {
    const js = fs.readFileSync(path.join(ROOT, 'dist', id, 'module.js'), 'utf8');
    // React 18's bundled jsx-runtime reads these at load; React 19 (Grafana 13) has neither.
    expect(js).not.toContain('__SECRET_INTERNALS_DO_NOT_USE_OR_YOU_WILL_BE_FIRED');
    expect(js).not.toContain('ReactCurrentOwner');
    const deps = JSON.parse(/^define\((\[[^\]]*\])/.exec(js)![1]) as string[];
    expect(deps).toContain('react/jsx-runtime');
    expect(deps).toContain('react');
    expect(deps.filter((d) => !/^(react|react-dom|react\/jsx-runtime|react\/jsx-dev-runtime|rxjs|module|@emotion\/css|@grafana\/(data|ui|runtime))$/.test(d))).toEqual([]);
  });
});

describeWith(missing(), 'npm run package: one zip per plugin, installable by Grafana', () => {
  let out: string;
  let stdout: string;

  beforeAll(() => {
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-package-'));
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/package.js'), '--no-build', '--out', out], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    stdout = r.stdout;
  }, 60_000);

  afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

  test('writes <id>-<version>.zip and its SHA-256 for each plugin, and says so', () => {
    expect(fs.readdirSync(out).sort()).toEqual(PLUGINS.flatMap((p) => [`${p.id}-${VERSION}.zip`, `${p.id}-${VERSION}.zip.sha256`]).sort());
    for (const p of PLUGINS) {
      const zip = fs.readFileSync(path.join(out, `${p.id}-${VERSION}.zip`));
      const sha = (require('node:crypto') as typeof import('node:crypto')).createHash('sha256').update(zip).digest('hex');
      expect(stdout).toContain(`${p.id}-${VERSION}.zip`);
      expect(stdout).toContain(sha);
      expect(fs.readFileSync(path.join(out, `${p.id}-${VERSION}.zip.sha256`), 'utf8')).toBe(`${sha}  ${p.id}-${VERSION}.zip\n`);
    }
  });

  test.each(PLUGINS)('$id: one top-level folder named after the id, with everything the catalog asks for', ({ id, src }) => {
    const members = unzipWithPython(path.join(out, `${id}-${VERSION}.zip`));
    const names = [...members.keys()];
    for (const n of names) {
      expect(n.startsWith(`${id}/`)).toBe(true);
      expect(n).not.toMatch(/(^|\/)\.\.(\/|$)|^\//);
    }
    for (const f of ['module.js', 'module.js.map', 'plugin.json', 'README.md', 'CHANGELOG.md', 'LICENSE']) expect(names).toContain(`${id}/${f}`);
    const pluginJson = JSON.parse(members.get(`${id}/plugin.json`)!.toString('utf8'));
    expect(pluginJson.id).toBe(id);
    expect(pluginJson.info.version).toBe(VERSION);
    expect(pluginJson.info.updated).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    for (const logo of Object.values(pluginJson.info.logos) as string[]) expect(names).toContain(`${id}/${logo}`);
    expect(names.some((n) => n.startsWith(`${id}/img/`))).toBe(true);
    expect(members.get(`${id}/LICENSE`)!.equals(fs.readFileSync(path.join(ROOT, 'LICENSE')))).toBe(true);
    expect(members.get(`${id}/LICENSE`)!.toString('utf8')).toContain('Apache License');
    expect(members.get(`${id}/CHANGELOG.md`)!.toString('utf8')).toBe(fs.readFileSync(path.join(ROOT, src, 'CHANGELOG.md'), 'utf8'));
    expect(members.get(`${id}/CHANGELOG.md`)!.toString('utf8')).toContain(`## ${VERSION}`);
    expect(members.get(`${id}/module.js`)!.toString('utf8')).not.toContain('__SECRET_INTERNALS_DO_NOT_USE_OR_YOU_WILL_BE_FIRED');
  });

  test.each(PLUGINS)('$id: installed as Grafana installs a zip, it is the built plugin folder', ({ id }) => {
    const pluginsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-grafana-plugins-'));
    try {
      // grafana/grafana pkg/plugins/storage/fs.go extractFiles: each member's first folder (^[a-zA-Z0-9_.-]*/)
      // becomes the plugin id; then readPluginJSON reads <pluginsDir>/<id>/plugin.json.
      for (const [name, data] of unzipWithPython(path.join(out, `${id}-${VERSION}.zip`))) {
        const dst = path.join(pluginsDir, name.replace(/^[a-zA-Z0-9_.-]*\//, `${id}/`));
        fs.mkdirSync(path.dirname(dst), { recursive: true });
        fs.writeFileSync(dst, data);
      }
      const installed = path.join(pluginsDir, id);
      expect(JSON.parse(fs.readFileSync(path.join(installed, 'plugin.json'), 'utf8')).id).toBe(id);
      const dist = path.join(ROOT, 'dist', id);
      expect(filesUnder(installed).sort()).toEqual([...filesUnder(dist), 'LICENSE'].sort());
      for (const f of filesUnder(dist)) expect([f, fs.readFileSync(path.join(installed, f)).equals(fs.readFileSync(path.join(dist, f)))]).toEqual([f, true]);
    } finally {
      fs.rmSync(pluginsDir, { recursive: true, force: true });
    }
  });

  test('--help explains; an unknown flag is refused with a message', () => {
    const help = spawnSync(process.execPath, [path.join(ROOT, 'scripts/package.js'), '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/grafana cli --pluginUrl/);
    const bad = spawnSync(process.execPath, [path.join(ROOT, 'scripts/package.js'), '--zap'], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe('package: error: unknown argument "--zap" (see --help)\n');
  });
});
