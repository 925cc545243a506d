/**
 * The probe's `stats` lines count events and kernel drops since *that probe process* started. The agent
 * restarts the probe when it exits (and a --source-cmd may run several in turn), so the totals are the
 * sum over runs: the last values of each finished run plus the current run's. A run is named by the
 * probe's `started_ns` (probe v2: when it attached), else by the agent's source start count; counters that
 * went down also start a new run (a restart the agent could not see: a wrapper script, a concatenated
 * capture of old probes).
 */
export interface ProbeStatsUpdate {
  /** Kernel drops since the previous stats line (of this run, or the whole first line of a new run). */
  newlyDropped: number;
  /** True when this line began a new probe run. */
  newRun: boolean;
}

export class ProbeRunStats {
  /** Probe runs seen (1 after the first stats line). */
  runs = 0;
  private doneEvents = 0;
  private doneDropped = 0;
  private run: { source: string | number; events: number; dropped: number; reasons: Map<string, number> } | null = null;
  /** Per-reason totals of finished runs (probe v2: `drops.*` and `missed.*` of its stats lines). */
  private readonly doneReasons = new Map<string, number>();

  /**
   * One stats line. `sourceRun` identifies the probe process it came from (its started_ns, or the
   * supervisor's start count); `events` and `dropped` are that process's cumulative counters.
   */
  update(sourceRun: string | number, events: number, dropped: number, reasons: ReadonlyMap<string, number> = new Map()): ProbeStatsUpdate {
    const cur = this.run;
    const newRun = cur === null || cur.source !== sourceRun || events < cur.events || dropped < cur.dropped;
    let newlyDropped: number;
    if (newRun) {
      if (cur) {
        this.doneEvents += cur.events;
        this.doneDropped += cur.dropped;
        for (const [k, v] of cur.reasons) this.doneReasons.set(k, (this.doneReasons.get(k) ?? 0) + v);
      }
      this.runs++;
      newlyDropped = dropped;
    } else {
      newlyDropped = dropped - cur.dropped;
    }
    this.run = { source: sourceRun, events, dropped, reasons: new Map(reasons) };
    return { newlyDropped, newRun };
  }

  /** Events the kernel reported over every run. */
  get events(): number {
    return this.doneEvents + (this.run?.events ?? 0);
  }

  /** Events lost in the kernel over every run. */
  get dropped(): number {
    return this.doneDropped + (this.run?.dropped ?? 0);
  }

  /** Per-reason totals over every run (`drop:<reason>`, `missed:<hook>`). */
  get reasons(): Map<string, number> {
    const out = new Map(this.doneReasons);
    for (const [k, v] of this.run?.reasons ?? []) out.set(k, (out.get(k) ?? 0) + v);
    return out;
  }

  /** The current run's counters, as its last stats line said. */
  get current(): { events: number; dropped: number } | null {
    return this.run ? { events: this.run.events, dropped: this.run.dropped } : null;
  }
}
