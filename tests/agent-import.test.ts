/**
 * `tcplat agent --once` imports into the real InfluxDB 1.x of `npm test`: exact counts in raw points and
 * histograms, rate limiting by event time, BCC/libbpf-tools captures, malformed lines, unknown tool output,
 * hostile comm and destination values.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BUCKET_FIELDS, bucketIndex, MEASUREMENT, normalizeName, type InfluxV1Target } from '@tcplat/core';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';
import { agentArgs, buildAgent, probeLine, ROOT, rows, runAgentOnce, scalar, tmpDir } from './agent-support';

const FIX = path.join(ROOT, 'agent', 'src', 'parse', 'fixtures');
const W = 10_000_000_000n; // hist window, ns
const T0 = (BigInt(Date.UTC(2026, 0, 1)) * 1_000_000n / W) * W;

describeWith(missingInflux(), 'agent import (--once) into InfluxDB 1.x', () => {
  let db: InfluxV1Target;
  let dir: string;
  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-import');
  }, 120_000);
  beforeEach(async () => {
    db = await freshDatabase('agent');
  });
  afterEach(async () => {
    await dropDatabase(db);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('NDJSON capture: exact counts in tcp_connect and tcp_connect_hist, late events included', async () => {
    const lines: string[] = [];
    const expected = new Map<string, number>(); // service|result -> count
    const perWindow = new Map<bigint, number>();
    const bucketCounts = new Array<number>(BUCKET_FIELDS.length).fill(0);
    let n = 0;
    for (let i = 0; i < 3000; i++) {
      const service = ['ruby', 'node', 'postgres'][i % 3];
      const result = i % 10 === 0 ? 'refused' : 'ok';
      // 30 s of event time, printed in completion order: every 7th event is 2 s late (a slow attempt).
      let ts = T0 + BigInt(i) * 10_000_000n + 7n;
      if (i % 7 === 0) ts -= 2_000_000_000n;
      const latencyNs = result === 'refused' ? 50_000 : 200_000 + (i % 50) * 100_000;
      lines.push(probeLine({ tsNs: ts, latencyNs, result, errno: result === 'refused' ? 111 : 0, comm: service, sport: 10000 + i }));
      expected.set(`${service}|${result}`, (expected.get(`${service}|${result}`) ?? 0) + 1);
      const w = ts - (ts % W);
      perWindow.set(w, (perWindow.get(w) ?? 0) + 1);
      bucketCounts[bucketIndex(latencyNs / 1e6)]++;
      n++;
      if (i === 1500) lines.push('{"type":"connect","ts_ns":1}', 'not json at all', '', '{"type":"bogus","ts_ns":5}');
      if (i === 2000) lines.push('{"type":"stats","ts_ns":1767225600000000000,"events":2000,"dropped":0}');
    }
    const file = path.join(dir, 'capture.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const spool = path.join(dir, 'spool-ndjson');
    const r = await runAgentOnce(agentArgs(db, spool, ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once']));
    expect(r.stderr).toContain('"msg":"import done"');
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/dropped a source line \(line 1502\): field latency_ns/);
    expect(r.stderr).toMatch(/import: 3 lines refused \(by reason: field 1, json 1, type 1; first examples: line 1502 \(field\)/);
    expect(r.stderr).toContain('unknown event type \\"bogus\\"');

    const raw = await rows(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect} GROUP BY service, result`);
    expect(Object.fromEntries(raw.map((x) => [`${x.service}|${x.result}`, x.count]))).toEqual(Object.fromEntries(expected));
    expect(await scalar(db, `SELECT count(DISTINCT(sport)) FROM ${MEASUREMENT.connect}`)).toBe(n);
    expect(await scalar(db, `SELECT count(sample_weight) FROM ${MEASUREMENT.connect}`)).toBe(0);

    const hist = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} GROUP BY service, result`);
    expect(Object.fromEntries(hist.map((x) => [`${x.service}|${x.result}`, x.sum]))).toEqual(Object.fromEntries(expected));
    const windows = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} WHERE time >= ${T0 - W} AND time < ${T0 + 10n * W} GROUP BY time(10s) fill(none)`);
    expect(new Map(windows.map((x) => [BigInt(x.time as number), x.sum]))).toEqual(perWindow);
    const buckets = await rows(db, `SELECT ${BUCKET_FIELDS.map((f) => `sum("${f}") AS "${f}"`).join(', ')} FROM ${MEASUREMENT.connectHist}`);
    expect(BUCKET_FIELDS.map((f) => buckets[0][f])).toEqual(bucketCounts);
    // The spool is empty afterwards: everything reached InfluxDB.
    expect(fs.readdirSync(spool).filter((f) => f.endsWith('.spool'))).toEqual([]);
  }, 60_000);

  test('raw points are rate-limited per second of event time, with weights; histograms stay exact', async () => {
    const lines: string[] = [];
    for (let i = 0; i < 20_000; i++) lines.push(probeLine({ tsNs: T0 + BigInt(i) * 40_000n, sport: i % 60000 })); // 20k in 0.8 s
    for (let i = 0; i < 300; i++) lines.push(probeLine({ tsNs: T0 + 5n * 1_000_000_000n + BigInt(i) * 1_000_000n })); // 300 in another second
    const file = path.join(dir, 'dense.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-dense'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--raw-rate-limit', '1000']));
    expect(r.code).toBe(0);
    const perSecond = await rows(db, `SELECT count(latency_ms), sum(sample_weight) FROM ${MEASUREMENT.connect} WHERE time >= ${T0} AND time < ${T0 + W} GROUP BY time(1s) fill(none)`);
    expect(perSecond.map((x) => x.count)).toEqual([1000, 300]);
    expect(perSecond[0].sum).toBeCloseTo(20_000, 3);
    expect(perSecond[1].sum).toBeNull(); // not sampled: no weight field
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(20_300);
  }, 60_000);

  test('libbpf-tools captures: tcpstates -> tcp_connect, tcplife -> tcp_session (lifespan, never latency)', async () => {
    const a = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-states'), ['--source', 'tcpstates', '--source-cmd', `cat ${path.join(FIX, 'libbpf-tcpstates-T.txt')}`, '--once']));
    expect(a.code).toBe(0);
    const b = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-life'), ['--source', 'tcplife', '--source-cmd', `cat ${path.join(FIX, 'libbpf-tcplife-T.txt')}`, '--once']));
    expect(b.code).toBe(0);
    const connects = await rows(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect} GROUP BY dst, result`);
    expect(Object.fromEntries(connects.map((x) => [`${x.dst} ${x.result}`, x.count]))).toEqual({
      '127.0.0.1:47001 ok': 3,
      '[::1]:47002 ok': 1,
      '127.0.0.1:1 error': 1,
    });
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(5);
    const sessions = await rows(db, `SELECT lifespan_ms, tx_kb, rx_kb, comm, dst FROM ${MEASUREMENT.session}`);
    expect(sessions).toHaveLength(5);
    expect(sessions.map((s) => s.lifespan_ms).sort()).toEqual([0.02, 0.5, 20.83, 21.12, 22.12].sort());
    expect(await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.session}`)).toBe(0);
  }, 60_000);

  test('unknown tool output: one clear error naming the header, counted, exit 2 (nothing parsed), nothing written', async () => {
    const spool = path.join(dir, 'spool-unknown');
    const r = await runAgentOnce(agentArgs(db, spool, ['--source', 'tcplife', '--source-cmd', `cat ${path.join(FIX, 'libbpf-tcpstates.txt')}; echo 'Segmentation fault' >&2`, '--once']));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/import failed: \d+ of \d+ lines refused, 0 parsed \(by reason: unknown_format \d+/);
    const errs = r.stderr.split('\n').filter((l) => l.includes('dropped a source line') && l.includes('the header of tcpstates'));
    expect(errs).toHaveLength(1);
    expect(errs[0]).toContain('SKADDR');
    expect(r.stderr).toContain('Segmentation fault');
    expect(await rows(db, `SELECT * FROM ${MEASUREMENT.session}`)).toEqual([]);
  }, 60_000);

  test('hostile comm and destination values reach InfluxDB as normalised, unbroken tags', async () => {
    const hostile = ['a b,c=d', 'q"uo\\te\\', 'tab\tnew\nline', 'ünï ☃', 'x\u0001y', '=,\\ '];
    const cfg = path.join(dir, 'hostile.yaml');
    fs.writeFileSync(cfg, `destinations:\n  - '10.9.9.9:443 -> db, "primary"=x\\ y'\n`);
    const lines = hostile.map((comm, i) => probeLine({ tsNs: T0 + BigInt(i), comm, daddr: i === 0 ? '10.9.9.9' : '10.0.0.5', dport: i === 0 ? 443 : 5432 }));
    const file = path.join(dir, 'hostile.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const r = await runAgentOnce(agentArgs(db, path.join(dir, 'spool-hostile'), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--config', cfg]));
    expect(r.code).toBe(0);
    const got = await rows(db, `SELECT latency_ms, comm, service, dst FROM ${MEASUREMENT.connect}`);
    expect(got.map((x) => x.comm).sort()).toEqual(hostile.map(normalizeName).sort());
    expect(got.every((x) => x.service === x.comm)).toBe(true);
    expect(got.find((x) => x.comm === normalizeName(hostile[0]))!.dst).toBe(normalizeName('db, "primary"=x\\ y'));
    expect(await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(hostile.length);
  }, 60_000);
});
