/**
 * `npm run bench:agent` (scripts/bench-agent): the agent's throughput.
 *  1. parse + enrich + aggregate + encode of a recorded 1M-event NDJSON file, in this process (one core):
 *     events/s, every event also encoded as a raw point (no rate limit), plus histograms. Target >= 200k/s.
 *  2. end to end: `tcplat agent --once` importing the same file into a private real InfluxDB 1.x, with
 *     the default raw rate limit (10k/s of event time) and histograms: events/s from start to the last
 *     write, agent CPU and peak RSS. Targets >= 34k events/s (the host's loopback storm rate), <= 200 MB.
 *  3. live, when root and bpf/tcplat-probe + bpf/storm are built: the probe and the agent while bpf/storm
 *     runs a loopback connect storm for 10 s: storm connects vs. the agent's histogram count for the
 *     storm's port (nothing lost), sustained events/s, agent CPU and peak RSS.
 *  4. the spool, in this process: the same events encoded into 5,000-line batches, each stored by the
 *     spool's worker (gzip + insert + commit with fsync): append+fsync p50/p99 per batch, and the largest
 *     event-loop stall while batches are appended (perf_hooks monitorEventLoopDelay), against a baseline
 *     measured in the same run: the same batches gzip'd, written and fdatasync'ed on the event loop (what
 *     the segment spool before SQLite did).
 * Figures are saved to test-output/bench-agent.json and compared with the previous run when there is one.
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import zlib from 'node:zlib';
import { connectLine, encodePoint, parseProbeLine, queryInfluxQL } from '@tcplat/core';
import { Aggregator } from './aggregate/aggregator';
import { SeriesBudget } from './aggregate/budget';
import { Enricher } from './enrich/enricher';
import { parseRules } from './enrich/rules';
import { Metrics, StageCounters } from './metrics';
import { Spool } from './spool/spool';
import { silentLogger, type EnrichedEvent } from './types';

const ROOT = path.resolve(__dirname, '..', '..');
const OUT = path.join(ROOT, 'test-output');
const EVENTS = Number(process.env.BENCH_EVENTS ?? 1_000_000);
const RATE = 34_000; // events per second of event time in the recording (the loopback storm rate)

function makeRecording(file: string): void {
  if (fs.existsSync(file) && fs.statSync(file).size > EVENTS * 100) return;
  const services = ['rails-api', 'nest-api', 'sidekiq', 'pgbouncer', 'nginx', 'node', 'ruby', 'python3', 'java', 'curl'];
  const dsts = Array.from({ length: 40 }, (_, i) => [`10.0.${i >> 3}.${10 + i}`, [5432, 6379, 443, 80, 9092][i % 5]] as const);
  const t0 = (BigInt(Date.now()) * 1_000_000n) / 10_000_000_000n * 10_000_000_000n - 3_600_000_000_000n;
  const fd = fs.openSync(file + '.tmp', 'w');
  let buf = '';
  let seed = 42;
  const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  for (let i = 0; i < EVENTS; i++) {
    const late = i % 100 === 0 ? 2_000_000_000n : 0n; // 1% reported 2 s after later events
    const ts = t0 + (BigInt(i) * 1_000_000_000n) / BigInt(RATE) - late;
    const r = rnd();
    const result = r < 0.95 ? 'ok' : r < 0.98 ? 'refused' : r < 0.995 ? 'timeout' : 'aborted';
    const latency = result === 'ok' ? Math.floor(50_000 * Math.exp(rnd() * 6)) : result === 'refused' ? 40_000 : 1_000_000_000 + Math.floor(rnd() * 2e9);
    const s = services[i % services.length];
    const [daddr, dport] = dsts[Math.floor(rnd() * dsts.length)];
    buf +=
      `{"type":"connect","ts_ns":${ts},"latency_ns":${latency},"result":"${result}","errno":${result === 'refused' ? 111 : 0},` +
      `"syn_retrans":${latency > 1e9 ? 1 : 0},"pid":${1000 + (i % 37)},"tid":${1000 + (i % 37)},"comm":"${s}","cgroup_id":1,"family":"ipv4",` +
      `"saddr":"10.0.9.9","sport":${32768 + (i % 28000)},"daddr":"${daddr}","dport":${dport}}\n`;
    if (buf.length > 1 << 20) {
      fs.writeSync(fd, buf);
      buf = '';
    }
  }
  fs.writeSync(fd, buf);
  fs.closeSync(fd);
  fs.renameSync(file + '.tmp', file);
}

/** Stage 1: parse + enrich + aggregate + encode, in process; with the agent's default series budget unless `budget` is false. */
function micro(lines: string[], budget = true): { eventsPerS: number; eventsPerCpuS: number; points: number; ms: number } {
  const m = new Metrics();
  const enricher = new Enricher(
    { rules: parseRules({ destinations: ['10.0.0.0/16:5432 -> postgres-primary', '10.0.0.0/16:6379 -> redis'], services: [{ name: 'rails', comm: 'ruby' }] }), selfPids: new Set([process.pid]), useProc: false },
    new StageCounters(m, 'enrich'),
  );
  const series = budget ? new SeriesBudget({ maxSeries: 2000, horizonS: 3600 }, m, silentLogger) : undefined;
  const agg = new Aggregator({ host: os.hostname(), windowNs: 10_000_000_000n, rawLimit: 0, runId: 1, budget: series }, new StageCounters(m, 'aggregate'));
  let points = 0;
  let bytes = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < lines.length; i++) {
    const r = parseProbeLine(lines[i]);
    if (!r.ok || r.value.type !== 'connect') continue;
    const e = enricher.enrich(r.value);
    if (e) agg.add(e as EnrichedEvent);
    if ((i & 0x7fff) === 0x7fff) {
      agg.flush((p) => {
        bytes += ('raw' in p ? connectLine(p) : encodePoint(p)).length + 1;
        points++;
      });
    }
  }
  agg.flush((p) => {
    bytes += ('raw' in p ? connectLine(p) : encodePoint(p)).length + 1;
    points++;
  }, true);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  void bytes;
  return { eventsPerS: Math.round(lines.length / (ms / 1000)), eventsPerCpuS: Math.round(lines.length / ((c.user + c.system) / 1e6)), points, ms: Math.round(ms) };
}

async function endToEnd(file: string): Promise<Record<string, number>> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-bench-agent-'));
  const influxDir = path.join(work, 'influxdb');
  const url = execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['start', influxDir], { encoding: 'utf8' }).trim();
  try {
    const target = { version: 1 as const, url, db: 'bench' };
    await queryInfluxQL({ ...target, db: '' }, 'CREATE DATABASE bench', { method: 'POST' });
    const t0 = Date.now();
    const args = [
      'agent', '--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once',
      '--influx-url', url, '--influx-db', 'bench', '--spool-dir', path.join(work, 'spool'), '--listen', '127.0.0.1:0', '--log-level', 'info',
    ];
    const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      // As users start it: bin/tcplat as an executable, with the node flags of its #! line.
      const child = spawn(path.join(ROOT, 'bin', 'tcplat'), args, { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.on('close', (c) => resolve({ code: c, stderr: err }));
    });
    const wallMs = Date.now() - t0;
    const done = stderr.split('\n').find((l) => l.includes('"msg":"import done"'));
    if (code !== 0 || !done) throw new Error(`agent import failed (exit ${code}):\n${stderr.slice(-3000)}`);
    const d = JSON.parse(done) as { events: number; points: number; written: number; cpuUserMs: number; cpuSystemMs: number; maxRssKb: number; flushMaxMs: number; eventLoopMaxDelayMs: number };
    const [[raw], [hist]] = await queryInfluxQL(target, 'SELECT count(latency_ms) FROM tcp_connect; SELECT sum("count") FROM tcp_connect_hist');
    // Where the time goes: reading the capture (parse .. spool, with the writer sending alongside), then
    // what was still unsent when the source ended (the writer catching up).
    const at = (msg: string) => {
      const l = stderr.split('\n').find((x) => x.includes(`"msg":"${msg}`));
      return l ? (JSON.parse(l) as { time: number }).time : NaN;
    };
    const sourceEndedAt = at('source exited');
    const startedAt = at('agent starting');
    return {
      events: d.events,
      wallMs,
      eventsPerS: Math.round(d.events / (wallMs / 1000)),
      linesWritten: d.written,
      rawPointsInInflux: Number(raw.values[0][1]),
      histCountInInflux: Number(hist.values[0][1]),
      cpuMs: Math.round(d.cpuUserMs + d.cpuSystemMs),
      cpuPercentOfOneCore: Math.round(((d.cpuUserMs + d.cpuSystemMs) / wallMs) * 100),
      peakRssMb: Math.round(d.maxRssKb / 1024),
      flushMaxMs: d.flushMaxMs,
      eventLoopMaxDelayMs: d.eventLoopMaxDelayMs,
      readMs: sourceEndedAt - startedAt,
      afterSourceMs: at('import done') - sourceEndedAt,
    };
  } finally {
    execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['stop', influxDir]);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function procStats(pid: number): { cpuMs: number; hwmMb: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuMs: Math.round((ticks * 1000) / 100), hwmMb: Math.round(Number(hwm?.[1] ?? 0) / 1024) };
}

async function live(): Promise<Record<string, number> | null> {
  const probe = path.join(ROOT, 'bpf', 'tcplat-probe');
  const storm = path.join(ROOT, 'bpf', 'storm');
  if (process.getuid?.() !== 0 || !fs.existsSync(probe) || !fs.existsSync(storm)) {
    console.log('3. live storm: skipped (needs root and make -C bpf)');
    return null;
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-bench-agent-live-'));
  const influxDir = path.join(work, 'influxdb');
  const url = execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['start', influxDir], { encoding: 'utf8' }).trim();
  const target = { version: 1 as const, url, db: 'bench' };
  let agent: ReturnType<typeof spawn> | null = null;
  try {
    await queryInfluxQL({ ...target, db: '' }, 'CREATE DATABASE bench', { method: 'POST' });
    agent = spawn(
      path.join(ROOT, 'bin', 'tcplat'),
      ['agent', '--source', 'probe', '--influx-url', url, '--influx-db', 'bench', '--spool-dir', path.join(work, 'spool'), '--listen', '127.0.0.1:0'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    agent.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const t0 = Date.now();
    while (!err.includes('tcplat-probe: attached')) {
      if (Date.now() - t0 > 20_000 || agent.exitCode !== null) throw new Error(`the probe did not attach:\n${err.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const api = /Server listening at (http:\/\/[\d.:]+)/.exec(err)![1];
    const before = procStats(agent.pid!);
    const out = execFileSync(storm, ['-d', '10', '-t', '2'], { encoding: 'utf8' });
    const st = JSON.parse(out.trim().split('\n').pop()!) as { connects: number; rate: number; port: number };
    // Wait until the agent has spooled and written everything.
    for (let i = 0; i < 600; i++) {
      const s = (await (await fetch(`${api}/api/status`)).json()) as { pipeline: { pending_events: number }; spool: { lines: number } };
      if (s.pipeline.pending_events === 0 && s.spool.lines === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const after = procStats(agent.pid!);
    // An idle pipeline is not proof that every event arrived: on a loaded machine the agent may not have read
    // the probe's last lines yet when it looks idle. Count until the storm's connects are all in, or the count
    // has not moved for 5 s (at most 60 s), then say what the probe itself dropped in the kernel.
    const countNow = async () => {
      const [[h]] = await queryInfluxQL(target, `SELECT sum("count") FROM tcp_connect_hist WHERE "dst" = '127.0.0.1:${st.port}'`);
      return h ? Number(h.values[0][1]) : 0;
    };
    let counted = await countNow();
    for (let stableSince = Date.now(), t0 = Date.now(); counted !== st.connects && Date.now() - stableSince < 5_000 && Date.now() - t0 < 60_000; ) {
      await new Promise((r) => setTimeout(r, 250));
      const c = await countNow();
      if (c !== counted) stableSince = Date.now();
      counted = c;
    }
    const status = (await (await fetch(`${api}/api/status`)).json()) as { metrics?: Record<string, number> };
    const kernelDropped = Number(status.metrics?.tcplat_probe_kernel_dropped ?? NaN);
    return {
      stormConnects: st.connects,
      stormRate: Math.round(st.rate),
      agentCounted: counted,
      probeKernelDropped: kernelDropped,
      agentCpuMs: after.cpuMs - before.cpuMs,
      agentCpuPercentOfOneCore: Math.round(((after.cpuMs - before.cpuMs) / 10_000) * 100),
      peakRssMb: after.hwmMb,
    };
  } finally {
    if (agent && agent.exitCode === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent!.once('close', r));
    }
    execFileSync(path.join(ROOT, 'scripts', 'influxdb1'), ['stop', influxDir]);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The recording's events as line protocol, in batches of 5,000 lines (what the agent spools). */
function batches(lines: string[], max: number): string[] {
  const m = new Metrics();
  const enricher = new Enricher({ rules: parseRules({}), selfPids: new Set(), useProc: false }, new StageCounters(m, 'enrich'));
  const agg = new Aggregator({ host: os.hostname(), windowNs: 10_000_000_000n, rawLimit: 0, runId: 1 }, new StageCounters(m, 'aggregate'));
  const out: string[] = [];
  let batch: string[] = [];
  const emit = (p: Parameters<Parameters<Aggregator['flush']>[0]>[0]) => {
    batch.push('raw' in p ? connectLine(p) : encodePoint(p));
    if (batch.length === 5000) {
      out.push(batch.join('\n') + '\n');
      batch = [];
    }
  };
  for (let i = 0; i < lines.length && out.length < max; i++) {
    const r = parseProbeLine(lines[i]);
    if (!r.ok || r.value.type !== 'connect') continue;
    const e = enricher.enrich(r.value);
    if (e) agg.add(e as EnrichedEvent);
    if ((i & 0x7fff) === 0x7fff) agg.flush(emit);
  }
  return out;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

/** Stage 4: the spool's cost per batch and the event loop's largest stall, worker vs. on the event loop. */
async function spoolBench(lines: string[]): Promise<Record<string, number>> {
  const texts = batches(lines, 120);
  const work = fs.mkdtempSync(path.join(OUT, 'bench-spool-'));
  try {
    // Baseline: gzip + write + fdatasync on the event loop, one batch per flush.
    const h0 = monitorEventLoopDelay({ resolution: 1 });
    const syncMs: number[] = [];
    const fd = fs.openSync(path.join(work, 'segment'), 'a');
    h0.enable();
    for (const t of texts) {
      const t0 = performance.now();
      fs.writeSync(fd, zlib.gzipSync(t, { level: 1 }));
      fs.fdatasyncSync(fd);
      syncMs.push(performance.now() - t0);
      await new Promise((r) => setImmediate(r)); // let the loop turn, as between flushes
    }
    h0.disable();
    fs.closeSync(fd);
    // The spool: the same batches through the worker.
    const spool = await Spool.open(path.join(work, 'spool'), { maxBytes: 1 << 30, log: silentLogger });
    const h = monitorEventLoopDelay({ resolution: 1 });
    const storeMs: number[] = [];
    const roundMs: number[] = [];
    h.enable();
    for (const t of texts) {
      const t0 = performance.now();
      const r = await spool.append(t, 5000);
      roundMs.push(performance.now() - t0);
      if (r.storeMs !== undefined) storeMs.push(r.storeMs);
    }
    h.disable();
    const bytes = spool.stats.bytes;
    await spool.close();
    const r2 = (x: number) => Math.round(x * 100) / 100;
    return {
      batches: texts.length,
      avgBatchKb: Math.round(bytes / texts.length / 1024),
      appendFsyncP50Ms: r2(pct(storeMs, 50)),
      appendFsyncP99Ms: r2(pct(storeMs, 99)),
      roundTripP50Ms: r2(pct(roundMs, 50)),
      roundTripP99Ms: r2(pct(roundMs, 99)),
      maxLoopStallMs: r2(h.max / 1e6),
      baselineSyncP50Ms: r2(pct(syncMs, 50)),
      baselineSyncP99Ms: r2(pct(syncMs, 99)),
      baselineMaxLoopStallMs: r2(h0.max / 1e6),
    };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function compare(prev: Record<string, Record<string, number>> | null, now: Record<string, Record<string, number>>): void {
  if (!prev) return;
  console.log('\nchange against the previous run (test-output/bench-agent.json):');
  for (const [section, figures] of Object.entries(now)) {
    for (const [k, v] of Object.entries(figures)) {
      const p = prev[section]?.[k];
      if (typeof p !== 'number' || typeof v !== 'number' || p === 0) continue;
      console.log(`  ${section}.${k}: ${p} -> ${v} (${v >= p ? '+' : ''}${(((v - p) / p) * 100).toFixed(1)}%)`);
    }
  }
}

export async function main(): Promise<number> {
  fs.mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, `agent-bench-${EVENTS}.ndjson`);
  console.log(`recording: ${EVENTS} probe events at ${RATE}/s of event time -> ${file}`);
  makeRecording(file);
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');

  // Five rounds: the median is the figure; the best shows what an idle core does on a shared machine.
  // Alternated with five rounds without the cardinality budget (issue 14), the baseline it must match.
  const withBudget: ReturnType<typeof micro>[] = [];
  const without: ReturnType<typeof micro>[] = [];
  for (let i = 0; i < 5; i++) {
    withBudget.push(micro(lines, true));
    without.push(micro(lines, false));
  }
  const rounds = withBudget.sort((a, b) => a.eventsPerS - b.eventsPerS);
  without.sort((a, b) => a.eventsPerS - b.eventsPerS);
  const m = rounds[2];
  const best = rounds[4];
  const base = without[2];
  const load = os.loadavg()[0].toFixed(2);
  console.log(
    `\n1. parse + enrich + aggregate + encode, one core (median of 5; best ${best.eventsPerS.toLocaleString('en')}): ${m.eventsPerS.toLocaleString('en')} events/s wall, ` +
      `${m.eventsPerCpuS.toLocaleString('en')} events per CPU-second (${m.points.toLocaleString('en')} points in ${m.ms} ms; load average ${load} on ${os.cpus().length} cores)  ` +
      `target >= 300,000 (issue 17)  ${m.eventsPerS >= 300_000 ? 'OK' : m.eventsPerCpuS >= 300_000 ? 'OK per CPU-second (machine busy)' : 'BELOW TARGET'}`,
  );
  console.log(
    `   the same without the series budget (alternated rounds): ${base.eventsPerS.toLocaleString('en')} events/s wall, ${base.eventsPerCpuS.toLocaleString('en')} per CPU-second; ` +
      `with / without: ${(m.eventsPerS / base.eventsPerS).toFixed(3)} wall, ${(m.eventsPerCpuS / base.eventsPerCpuS).toFixed(3)} per CPU-second (load average ${os.loadavg()[0].toFixed(2)})`,
  );

  const sp = await spoolBench(lines);
  console.log(
    `4. spool (SQLite in a worker, ${sp.batches} batches of 5,000 lines, ~${sp.avgBatchKb} KiB gzip'd): append+fsync p50 ${sp.appendFsyncP50Ms} ms, p99 ${sp.appendFsyncP99Ms} ms ` +
      `(round trip p50 ${sp.roundTripP50Ms} / p99 ${sp.roundTripP99Ms} ms); largest event-loop stall ${sp.maxLoopStallMs} ms\n` +
      `   baseline, same batches gzip'd + fdatasync'ed on the event loop: p50 ${sp.baselineSyncP50Ms} ms, p99 ${sp.baselineSyncP99Ms} ms, largest stall ${sp.baselineMaxLoopStallMs} ms ` +
      `-> stall ratio ${(sp.maxLoopStallMs / Math.max(0.01, sp.baselineMaxLoopStallMs)).toFixed(2)}x (load average ${os.loadavg()[0].toFixed(2)})`,
  );

  if (process.env.BENCH_SKIP_E2E === '1') return 0;
  const e = await endToEnd(file);
  console.log(
    `2. end to end into InfluxDB 1.x (tcplat agent --once, raw limit 10k/s + histograms): ${e.eventsPerS.toLocaleString('en')} events/s ` +
      `(${e.events} events, ${e.linesWritten} lines written in ${e.wallMs} ms)  target >= 34,000  ${e.eventsPerS >= 34_000 ? 'OK' : 'BELOW TARGET'}`,
  );
  console.log(`   agent CPU ${e.cpuMs} ms (${e.cpuPercentOfOneCore}% of one core), peak RSS ${e.peakRssMb} MB  target <= 200 MB  ${e.peakRssMb <= 200 ? 'OK' : 'ABOVE TARGET'}`);
  console.log(`   longest flush (event loop busy) ${e.flushMaxMs} ms, largest event-loop delay ${e.eventLoopMaxDelayMs} ms (spool I/O in its worker)`);
  console.log(
    `   reading the capture (writer sending alongside) ${e.readMs} ms, then ${e.afterSourceMs} ms until InfluxDB had everything (load average ${os.loadavg()[0].toFixed(2)})`,
  );
  console.log(`   in InfluxDB: ${e.rawPointsInInflux} raw points (sampled), histograms count ${e.histCountInInflux} (exact: ${e.histCountInInflux === e.events ? 'yes' : 'NO'})`);

  const l = await live();
  if (l) {
    console.log(
      `3. live: bpf/storm ${l.stormConnects} connects (${l.stormRate}/s) through probe -> agent -> InfluxDB: histograms count ${l.agentCounted} ` +
        `(${l.agentCounted === l.stormConnects ? 'none lost' : `${l.stormConnects - l.agentCounted} missing, of which the probe counted ${l.probeKernelDropped} dropped in the kernel`}); agent CPU ${l.agentCpuPercentOfOneCore}% of one core, peak RSS ${l.peakRssMb} MB`,
    );
  }
  // The issue's baseline for the end-to-end figure is the host's loopback storm rate: measured just now
  // when the live part ran, else the 34k/s the issue states.
  const stormRate = l ? l.stormRate : RATE;
  console.log(
    `   end to end vs the loopback storm rate (${l ? 'bpf/storm, this run' : 'the issue\'s 34k/s'}): ${e.eventsPerS.toLocaleString('en')} / ${stormRate.toLocaleString('en')} = ${(e.eventsPerS / stormRate).toFixed(2)}x  target >= 3x (issue 17)  ${e.eventsPerS >= 3 * stormRate ? 'OK' : 'BELOW TARGET'}`,
  );
  const result: Record<string, Record<string, number>> = { micro: { eventsPerS: m.eventsPerS, bestEventsPerS: best.eventsPerS, eventsPerCpuS: m.eventsPerCpuS, ms: m.ms, noBudgetEventsPerS: base.eventsPerS, noBudgetEventsPerCpuS: base.eventsPerCpuS }, spool: sp, endToEnd: e };
  if (l) result.live = l;
  const saved = path.join(OUT, 'bench-agent.json');
  let prev: Record<string, Record<string, number>> | null = null;
  try {
    prev = JSON.parse(fs.readFileSync(saved, 'utf8')).result;
  } catch {
    /* first run */
  }
  compare(prev, result);
  fs.writeFileSync(saved, JSON.stringify({ at: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, result }, null, 2) + '\n');
  return Math.max(m.eventsPerS, m.eventsPerCpuS) >= 300_000 && e.eventsPerS >= Math.max(34_000, 3 * stormRate) && e.peakRssMb <= 200 && e.histCountInInflux === e.events ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      console.error(`bench-agent: ${(err as Error).message}`);
      process.exit(1);
    },
  );
}
