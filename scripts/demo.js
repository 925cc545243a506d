// @ts-check
'use strict';
/**
 * `tcplat demo churn`: the seed's "a misconfigured pool created new connections too often", shown with
 * tcplat's own tools on this machine (issue 15).
 *
 *   a local TCP server (one line in, --request-time later one line out) on a free loopback port
 *   <- reuse-pool: --pool-size keep-alive connections, each replaced after --max-life (its own process)
 *   <- churn-pool: a new connection per request (its own process), the same --rate
 *   -> tcplat agent with the eBPF probe and close events, filtered in the kernel to the server's port
 *   -> InfluxDB (--influx-url, else the one `tcplat up` runs on 127.0.0.1:8086, else one it starts)
 *   -> `tcplat top --once` printed, and the two lifespan charts from `tcplat renderer` written as PNGs.
 *
 * Everything it starts is stopped at the end (or on Ctrl-C); the PNGs stay.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const { root, core, waitHttp } = require('./node-support');
const POOLS = /** @type {const} */ (['reuse-pool', 'churn-pool']);


const OPTIONS = [
  { name: 'duration', type: 'duration', default: '40s', help: 'how long both pools send requests' },
  { name: 'rate', type: 'int', min: 1, max: 2000, default: 50, help: 'requests per second of each pool' },
  { name: 'request-time', type: 'duration', default: '20ms', help: 'how long the server takes to answer a request' },
  { name: 'pool-size', type: 'int', min: 1, max: 100, default: 4, help: 'most connections of the reusing pool (opened as concurrent requests need them)' },
  { name: 'max-life', type: 'duration', default: '15s', help: "the reusing pool replaces a connection after this long (±20 %, like HikariCP's maxLifetime)" },
  { name: 'out', type: 'string', arg: 'DIR', default: '.', help: 'where the two lifespan PNGs are written' },
  { name: 'theme', type: 'enum', values: ['dark', 'light'], default: 'dark', help: 'theme of the PNGs' },
];

const say = (/** @type {string} */ msg) => process.stdout.write(`tcplat demo churn: ${msg}\n`);
const warn = (/** @type {string} */ msg) => process.stderr.write(`tcplat demo churn: ${msg}\n`);
const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = /** @type {net.AddressInfo} */ (s.address());
      s.close(() => resolve(a.port));
    });
  });
}


/** The local InfluxDB of `tcplat up`, if one answers on its default address. */
async function upInflux() {
  try {
    const r = await fetch('http://127.0.0.1:8086/ping', { signal: AbortSignal.timeout(1000) });
    return r.status === 204 ? 'http://127.0.0.1:8086' : null;
  } catch {
    return null;
  }
}

class Child {
  /** @param {string} name @param {string[]} argv @param {string} logFile @param {NodeJS.ProcessEnv} env */
  constructor(name, argv, logFile, env) {
    this.name = name;
    this.logFile = logFile;
    const out = fs.openSync(logFile, 'a');
    this.proc = spawn(argv[0], argv.slice(1), { cwd: root, env, detached: true, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    /** @type {string | null} */
    this.exited = null;
    this.proc.on('exit', (code, signal) => (this.exited = signal ? `killed by ${signal}` : `exited with code ${code}`));
  }

  tail(lines = 15) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** SIGTERM the child's process group, SIGKILL after 10 s. */
  async stop() {
    if (this.exited || !this.proc.pid) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    try {
      process.kill(-this.proc.pid, 'SIGTERM');
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        process.kill(-(this.proc.pid ?? 0), 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 10_000);
    await gone;
    clearTimeout(t);
  }
}

/** Run a command to its end without blocking this process; its stdout, stderr and exit status. */
function runCapture(/** @type {string} */ cmd, /** @type {string[]} */ args, /** @type {NodeJS.ProcessEnv} */ env) {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (status) => resolve({ stdout, stderr, status }));
  }).then((r) => /** @type {{ stdout: string, stderr: string, status: number | null }} */ (r));
}

/** The demo's server: answers each line with a line, --request-time later. */
function startServer(/** @type {number} */ requestMs) {
  const sockets = new Set();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        buf = buf.slice(i + 1);
        setTimeout(() => s.writable && s.write('ok\n'), requestMs);
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = /** @type {net.AddressInfo} */ (server.address()).port;
      resolve({
        port,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r(undefined));
          }),
      });
    });
  });
}

/** A client pool process; resolves with its pid once it is ready, and its report when it ends. */
function startPool(/** @type {string} */ mode, /** @type {number[]} */ args) {
  const proc = spawn(process.execPath, [path.join(__dirname, 'demo-churn-client.js'), mode, ...args.map(String)], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  /** @type {Promise<void>} */
  const ready = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d.toString();
      if (out.startsWith('ready\n')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`the ${mode} pool exited with code ${code} before it started`)));
  });
  /** @type {Promise<{ mode: string, requests: number, answered: number, failed: number, connections: number, seconds: number }>} */
  const report = new Promise((resolve, reject) => {
    proc.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line));
      else reject(new Error(`the ${mode} pool exited with code ${code}`));
    });
  });
  report.catch(() => {});
  return { proc, ready, report, go: () => proc.stdin.end('go\n') };
}

/** @param {string[]} argv */
async function churn(argv) {
  const c = core();
  const specs = [...c.INFLUX_OPTIONS, ...OPTIONS];
  let loaded;
  try {
    loaded = c.loadConfig(specs, argv);
  } catch (e) {
    warn(/** @type {Error} */ (e).message);
    return 2;
  }
  if (loaded.help) {
    process.stdout.write(
      c.formatHelp(
        'demo churn',
        'Shows connection churn with tcplat on this machine: a local TCP server, one client pool that reuses its\n' +
          'connections (reuse-pool) and one that opens a new connection per request (churn-pool), at the same request\n' +
          'rate. The agent records both with the eBPF probe and its close events (what --probe-close turns on),\n' +
          'filtered in the kernel to the server port so nothing else of this host is recorded, into InfluxDB:\n' +
          '--influx-url if given, else the one `tcplat up` runs on 127.0.0.1:8086, else one the demo starts and stops.\n' +
          'Then it prints `tcplat top --once` (taken in the middle of the run) and writes the two lifespan charts\n' +
          '(/render/lifespan.png of tcplat renderer) to --out. Everything it starts is stopped at the end.',
        specs,
        'Needs root (the probe loads eBPF programs). Example: sudo bin/tcplat demo churn --duration 2m --out docs',
      ),
    );
    return 0;
  }
  const v = loaded.values;
  if (process.getuid?.() !== 0) {
    warn('needs root to load the eBPF probe: run sudo bin/tcplat demo churn');
    return 1;
  }
  const probe = path.join(root, 'bpf/tcplat-probe');
  if (!fs.existsSync(probe)) {
    warn(`${probe} is not built: run make -C bpf (or sudo scripts/setup)`);
    return 1;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-demo-churn-'));
  const outDir = path.resolve(v.out);
  fs.mkdirSync(outDir, { recursive: true });
  /** @type {Child[]} */
  const children = [];
  /** @type {{ close: () => Promise<unknown> } | null} */
  let server = null;
  /** @type {ReturnType<typeof startPool>[]} */
  let pools = [];
  let influxDir = null;
  let stopping = false;
  const cleanup = async () => {
    if (stopping) return;
    stopping = true;
    for (const p of pools) if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
    // The agent first: its last flush reaches InfluxDB.
    for (const ch of [...children].sort((a, b) => (a.name === 'agent' ? -1 : b.name === 'agent' ? 1 : 0))) await ch.stop();
    if (server) await server.close();
    if (influxDir) spawnSync(path.join(root, 'scripts/influxdb1'), ['stop', influxDir], { stdio: 'ignore' });
    fs.rmSync(work, { recursive: true, force: true });
  };
  const onSignal = () => {
    warn('interrupted: stopping what the demo started');
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    // InfluxDB: given, tcplat up's, or our own.
    let target;
    const given = loaded.sources['influx-url'] !== 'default';
    const up = given ? null : await upInflux();
    if (given) target = c.influxTargetFromConfig(v);
    else if (up) {
      target = c.influxTargetFromConfig({ ...v, 'influx-url': up, 'influx-db': v['influx-db'] ?? 'tcplat' });
      say(`using the InfluxDB of tcplat up at ${up}`);
    } else {
      influxDir = path.join(work, 'influxdb');
      say('starting a private InfluxDB 1.x (stopped at the end; give --influx-url to keep the data)');
      const r = spawnSync(path.join(root, 'scripts/influxdb1'), ['start', influxDir], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`InfluxDB did not start: ${(r.stderr || '').trim()}`);
      target = c.influxTargetFromConfig({ ...v, 'influx-url': r.stdout.trim(), 'influx-db': v['influx-db'] ?? 'tcplat' });
    }
    if (target.version === 1) await c.queryInfluxQL({ ...target, db: '' }, `CREATE DATABASE ${c.quote('influxql-ident', target.db)}`, { method: 'POST' });
    say(`InfluxDB: ${c.describeTarget(target)}`);

    const srv = /** @type {{ port: number, close: () => Promise<unknown> }} */ (await startServer(v['request-time']));
    server = srv;
    say(`server on 127.0.0.1:${srv.port} answers each request after ${v['request-time']} ms`);
    const durationMs = v.duration;
    pools = POOLS.map((name) => startPool(name === 'reuse-pool' ? 'reuse' : 'churn', [srv.port, v.rate, durationMs, v['pool-size'], v['max-life']]));
    await Promise.all(pools.map((p) => p.ready));

    // The agent: a service per pool (by pid), the server named demo-api; the probe only sees its port.
    const config = {
      services: POOLS.map((name, i) => ({ name, pid: pools[i].proc.pid })),
      destinations: [`127.0.0.1:${srv.port} -> demo-api`],
    };
    const configFile = path.join(work, 'agent.yaml');
    fs.writeFileSync(configFile, JSON.stringify(config));
    const env = { ...process.env };
    for (const k of Object.keys(env)) if (k.startsWith('TCPLAT_')) delete env[k];
    env.TCPLAT_INFLUX_URL = target.url;
    if (target.version === 1) {
      env.TCPLAT_INFLUX_DB = target.db;
      if (target.rp) env.TCPLAT_INFLUX_RP = target.rp;
      if (target.user) env.TCPLAT_INFLUX_USER = target.user;
      if (target.password) env.TCPLAT_INFLUX_PASSWORD = target.password;
    } else {
      env.TCPLAT_INFLUX_ORG = target.org;
      env.TCPLAT_INFLUX_BUCKET = target.bucket;
      env.TCPLAT_INFLUX_TOKEN = target.token;
    }
    const agentPort = await freePort();
    const rendererPort = await freePort();
    const agentUrl = `http://127.0.0.1:${agentPort}`;
    const rendererUrl = `http://127.0.0.1:${rendererPort}`;
    const tcplat = [process.execPath, path.join(root, 'bin/tcplat')];
    const agent = new Child(
      'agent',
      [...tcplat, 'agent', '--source', 'probe', '--source-cmd', `exec ${probe} --exclude-pid $PPID --dport ${srv.port} --tls off`, '--config', configFile, '--spool-dir', path.join(work, 'spool'), '--listen', `127.0.0.1:${agentPort}`],
      path.join(work, 'agent.log'),
      env,
    );
    children.push(agent);
    const renderer = new Child('renderer', [...tcplat, 'renderer', '--listen', `127.0.0.1:${rendererPort}`, '--workers', '1'], path.join(work, 'renderer.log'), env);
    children.push(renderer);
    const dead = () => {
      for (const ch of children) if (ch.exited) return `${ch.name} ${ch.exited} during start-up; its log:\n${ch.tail()}`;
      return null;
    };
    await waitHttp(`${agentUrl}/readyz`, 30_000, dead);
    // The probe attaches after the agent answers: wait for it, or the first connects are not seen.
    const attachEnd = Date.now() + 30_000;
    for (;;) {
      const why = dead();
      if (why) throw new Error(why);
      const st = await (await fetch(`${agentUrl}/api/status`)).json().catch(() => null);
      if (st?.source?.stderr_tail?.some((/** @type {string} */ l) => l.includes('tcplat-probe: attached'))) break;
      if (Date.now() > attachEnd) throw new Error(`the probe did not attach within 30 s; agent log:\n${agent.tail()}`);
      await sleep(200);
    }
    await waitHttp(`${rendererUrl}/healthz`, 30_000, dead);
    say(`agent ${agentUrl} (probe attached, close events on), renderer ${rendererUrl}`);

    const startMs = Date.now();
    for (const p of pools) p.go();
    say(`both pools send ${v.rate} requests/s for ${durationMs / 1000} s: reuse-pool over at most ${v['pool-size']} connections (replaced after ~${v['max-life'] / 1000} s), churn-pool over a new connection each`);

    // tcplat top, over 10 s in the middle of the run (its window), as a user would look at it.
    const topAt = Math.max(0, durationMs / 2 - 5000);
    await sleep(topAt);
    // Not spawnSync: the server runs in this process and must keep answering meanwhile.
    const top = await runCapture(tcplat[0], [tcplat[1], 'top', '--once', '--agent', agentUrl, '--window', '10s', '--interval', `${Math.min(10_000, Math.max(3000, durationMs - topAt - 1000))}ms`], env);
    say(`tcplat top --once --agent ${agentUrl} --window 10s:`);
    process.stdout.write(top.stdout.replace(/\n+$/, '') + '\n');
    if (top.status !== 0) warn(`tcplat top exited with ${top.status}: ${top.stderr.trim()}`);

    const reports = await Promise.all(pools.map((p) => p.report));
    const endMs = Date.now();
    for (const [i, r] of reports.entries()) {
      say(`${POOLS[i]}: ${r.requests} requests (${r.answered} answered, ${r.failed} failed) over ${r.connections} connections in ${r.seconds.toFixed(1)} s`);
    }
    // The agent's last flush: stop it (SIGTERM flushes every open window), then draw.
    await agent.stop();
    say('agent stopped (last windows flushed)');
    const from = Math.floor(startMs / 10_000) * 10_000 - 10_000;
    const to = Math.ceil(endMs / 10_000) * 10_000 + 10_000;
    const files = [];
    for (const name of POOLS) {
      const qs = new URLSearchParams({ service: name, from: String(from), to: String(to), width: '900', height: '480', theme: v.theme });
      const r = await fetch(`${rendererUrl}/render/lifespan.png?${qs}`);
      if (!r.ok) throw new Error(`the renderer answered HTTP ${r.status} for ${name}: ${await r.text()}`);
      const file = path.join(outDir, `churn-demo-${name}.png`);
      fs.writeFileSync(file, Buffer.from(await r.arrayBuffer()));
      files.push(file);
      say(`lifespan chart of ${name}: ${file}${r.headers.get('x-tcplat-no-data') ? ' (no data: the agent recorded no closed connection)' : ''}`);
    }
    if (!influxDir) say(`the data stays in ${c.describeTarget(target)}: tcplat renderer draws it again, e.g. /render/lifespan.png?service=churn-pool&from=${from}&to=${to}`);
    // One JSON line for scripts and the test: what the pools did and where the data went.
    process.stdout.write(JSON.stringify({ demo: 'churn', influx: c.describeTarget(target), from_ms: from, to_ms: to, start_ms: startMs, end_ms: endMs, pools: Object.fromEntries(reports.map((r, i) => [POOLS[i], r])), png: files }) + '\n');
    await cleanup();
    say('done: everything the demo started is stopped');
    return 0;
  } catch (e) {
    warn(/** @type {Error} */ (e).message);
    await cleanup();
    return 1;
  }
}

/** @param {string[]} argv */
async function main(argv) {
  const [what, ...rest] = argv;
  if (what === 'churn') return churn(rest);
  const out = what === '--help' || what === '-h' ? process.stdout : process.stderr;
  out.write('usage: tcplat demo churn [flags]   (tcplat demo churn --help)\n\n  churn   a pool that reuses connections next to one that opens one per request: top and lifespan charts\n');
  return what === '--help' || what === '-h' ? 0 : 2;
}

module.exports = { main };
