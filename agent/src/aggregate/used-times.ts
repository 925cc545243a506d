/**
 * Timestamps already given to raw and session points, so that no two share one (InfluxDB keeps only the
 * last point written for a series and time). Kept per second of event time as the ns within the second.
 *
 * A batch of one second's raw points, in time order, is the common case: when nothing of that second was
 * written before, it is kept as that sorted array itself (collisions inside it move by 1 ns steps), with no
 * per-point hashing. Anything else (a later batch of a second already written: late events, restarts of
 * a text tool; single session points) checks the sorted runs by binary search plus a Set of singles.
 */
const NS_PER_S = 1e9;

interface SecondTimes {
  /** Sorted arrays of subs, each from one batch (4 bytes per point: seconds are kept for minutes). */
  runs: Int32Array[];
  singles: Set<number> | null;
}

function inRun(run: Int32Array, x: number): boolean {
  let lo = 0;
  let hi = run.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const v = run[mid];
    if (v === x) return true;
    if (v < x) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

export class UsedTimes {
  private readonly bySecond = new Map<number, SecondTimes>();
  /** 1 ns moves made so far. */
  moves = 0;
  /** Seconds before this one were forgotten (prune): a claim there cannot be checked. */
  oldest = -Infinity;

  private has(t: SecondTimes | undefined, sub: number): boolean {
    if (!t) return false;
    if (t.singles?.has(sub)) return true;
    for (const run of t.runs) if (inRun(run, sub)) return true;
    return false;
  }

  /**
   * `sub` (ns within `second`) itself if free, else the next free one, now taken. The result may be
   * 1e9 or more, which means the following second: the caller builds the timestamp as second + sub.
   */
  claim(second: number, sub: number): number {
    for (;;) {
      const sec = second + Math.floor(sub / NS_PER_S);
      const key = sub % NS_PER_S;
      let t = this.bySecond.get(sec);
      if (!this.has(t, key)) {
        if (!t) {
          t = { runs: [], singles: null };
          this.bySecond.set(sec, t);
        }
        (t.singles ??= new Set()).add(key);
        return sub;
      }
      this.moves++;
      sub++;
    }
  }

  /** claim() for each of `subs` (ascending), in order; returns what each got (a new array). */
  claimSorted(second: number, subs: readonly number[]): number[] {
    const out = new Array<number>(subs.length);
    if (!this.bySecond.has(second)) {
      let prev = -1;
      let moves = 0;
      for (let i = 0; i < subs.length; i++) {
        const c = subs[i] > prev ? subs[i] : prev + 1;
        moves += c - subs[i];
        out[i] = prev = c;
      }
      if (prev < NS_PER_S) {
        this.bySecond.set(second, { runs: [Int32Array.from(out)], singles: null });
        this.moves += moves;
        return out;
      }
      // Moved past the end of the second: the slow path records the spill in the next one.
    }
    for (let i = 0; i < subs.length; i++) out[i] = this.claim(second, subs[i]);
    return out;
  }

  /** Forget seconds before `oldest`. */
  prune(oldest: number): void {
    if (oldest > this.oldest) this.oldest = oldest;
    for (const second of this.bySecond.keys()) if (second < oldest) this.bySecond.delete(second);
  }
}
