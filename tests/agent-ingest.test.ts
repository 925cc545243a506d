/**
 * Ingest correctness against the real InfluxDB 1.x of `npm test`, through the real `tcplat agent --once`:
 * the same import twice (and an import resumed after SIGKILL) keeps the capture's counts in raw points
 * and histograms; late (> 30 s) and duplicate-looking events all keep their raw point; ambiguous
 * (duplicate-key) lines are refused; an over-long line leaves no phantom event; a 900 KiB comm is stored
 * capped; an import whose lines are refused exits non-zero with a summary, not a line per refused line.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MAX_TAG_BYTES, MEASUREMENT, type InfluxV1Target } from '@tcplat/core';
import { agentArgs, buildAgent, probeLine, ROOT, rows, runAgentOnce, scalar, tmpDir, waitFor } from './agent-support';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';

const S = 1_000_000_000n;
const W = 10n * S;
const T0 = ((BigInt(Date.UTC(2026, 0, 2)) * 1_000_000n) / W) * W;

async function counts(db: InfluxV1Target) {
  return {
    raw: await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`),
    weighted: await scalar(db, `SELECT sum(sample_weight) FROM ${MEASUREMENT.connect}`),
    hist: await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`),
    histPoints: await scalar(db, `SELECT count("count") FROM ${MEASUREMENT.connectHist}`),
  };
}

describeWith(missingInflux(), 'agent ingest correctness (--once) into InfluxDB 1.x', () => {
  let db: InfluxV1Target;
  let dir: string;
  beforeAll(() => buildAgent(), 120_000);
  beforeEach(async () => {
    db = await freshDatabase('ingest');
    dir = tmpDir('agent-ingest');
  });
  afterEach(async () => {
    await dropDatabase(db);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the same capture imported twice (with a rate limit, late events, repeated times) keeps the same counts in raw and histogram points', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 30_000; i++) {
      let ts = T0 + BigInt(i) * 1_000_000n; // 30 s, 1000/s
      if (i % 9 === 0) ts -= 3n * S;
      if (i % 1000 === 7) ts -= 45n * S; // beyond the old 30 s horizon
      if (i % 11 === 0) ts -= ts % 1_000_000n; // ms resolution, as text tools print: repeated times
      lines.push(probeLine({ tsNs: ts, latencyNs: 50_000 + (i % 97) * 10_000, comm: ['ruby', 'node'][i % 2], sport: 1024 + (i % 60000) }));
    }
    const file = path.join(dir, 'capture.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const args = (spool: string) => agentArgs(db, path.join(dir, spool), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '600']);
    const a = await runAgentOnce(args('spool-a'));
    expect(a.code).toBe(0);
    const first = await counts(db);
    expect(first.hist).toBe(30_000);
    expect(first.raw).toBeGreaterThan(10_000);
    expect(first.raw).toBeLessThan(30_000); // sampled: 600 per second of event time
    const b = await runAgentOnce(args('spool-b'));
    expect(b.code).toBe(0);
    expect(await counts(db)).toEqual(first);
  }, 180_000);

  test('an import killed (SIGKILL) half-way and run again ends with exactly the capture in InfluxDB', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 200_000; i++) lines.push(probeLine({ tsNs: T0 + BigInt(i) * 200_000n - (i % 13 === 0 ? 4n * S : 0n), sport: 1024 + (i % 60000), latencyNs: 40_000 + (i % 500) * 1000 }));
    const file = path.join(dir, 'big.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const args = agentArgs(db, path.join(dir, 'spool-kill'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '0']);
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'tcplat'), ...args], { cwd: ROOT, stdio: 'ignore', detached: true });
    const exited = new Promise((r) => child.on('close', r));
    // Kill it once InfluxDB has some of it, not all.
    await waitFor(async () => (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)) > 0, 120_000, 'the first points');
    process.kill(-child.pid!, 'SIGKILL');
    await exited;
    const partial = await counts(db);
    expect(partial.raw).toBeLessThan(200_000);
    const r = await runAgentOnce(args, 240_000);
    expect(r.code).toBe(0);
    expect(await counts(db)).toMatchObject({ raw: 200_000, hist: 200_000 });
  }, 400_000);

  test('late (60-140 s, across flushes) and duplicate-looking events each keep their raw point; duplicate-key lines are refused', async () => {
    const lines: string[] = [];
    const at = (i: number) => T0 + BigInt(i) * 1_000_000n; // event i at i ms: 220 s of event time
    for (let i = 0; i < 220_000; i++) {
      lines.push(probeLine({ tsNs: at(i), sport: 1 + (i % 60000) }));
      const j = i - 60_000 - (Math.floor(i / 1000) % 5) * 20_000;
      if (i % 1000 === 500 && j >= 0) {
        // Reported 60-140 s late, at the very time of an event printed long before, in the same series.
        lines.push(probeLine({ tsNs: at(j), sport: 61_000 + (i % 1000), pid: 9 }));
      }
      if (i % 5000 === 0) {
        // A line printed twice, and a distinct event that looks the same.
        lines.push(lines[lines.length - 1], probeLine({ tsNs: at(i), sport: 1 + (i % 60000), pid: 7 }));
      }
    }
    const events = lines.length;
    lines.push(probeLine({ tsNs: T0 + 5n }).replace(/\}$/, `,"ts_ns":${T0 + 7n}}`));
    lines.push(probeLine({ tsNs: T0 + 5n }).replace('{"type":"connect",', '{"type":"connect","ts_ns":1,'));
    const file = path.join(dir, 'late.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-late'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '0']), 240_000);
    expect(r.code).toBe(0);
    expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(events);
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(events);
    expect(r.stderr).toMatch(/"refused":\{"duplicate_key":2\}/);
    expect(r.stderr).toMatch(/key \\"ts_ns\\" appears twice/);
  }, 300_000);

  test('an over-long line (2 MiB, its tail a valid event) followed by a valid event: no phantom, counted once', async () => {
    const valid = probeLine({ tsNs: T0 + 2n * S, sport: 4242 });
    const tailEvent = probeLine({ tsNs: T0 + 3n * S, sport: 6666 });
    const long = '{"type":"connect","comm":"' + 'x'.repeat(2 << 20) + '"}' + tailEvent; // not JSON as a whole
    const file = path.join(dir, 'long.ndjson');
    fs.writeFileSync(file, [probeLine({ tsNs: T0 + S, sport: 1111 }), long, valid].join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-long'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(r.code).toBe(0);
    const got = await rows(db, `SELECT sport FROM ${MEASUREMENT.connect}`);
    expect(got.map((x) => x.sport).sort()).toEqual([1111, 4242]);
    expect(r.stderr).toMatch(/"lines":2,"parsed":2/);
  }, 60_000);

  test('a 900 KiB comm is stored with its service and comm tags capped at 256 bytes and a visible marker; nothing else changes', async () => {
    const huge = 'y'.repeat(900 << 10);
    const lines = [probeLine({ tsNs: T0 + 1n, sport: 1 }), probeLine({ tsNs: T0 + 2n, sport: 2, comm: huge }), probeLine({ tsNs: T0 + 3n, sport: 3 })];
    const file = path.join(dir, 'huge.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const spool = path.join(dir, 'spool-huge');
    const r = await runAgentOnce(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(r.code).toBe(0);
    const got = await rows(db, `SELECT sport, service, comm FROM ${MEASUREMENT.connect}`);
    expect(got).toHaveLength(3);
    const capped = got.find((x) => x.sport === 2)!;
    expect(Buffer.byteLength(capped.comm as string)).toBe(MAX_TAG_BYTES);
    expect(capped.comm).toMatch(/^y+…#[0-9a-f]{8}$/);
    expect(capped.service).toBe(capped.comm);
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(3);
    expect(fs.existsSync(path.join(spool, 'dead-letter.lp'))).toBe(false);
  }, 60_000);

  test('an import whose every line is refused exits 2 with a summary by reason and examples, not a line per refused line', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 600; i++) lines.push(i % 3 === 0 ? `{"type":"connect","ts_ns":${i}}` : `garbage ${i}`);
    lines.push('{"type":"bogus","ts_ns":5}');
    const file = path.join(dir, 'bad.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-bad'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(r.code).toBe(2);
    const logLines = r.stderr.split('\n').filter((l) => l.includes('dropped a source line'));
    expect(logLines.length).toBeLessThanOrEqual(2);
    expect(r.stderr).toMatch(/import failed: 601 of 601 lines refused, 0 parsed \(by reason: json 400, field 200, type 1; first examples: line 1 \(field\): field latency_ns/);
    expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(0);
  }, 60_000);

  test('an import that refuses most lines exits 2; one with a few refused lines exits 0 and says how many', async () => {
    const file = path.join(dir, 'mostly.ndjson');
    const good = Array.from({ length: 10 }, (_, i) => probeLine({ tsNs: T0 + BigInt(i), sport: i + 1 }));
    fs.writeFileSync(file, [...good, ...Array.from({ length: 11 }, () => 'nope')].join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-m1'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('11 of 21 lines refused, 10 parsed');
    fs.writeFileSync(file, [...good, 'nope'].join('\n') + '\n');
    const ok = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-m2'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/import: 1 lines refused \(by reason: json 1; first examples: line 11 \(json\)/);
  }, 60_000);
});
