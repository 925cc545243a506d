// @ts-check
'use strict';
/**
 * `tcplat up` (= `sudo npm start`): the whole local pipeline on one machine.
 *
 *   InfluxDB 1.x (Debian's influxd, data under --data-dir) unless --influx-url names one
 *   -> tcplat agent with the eBPF probe on 127.0.0.1:7070
 *   -> tcplat renderer on 127.0.0.1:7071
 *
 * Children run in their own process groups so Ctrl-C reaches only this supervisor, which stops them in
 * order (agent first, so its last flush reaches InfluxDB; then renderer; then InfluxDB) and leaves
 * nothing behind. Each child's output goes to <data-dir>/log/<name>.log.
 */
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const { root, core, waitHttp } = require('./node-support');


const OPTIONS = [
  { name: 'influx-port', type: 'int', min: 1, max: 65535, default: 8086, help: 'port of the local InfluxDB 1.x that up starts when --influx-url is not given' },
  { name: 'agent-listen', type: 'hostport', default: '127.0.0.1:7070', help: 'agent HTTP API address' },
  { name: 'renderer-listen', type: 'hostport', default: '127.0.0.1:7071', help: 'renderer address' },
  { name: 'data-dir', type: 'string', arg: 'DIR', default: 'var', help: 'InfluxDB data, agent spool and logs (relative to the checkout)' },
  { name: 'host', type: 'string', arg: 'NAME', help: 'host tag of the events (default: this machine\'s hostname)' },
  { name: 'setup', type: 'bool', default: true, help: 'run scripts/setup first (installs what is missing; quick when all is there); --setup=false skips it' },
  { name: 'stop-timeout', type: 'duration', default: '8s', help: 'how long each child may take to stop before it is killed' },
];

const say = (/** @type {string} */ msg) => process.stdout.write(`tcplat up: ${msg}\n`);
const warn = (/** @type {string} */ msg) => process.stderr.write(`tcplat up: ${msg}\n`);

/** @param {string} host @param {number} port */
function portFree(host, port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}


/** Why the probe cannot run here, or null. */
function probeBlocker() {
  if (process.getuid?.() !== 0) return 'needs root to load the eBPF probe: run sudo npm start (or sudo bin/tcplat up)';
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) return 'this kernel has no BTF (/sys/kernel/btf/vmlinux): the CO-RE probe needs a kernel built with CONFIG_DEBUG_INFO_BTF=y';
  return null;
}

class Child {
  /**
   * @param {string} name @param {string} cmd @param {string[]} args @param {string} logFile
   * @param {NodeJS.ProcessEnv} env
   */
  constructor(name, cmd, args, logFile, env) {
    this.name = name;
    this.logFile = logFile;
    const out = fs.openSync(logFile, 'a');
    this.proc = spawn(cmd, args, { cwd: root, env, detached: true, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    /** @type {string | null} */
    this.exited = null;
    this.proc.on('exit', (code, signal) => {
      this.exited = signal ? `killed by ${signal}` : `exited with code ${code}`;
    });
  }

  get pid() {
    return this.proc.pid ?? 0;
  }

  tail(lines = 15) {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** SIGTERM the whole group, then SIGKILL after the timeout. */
  async stop(/** @type {number} */ timeoutMs) {
    if (this.exited) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    try {
      process.kill(-this.pid, 'SIGTERM');
    } catch {
      return;
    }
    const t = setTimeout(() => {
      warn(`${this.name} did not stop within ${timeoutMs / 1000} s: killing it`);
      try {
        process.kill(-this.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    await gone;
    clearTimeout(t);
  }
}

/** The busiest service in the last 5 minutes, from the histogram measurement. */
async function busiestService(/** @type {any} */ c, /** @type {any} */ target) {
  const q = `SELECT sum(${c.quote('influxql-ident', c.HIST_FIELD.count)}) FROM ${c.quote('influxql-ident', c.MEASUREMENT.connectHist)} WHERE time > now() - 5m GROUP BY ${c.quote('influxql-ident', c.TAG.service)}`;
  const [series] = await c.queryInfluxQL(target, q);
  let best = null;
  for (const s of series ?? []) {
    const n = Number(s.values?.[0]?.[1] ?? 0);
    if (!best || n > best.n) best = { service: s.tags?.[c.TAG.service] ?? '', n };
  }
  return best;
}

/** @param {string[]} argv */
async function main(argv) {
  // A fresh clone has nothing built yet, not even the flag parser: set up first (it is what up does anyway).
  const wantsHelp = argv.includes('--help') || argv.includes('-h');
  let setUp = false;
  if (!fs.existsSync(path.join(root, 'pkg/core/dist/index.js')) && !wantsHelp && !argv.includes('--setup=false')) {
    const blocker = probeBlocker();
    if (blocker) {
      warn(blocker);
      return 1;
    }
    say('first run: setting up (scripts/setup installs what is missing and builds)');
    const r = spawnSync(path.join(root, 'scripts/setup'), { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) {
      warn('scripts/setup failed (see above)');
      return 1;
    }
    setUp = true;
  }
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
        'up',
        'Run the whole local pipeline: an InfluxDB (a local Debian influxd 1.x under --data-dir unless --influx-url\n' +
          'is given), the agent with the eBPF probe, and the renderer. Ctrl-C or SIGTERM stops everything.',
        specs,
        'Needs root (the probe loads eBPF programs). Logs: <data-dir>/log/*.log.',
      ),
    );
    return 0;
  }
  const v = loaded.values;
  const blocker = probeBlocker();
  if (blocker) {
    warn(blocker);
    return 1;
  }
  const dataDir = path.resolve(root, v['data-dir']);
  const external = loaded.sources['influx-url'] !== 'default';
  const agentListen = v['agent-listen'];
  const rendererListen = v['renderer-listen'];

  // Ports first: a clear message beats a child dying with EADDRINUSE.
  const wanted = [
    ['agent', agentListen.host, agentListen.port, '--agent-listen'],
    ['renderer', rendererListen.host, rendererListen.port, '--renderer-listen'],
  ];
  if (!external) wanted.push(['InfluxDB', '127.0.0.1', v['influx-port'], '--influx-port']);
  for (const [what, host, port, flag] of wanted) {
    if (!(await portFree(host, port))) {
      warn(`port ${host}:${port} for the ${what} is taken: stop what listens there (ss -ltnp | grep :${port}) or choose another with ${flag}`);
      return 1;
    }
  }

  if (v.setup && !setUp) {
    say('checking set-up (scripts/setup)');
    const r = spawnSync(path.join(root, 'scripts/setup'), { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) {
      warn('scripts/setup failed (see above)');
      return 1;
    }
  }

  fs.mkdirSync(path.join(dataDir, 'log'), { recursive: true });
  /** @type {Child[]} */
  const children = [];
  let stopping = false;
  let influxStarted = false;
  const influxDir = path.join(dataDir, 'influxdb');

  const stopAll = async (/** @type {string} */ why) => {
    if (stopping) return;
    stopping = true;
    say(`stopping (${why})`);
    // The agent first, so its last flush reaches InfluxDB; then the renderer; InfluxDB last.
    for (const ch of [...children].sort((a, b) => (a.name === 'agent' ? -1 : b.name === 'agent' ? 1 : 0))) {
      await ch.stop(v['stop-timeout']);
      say(`${ch.name} stopped`);
    }
    if (influxStarted) {
      spawnSync(path.join(root, 'scripts/influxdb1'), ['stop', influxDir], { stdio: 'inherit' });
      say('InfluxDB stopped');
    }
  };

  /** @type {(code: number) => void} */
  let finish = () => {};
  const done = new Promise((r) => (finish = r));
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.on(sig, () => {
      stopAll(sig).then(() => finish(0));
    });
  }

  try {
    let target;
    if (external) {
      target = c.influxTargetFromConfig(v);
    } else {
      say(`starting InfluxDB 1.x on 127.0.0.1:${v['influx-port']} (data in ${influxDir})`);
      const r = spawnSync(path.join(root, 'scripts/influxdb1'), ['start', influxDir, String(v['influx-port'])], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`InfluxDB did not start: ${(r.stderr || '').trim()}`);
      influxStarted = true;
      target = c.influxTargetFromConfig({ ...v, 'influx-url': r.stdout.trim(), 'influx-db': v['influx-db'] ?? 'tcplat' });
    }
    if (target.version === 1) {
      await c.queryInfluxQL({ ...target, db: '' }, `CREATE DATABASE ${c.quote('influxql-ident', target.db)}`, { method: 'POST' });
    }
    say(`InfluxDB: ${c.describeTarget(target)}`);

    // Credentials reach the children through the environment, never their argv (visible in ps).
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
    const hostport = (/** @type {{host: string, port: number}} */ a) => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);
    const start = (/** @type {string} */ name, /** @type {string[]} */ args) => {
      // Run as an executable: its #! line gives node the flags the services run with.
      const ch = new Child(name, path.join(root, 'bin/tcplat'), args, path.join(dataDir, 'log', `${name}.log`), env);
      children.push(ch);
      return ch;
    };
    const renderer = start('renderer', ['renderer', '--listen', hostport(rendererListen)]);
    // The pipeline does not measure itself: this supervisor's and the renderer's connects (health checks,
    // queries) stay out, as the agent's own always do.
    const agentArgs = ['agent', '--source', 'probe', '--spool-dir', path.join(dataDir, 'spool'), '--listen', hostport(agentListen)];
    agentArgs.push('--exclude-pid', `${process.pid},${renderer.pid}`);
    if (v.host) agentArgs.push('--host', v.host);
    const agent = start('agent', agentArgs);

    const agentUrl = `http://${hostport(agentListen)}`;
    const rendererUrl = `http://${hostport(rendererListen)}`;
    const dead = () => {
      for (const ch of children) if (ch.exited) return `${ch.name} ${ch.exited} during start-up; its log (${ch.logFile}):\n${ch.tail()}`;
      return null;
    };
    await waitHttp(`${rendererUrl}/healthz`, 30_000, dead);
    await waitHttp(`${agentUrl}/readyz`, 30_000, dead);

    say('running:');
    const rows = [
      ['InfluxDB', target.url, influxStarted ? `pid ${fs.readFileSync(path.join(influxDir, 'influxd.pid'), 'utf8').trim()}` : 'external'],
      ['agent + probe', `${agentUrl}  (/metrics /api/status /api/stream)`, `pid ${agent.pid}`],
      ['renderer', `${rendererUrl}  (/render/heatmap.png /render/percentiles.png /render/lifespan.png; metric=tls)`, `pid ${renderer.pid}`],
    ];
    for (const [a, b, d] of rows) process.stdout.write(`  ${a.padEnd(14)} ${b.padEnd(70)} ${d}\n`);
    say(`logs in ${path.join(dataDir, 'log')}; live view: bin/tcplat top --agent ${agentUrl}; Ctrl-C stops everything`);

    // Tell the user where to look as soon as there is data, and again when the busiest service changes.
    let shown = '';
    const tick = async () => {
      if (stopping) return;
      for (const ch of children) {
        if (ch.exited) {
          warn(`${ch.name} ${ch.exited}; last lines of ${ch.logFile}:\n${ch.tail()}`);
          await stopAll(`${ch.name} stopped unexpectedly`);
          finish(1);
          return;
        }
      }
      try {
        const b = await busiestService(c, target);
        if (b && b.service !== shown) {
          shown = b.service;
          const qs = new URLSearchParams({ service: b.service, from: 'now-15m', to: 'now' });
          say(`busiest service: ${b.service} (${b.n} connects in 5 min). Heatmap: ${rendererUrl}/render/heatmap.png?${qs}`);
        }
      } catch (e) {
        warn(`cannot read InfluxDB: ${/** @type {Error} */ (e).message}`);
      }
    };
    const timer = setInterval(() => void tick(), 2000);
    void tick();
    const code = await done;
    clearInterval(timer);
    return code;
  } catch (e) {
    warn(/** @type {Error} */ (e).message);
    await stopAll('start-up failed');
    return 1;
  }
}

module.exports = { main };
