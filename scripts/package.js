#!/usr/bin/env node
// @ts-check
'use strict';
/**
 * `npm run package`: one zip per Grafana plugin, in the layout Grafana's plugin catalog and
 * `grafana cli --pluginUrl <zip> plugins install <id>` take: a single top-level folder named after the
 * plugin id holding module.js (+ its source map), plugin.json, README.md, CHANGELOG.md, LICENSE and img/.
 * (Grafana's installer, pkg/plugins/storage/fs.go, renames the archive's first folder to the plugin id and
 * reads plugin.json right below it.)
 *
 *   scripts/package.js [--out DIR] [--no-build]
 *
 * Builds the plugins first (npm run build:plugins) unless --no-build; writes DIR/<id>-<version>.zip
 * (default DIR: dist/packages) and prints each zip with its size and SHA-256 (the catalog asks for it).
 */
const { spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');

const ROOT = path.resolve(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
/** What every plugin folder must hold; LICENSE comes from the repository root. */
const REQUIRED = ['module.js', 'plugin.json', 'README.md', 'CHANGELOG.md'];

const HELP = `usage: scripts/package.js [--out DIR] [--no-build]

Zips each built Grafana plugin (dist/<plugin id>/) as <id>/... with LICENSE, ready for Grafana's plugin
catalog and for: grafana cli --pluginUrl <zip> plugins install <id>

  --out DIR    where the zips go (default: dist/packages)
  --no-build   zip what dist/ holds instead of running npm run build:plugins first
`;

function die(msg) {
  process.stderr.write(`package: error: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { out: path.join(DIST, 'packages'), build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else if (a === '--no-build') opts.build = false;
    else if (a === '--out' || a.startsWith('--out=')) {
      const v = a === '--out' ? argv[++i] : a.slice('--out='.length);
      if (!v) die('--out needs a directory');
      opts.out = path.resolve(v);
    } else die(`unknown argument ${JSON.stringify(a)} (see --help)`);
  }
  return opts;
}

/** Every file under dir, as paths relative to it with forward slashes, sorted. */
function walk(dir, rel = '') {
  const out = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...walk(dir, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

/** MS-DOS date and time of a Date (zip headers). */
function dosTime(d) {
  const time = (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | Math.floor(d.getUTCSeconds() / 2);
  const date = ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
  return { time, date };
}

/**
 * A zip archive (PKZIP APPNOTE 6.3: local headers, deflated data, central directory, end record) of
 * entries { name, data }, files mode 0644, all stamped with one time so a rebuild of the same files gives
 * the same bytes.
 * @param {{ name: string, data: Buffer }[]} entries
 * @param {Date} when
 */
function zip(entries, when) {
  const { time, date } = dosTime(when);
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const { name, data } of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    const packed = zlib.deflateRawSync(data, { level: 9 });
    const crc = zlib.crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: deflate
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(time, 10);
    local.writeUInt16LE(date, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by: Unix, 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(time, 12);
    central.writeUInt16LE(date, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(packed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBuf.length, 28);
    central.writeUInt32LE(((0o100644 << 16) >>> 0), 38); // regular file, rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBuf, packed);
    centrals.push(central, nameBuf);
    offset += local.length + nameBuf.length + packed.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** The zip of one built plugin folder, or an error naming what is missing. */
function packagePlugin(dir, license) {
  const missing = REQUIRED.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) throw new Error(`${path.relative(ROOT, dir)} has no ${missing.join(', ')}: build the plugins (npm run build:plugins)`);
  const pluginJson = JSON.parse(fs.readFileSync(path.join(dir, 'plugin.json'), 'utf8'));
  const { id } = pluginJson;
  const version = pluginJson.info && pluginJson.info.version;
  if (path.basename(dir) !== id) throw new Error(`${path.relative(ROOT, dir)}: plugin.json says id ${JSON.stringify(id)}; the folder must be named after it`);
  if (!/^\d+\.\d+\.\d+/.test(version || '')) throw new Error(`${id}: plugin.json info.version is ${JSON.stringify(version)}, not a version (was it built?)`);
  const files = walk(dir).filter((f) => f !== 'LICENSE');
  const entries = files.map((f) => ({ name: `${id}/${f}`, data: fs.readFileSync(path.join(dir, f)) }));
  entries.push({ name: `${id}/LICENSE`, data: license });
  entries.sort((a, b) => (a.name < b.name ? -1 : 1));
  const updated = /^\d{4}-\d{2}-\d{2}$/.test(pluginJson.info.updated || '') ? new Date(`${pluginJson.info.updated}T00:00:00Z`) : new Date();
  return { id, version, data: zip(entries, updated) };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.build) {
    const r = spawnSync('npm', ['run', '--silent', 'build:plugins'], { cwd: ROOT, stdio: 'inherit' });
    if (r.status !== 0) die('npm run build:plugins failed');
  }
  const licensePath = path.join(ROOT, 'LICENSE');
  if (!fs.existsSync(licensePath)) die('no LICENSE at the repository root');
  const license = fs.readFileSync(licensePath);
  const dirs = fs.existsSync(DIST)
    ? fs
        .readdirSync(DIST, { withFileTypes: true })
        .filter((d) => d.isDirectory() && fs.existsSync(path.join(DIST, d.name, 'plugin.json')))
        .map((d) => path.join(DIST, d.name))
    : [];
  if (dirs.length === 0) die('no built plugins in dist/: run npm run build:plugins (or drop --no-build)');
  fs.mkdirSync(opts.out, { recursive: true });
  for (const dir of dirs) {
    let pkg;
    try {
      pkg = packagePlugin(dir, license);
    } catch (e) {
      die(/** @type {Error} */ (e).message);
    }
    const file = path.join(opts.out, `${pkg.id}-${pkg.version}.zip`);
    fs.writeFileSync(file, pkg.data);
    const sha = crypto.createHash('sha256').update(pkg.data).digest('hex');
    fs.writeFileSync(`${file}.sha256`, `${sha}  ${path.basename(file)}\n`);
    process.stdout.write(`package: ${path.relative(process.cwd(), file)} ${(pkg.data.length / 1024).toFixed(1)} kB sha256 ${sha}\n`);
  }
}

if (require.main === module) main();
module.exports = { zip, packagePlugin };
