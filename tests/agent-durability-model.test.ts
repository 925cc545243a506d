/**
 * Model-based test of the spool (agent/src/spool): random sequences of append / deliver (next + ack) /
 * close / crash / crash in the middle of an append / disk full / disk freed, checked against a model after
 * every step. The spool runs in a child process (tests/support/spool-child.js) that a crash SIGKILLs; the
 * disk is a real 6 MiB tmpfs, made full for real by a filler file (root).
 *
 * Promise checked: every batch the spool reported stored is delivered exactly once or counted as dropped
 * (size cap), never both, never neither; batches it reported held in memory (the disk refused them) are
 * delivered, stored, or counted when dropped (memory bound, close) — except that a crash loses them
 * uncounted, as it loses events not yet flushed (never reported durable). Order is oldest first.
 *
 * fast-check: seeded (TCPLAT_SEED, printed on failure) and shrinking; TCPLAT_MODEL_RUNS for more runs.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import fc from 'fast-check';
import { describeWith } from './support/prereq';
import { buildAgent, ROOT, tmpDir } from './agent-support';
import type { StoreStats } from '../agent/src/spool/store';

interface Reply {
  result?: unknown;
  error?: string;
  stats: StoreStats;
}

class SpoolChild {
  private readonly replies: ((r: Reply) => void)[] = [];
  private readonly exited: Promise<void>;
  private constructor(readonly proc: ChildProcessWithoutNullStreams) {
    this.exited = new Promise((r) => proc.once('exit', () => r()));
  }

  static async start(dir: string, maxBytes: number): Promise<SpoolChild> {
    const proc = spawn(process.execPath, [path.join(ROOT, 'tests', 'support', 'spool-child.js'), dir, String(maxBytes)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const c = new SpoolChild(proc);
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const rl = readline.createInterface({ input: proc.stdout });
    const first = await new Promise<Record<string, unknown>>((resolve, reject) => {
      rl.once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>));
      proc.once('exit', (code) => reject(new Error(`spool child exited (${code}) before it was ready: ${stderr}`)));
    });
    if (!first.ready) throw new Error(`spool child could not open the spool: ${JSON.stringify(first)}`);
    rl.on('line', (l) => c.replies.shift()?.(JSON.parse(l) as Reply));
    return c;
  }

  send(cmd: Record<string, unknown>): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.replies.push((r) => (r.error ? reject(new Error(r.error)) : resolve(r)));
      this.proc.stdin.write(JSON.stringify(cmd) + '\n');
    });
  }

  /** Send without waiting: the crash comes while the child works on it. */
  post(cmd: Record<string, unknown>): void {
    this.replies.push(() => undefined);
    this.proc.stdin.write(JSON.stringify(cmd) + '\n');
  }

  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async closed(): Promise<void> {
    await this.exited;
  }
}

type Step =
  | { kind: 'append'; big: boolean }
  | { kind: 'deliver' }
  | { kind: 'close' }
  | { kind: 'crash' }
  | { kind: 'crashDuringAppend'; big: boolean; delayMs: number }
  | { kind: 'diskFull' }
  | { kind: 'diskFree' };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ kind: fc.constant('append' as const), big: fc.boolean() }) },
  { weight: 4, arbitrary: fc.constant({ kind: 'deliver' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'close' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'crash' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crashDuringAppend' as const), big: fc.boolean(), delayMs: fc.integer({ min: 0, max: 30 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'diskFull' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'diskFree' as const }) },
);

const MAX_BYTES = 512 << 10;
const labelOf = (text: string) => Number(/^m,b=(\d+) /.exec(text)![1]);
function batchText(label: number, big: boolean): string {
  // Big: ~300 KiB gzip'd (random bytes in base64), so two fill the 512 KiB cap.
  const pad = big ? `,pad="${Buffer.from(Array.from({ length: 300_000 }, () => Math.floor(Math.random() * 256))).toString('base64')}"` : '';
  return `m,b=${label} v=${label}i${pad} ${1_764_100_000_000_000_000 + label}\n`;
}

function fillDisk(file: string): void {
  const chunk = Buffer.alloc(64 << 10, 7);
  const fd = fs.openSync(file, 'a');
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    fs.closeSync(fd);
  }
  // The last partial chunk: fill byte by byte blocks until nothing fits.
  const fd2 = fs.openSync(file, 'a');
  try {
    for (;;) fs.writeSync(fd2, Buffer.alloc(512, 7));
  } catch {
    /* full */
  } finally {
    fs.closeSync(fd2);
  }
}

interface Model {
  /** Batches waiting, oldest first, with whether the spool reported them stored (durable). */
  waiting: { label: number; durable: boolean }[];
  delivered: Set<number>;
  /** Acked while the disk refused the delete: may come back after a crash (sent again, same points). */
  mayRepeat: Set<number>;
  appended: number;
  capCounted: number;
  heldCounted: number;
  crashLost: number;
  next: number;
}

describeWith(process.getuid?.() === 0 ? null : 'needs root (mounts a tmpfs)', 'spool model: append/deliver/close/crash/disk-full against a model', () => {
  let base: string;
  let mnt: string;

  beforeAll(() => {
    buildAgent();
    base = tmpDir('spool-model');
    mnt = path.join(base, 'disk');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', mnt]);
  }, 180_000);

  afterAll(async () => {
    try {
      execFileSync('umount', ['-l', mnt]);
    } catch {
      /* not mounted */
    }
    // Clean-up only: a lazily detached mount can keep its mount point busy for a moment.
    for (let i = 0; ; i++) {
      try {
        fs.rmSync(base, { recursive: true, force: true });
        break;
      } catch (e) {
        if (i >= 20) {
          // eslint-disable-next-line no-console
          console.warn(`could not remove ${base}: ${(e as Error).message}`);
          break;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  });

  test('every stored batch is delivered exactly once or counted as dropped', async () => {
    const seed = Number(process.env.TCPLAT_SEED ?? 20261207);
    const runs = Number(process.env.TCPLAT_MODEL_RUNS ?? 10);
    let runNo = 0;
    // What the runs went through, so the test fails if the faults it is about never happened.
    const seen = { held: 0, capDropped: 0, crashes: 0, delivered: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 4, maxLength: 22 }), async (steps) => {
        const dir = path.join(mnt, `run-${runNo++}`);
        const filler = path.join(mnt, 'filler');
        fs.rmSync(filler, { force: true });
        const m: Model = { waiting: [], delivered: new Set(), mayRepeat: new Set(), appended: 0, capCounted: 0, heldCounted: 0, crashLost: 0, next: 1 };
        let child = await SpoolChild.start(dir, MAX_BYTES);
        let heldSeenThisProcess = 0;
        let capSeen = 0;
        const heldDropped = (s: StoreStats) => s.dropped.pending_full.records + s.dropped.unstored_at_close.records;

        /** Compare the child's list with the model; `crash`: what changed may include a crash's losses. */
        const reconcile = async (crash: { inDoubt: number | null } | null) => {
          const r = await child.send({ op: 'list' });
          const list = r.result as { id: number; text: string }[];
          const labels = list.map((b) => labelOf(b.text));
          const expected = m.waiting.map((w) => w.label);
          if (crash?.inDoubt != null) expected.push(crash.inDoubt);
          // Come back after a crash: acked batches whose delete the disk refused (sent again, harmless).
          const back = labels.filter((l) => m.mayRepeat.has(l) && !expected.includes(l));
          // Order kept: the list is a subsequence of what the model expects (plus those that came back).
          let i = 0;
          for (const l of labels) {
            if (back.includes(l)) continue;
            while (i < expected.length && expected[i] !== l) i++;
            if (i === expected.length) throw new Error(`batch ${l} is in the spool out of order or unknown; expected a subsequence of [${expected}], got [${labels}]`);
            i++;
          }
          const present = new Set(labels);
          const removed = m.waiting.filter((w) => !present.has(w.label));
          const capDelta = r.stats.dropped.cap.records - capSeen;
          const heldDelta = heldDropped(r.stats) - heldSeenThisProcess;
          if (crash) {
            // A crash loses no stored batch: what disappeared was either counted by the cap or never stored.
            const removedDurable = removed.filter((w) => w.durable).length;
            const unknown = removed.length - removedDurable + (crash.inDoubt != null && !present.has(crash.inDoubt) ? 1 : 0);
            expect(heldDelta).toBe(0); // a new process
            if (removedDurable > capDelta || capDelta > removedDurable + unknown) {
              throw new Error(`after a crash: ${removedDurable} stored batches disappeared, cap counted ${capDelta}, ${unknown} were never stored`);
            }
            m.capCounted += capDelta;
            m.crashLost += removed.length - capDelta + (crash.inDoubt != null && !present.has(crash.inDoubt) ? 1 : 0);
            if (crash.inDoubt != null) m.appended++;
          } else {
            expect(removed.length).toBe(capDelta + heldDelta);
            m.capCounted += capDelta;
            m.heldCounted += heldDelta;
          }
          capSeen = r.stats.dropped.cap.records;
          heldSeenThisProcess = heldDropped(r.stats);
          // Those that came back stay in mayRepeat until sent again.
          m.waiting = list.map((b) => ({ label: labelOf(b.text), durable: b.id > 0 }));
        };

        const restart = async () => {
          child = await SpoolChild.start(dir, MAX_BYTES);
          heldSeenThisProcess = 0;
        };

        try {
          for (const step of steps) {
            switch (step.kind) {
              case 'append': {
                const label = m.next++;
                const r = await child.send({ op: 'append', text: batchText(label, step.big), lines: 1 });
                m.appended++;
                m.waiting.push({ label, durable: (r.result as { stored: boolean }).stored });
                if (!(r.result as { stored: boolean }).stored) seen.held++;
                await reconcile(null);
                break;
              }
              case 'deliver': {
                const r = await child.send({ op: 'next' });
                const b = r.result as { id: number; text: string } | null;
                if (m.waiting.length === 0) {
                  expect(b).toBeNull();
                  break;
                }
                expect(b).not.toBeNull();
                const label = labelOf(b!.text);
                // Oldest first. (The worker's retry timer may have stored held batches since the last look,
                // dropping older ones at the cap: those must then be counted, which reconcile checks.)
                const at = m.waiting.findIndex((w) => w.label === label);
                if (at < 0) throw new Error(`next() gave batch ${label}, which is not waiting`);
                const a = await child.send({ op: 'ack', id: b!.id });
                if (m.delivered.has(label)) {
                  if (!m.mayRepeat.has(label)) throw new Error(`batch ${label} delivered twice`);
                } else m.delivered.add(label);
                if (a.result === false) m.mayRepeat.add(label);
                m.waiting.splice(at, 1);
                await reconcile(null);
                break;
              }
              case 'close': {
                const r = await child.send({ op: 'close' });
                await child.closed();
                // Held batches the disk still refused at close are counted there.
                const lost = r.result as { records: number } | null;
                const held = m.waiting.filter((w) => !w.durable);
                m.heldCounted += lost?.records ?? 0;
                expect(lost?.records ?? 0).toBeLessThanOrEqual(held.length);
                // Those lost are the newest held ones (the oldest were stored first).
                m.waiting = m.waiting.filter((w) => w.durable).concat(held.slice(0, held.length - (lost?.records ?? 0)).map((w) => ({ ...w, durable: true })));
                await restart();
                await reconcile({ inDoubt: null });
                break;
              }
              case 'crash':
                await child.kill9();
                await restart();
                await reconcile({ inDoubt: null });
                break;
              case 'crashDuringAppend': {
                const label = m.next++;
                child.post({ op: 'append', text: batchText(label, step.big), lines: 1 });
                await new Promise((r) => setTimeout(r, step.delayMs));
                await child.kill9();
                await restart();
                await reconcile({ inDoubt: label });
                break;
              }
              case 'diskFull':
                fillDisk(filler);
                break;
              case 'diskFree':
                fs.rmSync(filler, { force: true });
                break;
            }
          }
          // The end: space returns, everything left is delivered.
          fs.rmSync(filler, { force: true });
          for (;;) {
            const r = await child.send({ op: 'next' });
            const b = r.result as { id: number; text: string } | null;
            if (!b) break;
            const label = labelOf(b.text);
            if (m.delivered.has(label) && !m.mayRepeat.has(label)) throw new Error(`batch ${label} delivered twice`);
            const at = m.waiting.findIndex((w) => w.label === label);
            if (at < 0) throw new Error(`next() gave batch ${label}, which is not waiting`);
            m.delivered.add(label);
            m.mayRepeat.delete(label);
            m.waiting.splice(at, 1);
            await child.send({ op: 'ack', id: b.id });
          }
          await reconcile(null);
          expect(m.waiting).toEqual([]);
          // Never neither, never both: each batch is in exactly one outcome.
          expect(m.delivered.size + m.capCounted + m.heldCounted + m.crashLost).toBe(m.appended);
          seen.capDropped += m.capCounted;
          seen.delivered += m.delivered.size;
          seen.crashes += steps.filter((st) => st.kind === 'crash' || st.kind === 'crashDuringAppend').length;
        } finally {
          await child.kill9();
          fs.rmSync(filler, { force: true });
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      { seed, numRuns: runs, endOnFailure: false, interruptAfterTimeLimit: 240_000 },
    );
    // eslint-disable-next-line no-console
    console.log(`spool model: seed ${seed}, ${runs} runs: ${JSON.stringify(seen)}`);
    expect(Math.min(seen.held, seen.capDropped, seen.crashes, seen.delivered)).toBeGreaterThan(0);

  }, 600_000);
});
