import { parseProbeLine } from '@tcplat/core';
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
      return s.update(/"started_ns":(\d+)/.exec(l)![1], r.value.events, r.value.dropped).newlyDropped;
    });
    expect(newly).toEqual([1, 1, 5, 1]);
    expect([s.events, s.dropped, s.runs]).toEqual([600, 8, 2]);
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
