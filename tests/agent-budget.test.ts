/**
 * The cardinality budget (issue 14) through the real agent into the real InfluxDB 1.x: a client that meets
 * far more destinations than `--max-series` leaves at most the budget plus a few `other` series per
 * measurement in InfluxDB, its histograms still count every event, /api/status names it as the top
 * contributor, /metrics counts the folded points, and the log says it once for the burst.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { MEASUREMENT, quote, RESULTS, type InfluxV1Target } from '@tcplat/core';
import { dropDatabase, freshDatabase, missingInflux } from './support/influx';
import { describeWith } from './support/prereq';
import { agentArgs, buildAgent, probeLine, ROOT, rows, runAgentOnce, scalar, startAgent, tmpDir, waitFor, type RunningAgent } from './agent-support';

const W = 10_000_000_000n;
const T0 = (BigInt(Date.UTC(2026, 0, 2)) * 1_000_000n / W) * W;
const BUDGET = 100;

interface BudgetStatus {
  max_series: number;
  measurements: Record<string, { budget: number; live: number; other: number; folded_series: number; folded_points: { dst: number; all: number }; top: Record<string, { value: string; series: number; folded: number }[]> }>;
}

function runTopOnce(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(ROOT, 'bin', 'tcplat'), 'top', '--once', '--agent', url], { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`tcplat top failed: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** Series keys of a measurement, as InfluxDB lists them (`SHOW SERIES`). */
async function seriesKeys(db: InfluxV1Target, measurement: string): Promise<string[]> {
  return (await rows(db, `SHOW SERIES FROM ${quote('influxql-ident', measurement)}`)).map((r) => String(r.key));
}

describeWith(missingInflux(), 'cardinality budget: a real agent into InfluxDB 1.x', () => {
  let db: InfluxV1Target;
  let dir: string;
  let agent: RunningAgent | null = null;
  beforeAll(async () => {
    buildAgent();
    dir = tmpDir('agent-budget');
    db = await freshDatabase('budget');
  }, 120_000);
  afterAll(async () => {
    if (agent) await agent.kill9();
    await dropDatabase(db);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('1,000 destinations against --max-series 100: series within the budget plus `other`, every event counted, the crawler named', async () => {
    const lines: string[] = [];
    const byResult = new Map<string, number>();
    // File order is event-time order, so the raw points are admitted in this order: the first BUDGET
    // distinct tag sets keep their own series, the rest fold (the budget sticks while a series is live).
    const rawSeen = new Set<string>();
    let rawFolded = 0;
    let n = 0;
    for (let i = 0; i < 1200; i++) {
      const rails = i % 6 === 0;
      const result = !rails && i % 10 === 3 ? 'refused' : 'ok';
      const daddr = rails ? `10.0.0.${1 + (i % 4)}` : `198.51.${(i >> 8) & 255}.${i & 255}`;
      const dport = rails ? 5432 : 443;
      const comm = rails ? 'ruby' : 'python3';
      lines.push(probeLine({ tsNs: T0 + BigInt(i) * 5_000_000n, comm, daddr, dport, result, errno: result === 'refused' ? 111 : 0, latencyNs: 100_000 + i * 1000, sport: 20000 + i }));
      byResult.set(result, (byResult.get(result) ?? 0) + 1);
      const key = `${comm}|${daddr}:${dport}|${result}`;
      if (!rawSeen.has(key)) {
        if (rawSeen.size < BUDGET) rawSeen.add(key);
        else rawFolded++;
      }
      n++;
    }
    const file = path.join(dir, 'scan.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    // A live agent (not --once) so that its API can be read; the source stays up after the capture.
    agent = await startAgent(agentArgs(db, path.join(dir, 'spool'), ['--source', 'ndjson', '--source-cmd', `cat ${file}; exec sleep 600`, '--max-series', String(BUDGET)]));
    const a = agent;
    await waitFor(async () => (await scalar(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)) === n && (await scalar(db, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)) === n, 60_000, 'every event in InfluxDB');

    // Histograms stay exact: per result (never folded) and in all.
    const hist = await rows(db, `SELECT sum("count") FROM ${MEASUREMENT.connectHist} GROUP BY result`);
    expect(Object.fromEntries(hist.map((r) => [r.result, r.sum]))).toEqual(Object.fromEntries(byResult));
    expect(await scalar(db, `SELECT count(DISTINCT(sport)) FROM ${MEASUREMENT.connect}`)).toBe(n);

    // Series in InfluxDB: exactly the budget under their own tags, plus a few `other` series.
    for (const m of [MEASUREMENT.connectHist, MEASUREMENT.connect]) {
      const keys = await seriesKeys(db, m);
      const other = keys.filter((k) => /(^|,)(dst|service|comm)=other(,|$)/.test(k));
      expect(keys.length - other.length).toBe(BUDGET);
      expect(other.length).toBeGreaterThan(0);
      expect(other.length).toBeLessThanOrEqual(Math.ceil(BUDGET / 10) + RESULTS.length * 2);
      // dst folded first: the services are still told apart in the `other` series.
      expect(other.some((k) => k.includes('service=python3') && k.includes('dst=other'))).toBe(true);
    }

    // /api/status: the budget, live series and the top contributor (the crawler, comm python3).
    const status = (await a.status()) as unknown as { series: BudgetStatus };
    const h = status.series.measurements[MEASUREMENT.connectHist];
    expect(status.series.max_series).toBe(BUDGET);
    expect(h).toMatchObject({ budget: BUDGET, live: BUDGET });
    // Folded series are remembered up to 4x the budget (bounded memory); the rest are decided afresh.
    expect(h.folded_series).toBe(4 * BUDGET);
    expect(h.top.service[0].value).toBe('python3');
    expect(h.top.service[0].series).toBeGreaterThan(4 * BUDGET);
    expect(status.series.measurements[MEASUREMENT.connect].top.comm[0].value).toBe('python3');

    // /metrics: folded raw points, exactly the events beyond the first BUDGET tag sets.
    const metrics = await (await fetch(`${a.url}/metrics`)).text();
    expect(metrics).toContain(`tcplat_series_folded_total{measurement="${MEASUREMENT.connect}",reason="dst"} ${rawFolded}`);
    expect(Number(/tcplat_series_folded_total\{measurement="tcp_connect_hist",reason="dst"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(metrics).toContain(`tcplat_series_live{measurement="${MEASUREMENT.connectHist}"} ${BUDGET}`);

    // tcplat top says the budget folds series, naming the top contributor.
    const top = await runTopOnce(a.url);
    expect(top).toMatch(/! series budget full, new series written as 'other': tcp_connect_hist 100\/100 .*top \w+=python3/);

    // The log: one line for the burst (counts of the rest follow in at most one summary, at the stop).
    expect(await a.stop()).toBe(0);
    agent = null;
    const logLines = a.stderr().split('\n').filter((l) => l.includes('folded'));
    const heads = logLines.filter((l) => l.includes('reach the budget'));
    expect(heads).toHaveLength(1);
    expect(heads[0]).toMatch(/"level":40/);
    expect(heads[0]).toMatch(/--max-series 100/);
    expect(heads[0]).toMatch(/top contributors: .*python3/);
    expect(logLines.length - heads.length).toBeLessThanOrEqual(1);
  }, 120_000);

  test('an import (--once) folds the same way every time: importing it again overwrites instead of adding up', async () => {
    const db2 = await freshDatabase('budget_import');
    try {
      const lines: string[] = [];
      for (let i = 0; i < 2000; i++) lines.push(probeLine({ tsNs: T0 + BigInt(i) * 3_000_000n, comm: 'curl', daddr: `203.0.${(i >> 8) & 255}.${i & 255}`, dport: 80, sport: 30000 + i }));
      const file = path.join(dir, 'import.ndjson');
      fs.writeFileSync(file, lines.join('\n') + '\n');
      for (const run of [1, 2]) {
        const r = await runAgentOnce(agentArgs(db2, path.join(dir, `spool-import-${run}`), ['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once', '--max-series', '50']));
        expect(r.code).toBe(0);
        expect(r.stderr.split('\n').filter((l) => l.includes('reach the budget'))).toHaveLength(1);
        // The import's summary counts the points written folded (raw and histogram).
        expect(Number(/"seriesFolded":(\d+).*"msg":"import done"/.exec(r.stderr)?.[1])).toBeGreaterThan(1900);
      }
      expect(await scalar(db2, `SELECT sum("count") FROM ${MEASUREMENT.connectHist}`)).toBe(2000);
      expect(await scalar(db2, `SELECT count(latency_ms) FROM ${MEASUREMENT.connect}`)).toBe(2000);
      const keys = await seriesKeys(db2, MEASUREMENT.connectHist);
      expect(keys.filter((k) => !k.includes('=other')).length).toBe(50);
      expect(keys.filter((k) => k.includes('dst=other'))).toEqual([`${MEASUREMENT.connectHist},dst=other,host=testhost,result=ok,service=curl`]);
    } finally {
      await dropDatabase(db2);
    }
  }, 120_000);
});
