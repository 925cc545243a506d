import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, parseProbeLine } from '@tcplat/core';
import { Agent } from '../agent';
import { AGENT_OPTIONS, agentConfig } from '../options';
import { silentLogger } from '../types';
import { ProbeRunStats } from './probe-stats';

/**
 * Stats lines as bpf/tcplat-probe prints them (DESIGN.md): cumulative per probe process. `run` is the
 * agent's source start count when the line arrived.
 */
function feed(seq: [run: number, line: string][]) {
  const s = new ProbeRunStats();
  const newly: number[] = [];
  for (const [run, line] of seq) {
    const r = parseProbeLine(line);
    if (!r.ok || r.value.type !== 'stats') throw new Error(`not a stats line: ${line}`);
    newly.push(s.update(run, r.value.events, r.value.dropped).newlyDropped);
  }
  return { s, newly };
}

const st = (ts: number, events: number, dropped: number) => `{"type":"stats","ts_ns":${1764100000000000000 + ts * 1e9},"events":${events},"dropped":${dropped}}`;

describe('probe drops per run', () => {
  test('one run: deltas of the cumulative counters', () => {
    const { s, newly } = feed([
      [1, st(1, 100, 0)],
      [1, st(2, 250, 3)],
      [1, st(3, 400, 3)],
      [1, st(4, 900, 10)],
    ]);
    expect(newly).toEqual([0, 3, 0, 7]);
    expect([s.events, s.dropped, s.runs]).toEqual([900, 10, 1]);
  });

  test('the agent restarts the probe: the new run counts from 0 and the totals add up', () => {
    const { s, newly } = feed([
      [1, st(1, 100, 2)],
      [1, st(2, 500, 5)],
      // probe killed, restarted by the supervisor (start #2): its counters begin again
      [2, st(3, 50, 0)],
      [2, st(4, 300, 4)],
      [2, st(5, 700, 9)],
    ]);
    // The old logic (dropped - previous dropped) saw 0 - 5 < 0 then 4 - 5 < 0: 0 new drops until 9 > 5.
    expect(newly).toEqual([2, 3, 0, 4, 5]);
    expect([s.events, s.dropped, s.runs]).toEqual([1200, 14, 2]);
    expect(s.current).toEqual({ events: 700, dropped: 9 });
  });

  test('a restart the agent did not see (a wrapper script, concatenated captures): counters going down start a run', () => {
    const { s, newly } = feed([
      [1, st(1, 800, 6)],
      [1, st(2, 20, 1)],
      [1, st(3, 90, 1)],
    ]);
    expect(newly).toEqual([6, 1, 0]);
    expect([s.events, s.dropped, s.runs]).toEqual([890, 7, 2]);
  });

  test('probe v2 names its run (started_ns): two runs in one source process (a wrapper restarting it) are told apart even when counters grow', () => {
    const v2 = (ts: number, started: number, events: number, dropped: number) =>
      `{"type":"stats","ts_ns":${1764100000000000000 + ts * 1e9},"events":${events},"dropped":${dropped},"mode":"stream","started_ns":${1764100000000000000 + started * 1e9},"drops":{"ringbuf_full":${dropped},"storage_alloc":0,"inflight_full":0,"pending_full":0,"hist_full":0},"missed":{"state":0,"retransmit":0,"connect_exit":0}}`;
    const s = new ProbeRunStats();
    const lines = [v2(1, 0, 100, 1), v2(2, 0, 200, 2), v2(4, 3, 300, 5), v2(5, 3, 400, 6)];
    const newly = lines.map((l) => {
      const r = parseProbeLine(l);
      if (!r.ok || r.value.type !== 'stats') throw new Error(l);
      const o = JSON.parse(l) as { drops: Record<string, number> };
      const reasons = new Map(Object.entries(o.drops).map(([k, v]) => [`drop:${k}`, v]));
      return s.update(/"started_ns":(\d+)/.exec(l)![1], r.value.events, r.value.dropped, reasons).newlyDropped;
    });
    expect(newly).toEqual([1, 1, 5, 1]);
    expect([s.events, s.dropped, s.runs]).toEqual([600, 8, 2]);
    // By reason, summed over runs the same way: 2 from the first run, 6 from the second.
    expect(s.reasons.get('drop:ringbuf_full')).toBe(8);
    expect(s.reasons.get('drop:storage_alloc')).toBe(0);
  });

  test('a new run whose first line already has drops reports them all, even when higher than the old run', () => {
    const { s, newly } = feed([
      [1, st(1, 10, 1)],
      [2, st(2, 5000, 40)],
    ]);
    expect(newly).toEqual([1, 40]);
    expect(s.dropped).toBe(41);
  });
});

describe('the agent over a recorded probe run and a restart', () => {
  test('/metrics and /api/status: drops summed per run, by reason, each probe run counted', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-stats-'));
    try {
      const cfg = agentConfig(loadConfig(AGENT_OPTIONS, ['--source', 'ndjson', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'd', '--spool-dir', dir], {}));
      const agent = await Agent.create(cfg, { log: silentLogger, command: { shell: 'exit 0' }, selfPids: [] });
      // The probe v2 hist-mode run recorded on this machine (stats lines only), then the same probe restarted
      // with new counters that lost 3 events to a full ring buffer and had 1 skipped state hook run.
      const recorded = fs.readFileSync(path.join(__dirname, '..', 'parse', 'fixtures', 'probe-hist-mode.ndjson'), 'utf8').split('\n').filter((l) => l.includes('"type":"stats"'));
      for (const l of recorded) agent.line(l);
      const restarted = JSON.parse(recorded[recorded.length - 1]) as Record<string, unknown>;
      const line = (events: number, ringbuf: number, state: number) =>
        JSON.stringify({ ...restarted, events, dropped: ringbuf, started_ns: '@S@', drops: { ...(restarted.drops as object), ringbuf_full: ringbuf }, missed: { ...(restarted.missed as object), state } })
          .replace('"@S@"', '1796658999000000000')
          .replace(/"ts_ns":\d+(\.\d+)?(e\+\d+)?/, '"ts_ns":1796659000000000000');
      agent.line(line(10, 1, 0));
      agent.line(line(20, 3, 1));
      const prom = agent.metrics.prometheus();
      expect(prom).toMatch(/^tcplat_probe_kernel_dropped 3$/m);
      expect(prom).toMatch(/^tcplat_probe_runs_total 2$/m);
      expect(prom).toMatch(/^tcplat_probe_kernel_lost\{kind="drop",reason="ringbuf_full"\} 3$/m);
      // The recorded run ended with 4 skipped state-hook runs; the restarted one had 1.
      expect(prom).toMatch(/^tcplat_probe_kernel_lost\{kind="missed",reason="state"\} 5$/m);
      const st = agent.status() as { source: { probe_stats: { events: number; runs: number } } };
      expect(st.source.probe_stats).toMatchObject({ events: 37 + 20, runs: 2 });
      await agent.spool.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
