/**
 * The production dialect on a real InfluxDB 2.x (built by scripts/influxdb2, started by npm test):
 * line protocol through /api/v2/write, the Flux histogram query against the InfluxQL one on the same data,
 * hostile filter values, and the renderer drawing from Flux.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  buildFluxHistQuery,
  CONNECT_FIELD,
  HIST_FIELD,
  MEASUREMENT,
  buildInfluxQLHistQuery,
  encodePoints,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  int,
  loadConfig,
  normalizeName,
  queryFlux,
  queryInfluxQL,
  quote,
  writeLines,
  type HistQuery,
  type HistRow,
  type InfluxV1Target,
  type InfluxV2Target,
} from '@tcplat/core';
import { buildApp } from '../renderer/src/app';
import { influxSource } from '../renderer/src/data';
import { RENDERER_OPTIONS, rendererConfig } from '../renderer/src/config';
import { HOSTILE } from './support/hostile';
import { buildAgent, probeLine, runAgentOnce, tmpDir } from './agent-support';
import { colourMass, decodePng, seedPoints } from './renderer-support';
import { dropDatabase, freshBucket, freshDatabase, missingInflux, missingInflux2 } from './support/influx';
import { fluxRows } from './support/flux';
import { describeWith } from './support/prereq';

const NOW = Date.UTC(2025, 10, 25, 12, 0, 0);
const FROM = NOW - 3_600_000;

function missing(): string | null {
  return missingInflux2() ?? missingInflux();
}

/** Flux rows keyed by column name. */
async function fluxRecords(t: InfluxV2Target, flux: string): Promise<Record<string, string>[]> {
  return fluxRows(await queryFlux(t, flux));
}

/** Rows in a canonical order: by time, then by the group's tag values in a fixed key order. */
function sortRows(rows: HistRow[]): HistRow[] {
  const key = (r: HistRow) => JSON.stringify(Object.keys(r.tags).sort().map((k) => r.tags[k]));
  return [...rows].sort((a, b) => a.timeMs - b.timeMs || key(a).localeCompare(key(b)));
}

describeWith(missing(), 'InfluxDB 2.x with Flux (real server)', () => {
  let v2: InfluxV2Target;
  let v1: InfluxV1Target;

  beforeAll(async () => {
    v2 = await freshBucket('flux');
    v1 = await freshDatabase('flux');
    const points = seedPoints(
      [
        { service: 'nest', dst: 'pg:5432', host: 'h1', perWindow: 20, latency: (i) => 0.15 + 0.01 * (i % 10) },
        { service: 'nest', dst: 'pg:5432', host: 'h2', perWindow: 5, latency: (i) => 0.3 + i },
        { service: 'rails', dst: 'pg:5432', host: 'h1', perWindow: 10, latency: (i) => 1010 + i * 5 },
        { service: 'rails', dst: 'pg:5432', host: 'h1', result: 'refused', perWindow: 2, latency: () => 0.04 },
        { service: "evil' OR 1=1 --", dst: 'x") |> drop() //:1', host: 'h1', perWindow: 3, latency: () => 7 },
        { service: 'cron', dst: 'pg:5432', host: '', perWindow: 1, latency: () => 2 }, // written without a host tag
      ],
      FROM,
      NOW,
      10_000,
      true,
    );
    const body = encodePoints(points);
    await writeLines(v2, body);
    await writeLines(v1, body);
  });

  afterAll(async () => {
    if (v1) await dropDatabase(v1);
  });

  test('the v2 writer path: every hostile value written through the encoder reads back from Flux', async () => {
    const points = HOSTILE.map((v, i) => ({
      measurement: 'roundtrip',
      tags: { case: String(i), hostile: v },
      fields: { text: v, n: int(i) },
      timeNs: BigInt(NOW) * 1_000_000n + BigInt(i),
    }));
    await writeLines(v2, encodePoints(points));
    const flux = `from(bucket: ${quote('flux-string', v2.bucket)})
  |> range(start: ${new Date(NOW - 1000).toISOString()}, stop: ${new Date(NOW + 1000).toISOString()})
  |> filter(fn: (r) => r._measurement == "roundtrip" and r._field == "n")
  |> group()`;
    const rows = await fluxRecords(v2, flux);
    expect(rows).toHaveLength(HOSTILE.length);
    // Exact values: look each one up by its escaped tag value rather than parsing CSV by hand.
    for (const [i, v] of HOSTILE.entries()) {
      const stored = normalizeName(v);
      const q = `from(bucket: ${quote('flux-string', v2.bucket)})
  |> range(start: ${new Date(NOW - 1000).toISOString()}, stop: ${new Date(NOW + 1000).toISOString()})
  |> filter(fn: (r) => r._measurement == "roundtrip" and r._field == "n" and r.hostile == ${quote('flux-string', stored)})
  |> keep(columns: ["_value", "case"])`;
      const got = await fluxRecords(v2, q);
      expect(got.map((r) => [r.case, r._value])).toEqual([[String(i), String(i)]]);
    }
  });

  test.each([
    ['everything summed', {}, []],
    ['grouped by service and host', {}, ['service', 'host']],
    ['filtered to one service, grouped by result', { service: ['rails'] }, ['result']],
    ['filtered by two hosts', { host: ['h1', 'h2'], service: ['nest'] }, []],
    ['filtered to series without a host ("" = no such tag, in both dialects)', { host: [''] }, ['service']],
    ['filtered to an empty or a real host', { host: ['', 'h2'] }, ['service', 'host']],
  ] as const)('Flux and InfluxQL give the same histogram rows: %s', async (_name, filters, groupBy) => {
    const q: HistQuery = { fromMs: FROM, toMs: NOW, windowMs: 60_000, metrics: ['buckets', 'count', 'sum', 'min', 'max', 'synRetrans'], filters, groupBy };
    const flux = sortRows(histRowsFromFluxCsv(await queryFlux(v2, buildFluxHistQuery(q, { bucket: v2.bucket })), groupBy));
    const [series] = await queryInfluxQL(v1, buildInfluxQLHistQuery(q), { method: 'POST' });
    const iql = sortRows(histRowsFromInfluxQL(series, groupBy));
    expect(flux.length).toBeGreaterThan(0);
    expect(flux.length).toBe(iql.length);
    for (let i = 0; i < flux.length; i++) {
      expect(flux[i].timeMs).toBe(iql[i].timeMs);
      expect(flux[i].tags).toEqual(iql[i].tags);
      expect(Object.keys(flux[i].values).sort()).toEqual(Object.keys(iql[i].values).sort());
      for (const [k, v] of Object.entries(iql[i].values)) expect(flux[i].values[k]).toBeCloseTo(v, 6);
    }
    // The counts are exact: 60 s bins of six 10 s windows, each with the late extra point.
    const total = flux.reduce((a, r) => a + (r.values.count ?? 0), 0);
    expect(total).toBe(iql.reduce((a, r) => a + (r.values.count ?? 0), 0));
  });

  test('hostile filter values are inert in Flux: exact match or nothing, never an error, data intact', async () => {
    const q = (service: string): HistQuery => ({ fromMs: FROM, toMs: NOW, windowMs: 3_600_000, metrics: ['count'], filters: { service: [service] } });
    const evil = histRowsFromFluxCsv(await queryFlux(v2, buildFluxHistQuery(q("evil' OR 1=1 --"), { bucket: v2.bucket })));
    expect(evil.reduce((a, r) => a + r.values.count, 0)).toBe(360 * 4);
    for (const v of ['"', '\\', '") |> drop() //', '${v2.bucket}', 'rails" or r.service != "', '|> yield()', 'nest\\" or true or \\"']) {
      const rows = histRowsFromFluxCsv(await queryFlux(v2, buildFluxHistQuery(q(v), { bucket: v2.bucket })));
      expect(rows).toEqual([]);
    }
    const all = histRowsFromFluxCsv(await queryFlux(v2, buildFluxHistQuery({ ...q('nest'), filters: {} }, { bucket: v2.bucket })));
    // 360 windows x (20+1 + 5+1 + 10+1 + 2+1 + 3+1 + 1+1) connects.
    expect(all.reduce((a, r) => a + r.values.count, 0)).toBe(360 * 47);
  });

  test("the renderer's narrowed bucket reads over Flux: the rows of one Flux query of every field, and of InfluxQL", async () => {
    // Own bucket and database: a series without a host tag and ranges far apart (several bucket queries).
    const b2 = await freshBucket('fluxnarrow');
    const b1 = await freshDatabase('fluxnarrow');
    try {
      const body = encodePoints(
        seedPoints(
          [
            { service: 'rails', dst: 'pg:5432', host: 'h1', perWindow: 10, latency: (i, w) => ((i + w) % 7 === 0 ? 1020 : 0.3 + 0.01 * i) },
            { service: 'rails', dst: 'redis:6379', host: 'h2', perWindow: 8, latency: (i) => 0.06 + 0.001 * i },
            { service: 'rails', dst: 'redis:6379', host: '', perWindow: 3, latency: () => 4 },
            { service: 'rails', dst: 'pg:5432', host: 'h1', result: 'refused', perWindow: 1, latency: () => 0.04 },
            { service: "evil' OR 1=1 --", dst: 'x") |> drop() //:1', host: 'h"1', perWindow: 2, latency: (i, w) => 0.5 * 1.01 ** w },
          ],
          FROM,
          NOW,
          10_000,
          true,
        ),
      );
      await writeLines(b2, body);
      await writeLines(b1, body);
      const flux = influxSource(b2, 20_000);
      const iql = influxSource(b1, 20_000);
      const canon = (rows: HistRow[]) =>
        sortRows(rows)
          .map((r) => ({ ...r, values: Object.fromEntries(Object.entries(r.values).filter(([k, v]) => !(k.startsWith('le_') && v === 0))) }))
          .filter((r) => Object.keys(r.values).length > 0);
      for (const [filters, groupBy] of [
        [{ service: ['rails'] }, []],
        [{}, ['dst', 'result']],
        [{ service: ["evil' OR 1=1 --"] }, ['host']],
      ] as const) {
        const q: HistQuery = { fromMs: FROM, toMs: NOW, windowMs: 300_000, metrics: ['buckets', 'count', 'min', 'max'], filters, groupBy };
        const got = await flux.query(q);
        const one = histRowsFromFluxCsv(await queryFlux(b2, buildFluxHistQuery(q, { bucket: b2.bucket })), groupBy);
        expect(got.length).toBeGreaterThan(0);
        // Sums of integers, min and max: exact, not close.
        expect(canon(got)).toEqual(canon(one));
        expect(canon(got)).toEqual(canon(await iql.query(q)));
      }
    } finally {
      await dropDatabase(b1);
    }
  }, 120_000); // many queries against a real server: slow on a loaded 2-core machine

  test('the renderer draws heatmaps from Flux: slow service higher than the fast one', async () => {
    const { values } = loadConfig(
      RENDERER_OPTIONS,
      ['--influx-url', v2.url, '--influx-org', v2.org, '--influx-bucket', v2.bucket, '--influx-token', v2.token, '--log-level', 'silent'],
      {},
    );
    const app = await buildApp({ config: rendererConfig(values), now: () => NOW });
    try {
      const base = await app.listen({ host: '127.0.0.1', port: 0 });
      const w = 720;
      const h = 360;
      const get = async (qs: string) => {
        const r = await fetch(`${base}/render/heatmap.png?from=${FROM}&to=${NOW}&width=${w}&height=${h}&${qs}`);
        return { status: r.status, noData: r.headers.get('x-tcplat-no-data'), img: Buffer.from(await r.arrayBuffer()) };
      };
      const slow = await get('service=rails&result=ok');
      const fast = await get('service=nest');
      expect([slow.status, fast.status]).toEqual([200, 200]);
      expect([slow.noData, fast.noData]).toEqual([null, null]);
      const box = { left: 90, right: w - 100, top: 46, bottom: h - 42 };
      const sm = colourMass(decodePng(slow.img), box);
      const fm = colourMass(decodePng(fast.img), box);
      expect(sm.count).toBeGreaterThan(500);
      expect(fm.count).toBeGreaterThan(500);
      expect(sm.meanRow).toBeLessThan(fm.meanRow - 0.3 * (box.bottom - box.top));
      const none = await get('service=nobody');
      expect(none.status).toBe(200);
      expect(none.noData).not.toBeNull();
    } finally {
      await app.close();
    }
  }, 120_000); // many queries against a real server: slow on a loaded 2-core machine
});

describeWith(missingInflux2(), 'agent v2 writer into the real InfluxDB 2.x', () => {
  let dir: string;
  beforeAll(() => {
    buildAgent();
    dir = tmpDir('agent-v2');
  }, 120_000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('an import with --once writes exact raw and histogram counts through /api/v2/write (gzip, token from a file)', async () => {
    const bucket = await freshBucket('agentv2');
    const W = 10_000_000_000n;
    const t0 = (BigInt(NOW - 600_000) * 1_000_000n / W) * W;
    const lines: string[] = [];
    const expected = new Map<string, number>();
    for (let i = 0; i < 6000; i++) {
      const comm = ['ruby', 'node', "evil\" |> drop()"][i % 3];
      const result = i % 8 === 0 ? 'refused' : 'ok';
      // 60 s of event time; every 5th event is reported 2 s late, after later ones.
      let ts = t0 + BigInt(i) * 10_000_000n;
      if (i % 5 === 0) ts -= 2_000_000_000n;
      lines.push(probeLine({ tsNs: ts, latencyNs: result === 'ok' ? 300_000 + i * 10 : 40_000, result, errno: result === 'ok' ? 0 : 111, comm, sport: 1024 + (i % 60000) }));
      expected.set(`${comm}|${result}`, (expected.get(`${comm}|${result}`) ?? 0) + 1);
    }
    const file = path.join(dir, 'capture.ndjson');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, bucket.token + '\n', { mode: 0o600 });
    const r = await runAgentOnce([
      'agent',
      ...['--influx-url', bucket.url, '--influx-org', bucket.org, '--influx-bucket', bucket.bucket, '--influx-token-file', tokenFile],
      ...['--spool-dir', path.join(dir, 'spool'), '--listen', '127.0.0.1:0', '--host', 'v2-test', '--log-level', 'info'],
      ...['--source', 'ndjson', '--source-cmd', `cat ${file}`, '--once'],
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain(bucket.token); // the token never reaches the logs

    const range = `range(start: ${new Date(NOW - 3_600_000).toISOString()}, stop: ${new Date(NOW).toISOString()})`;
    const counts = async (measurement: string, field: string, fn: 'count' | 'sum') => {
      const csv = await queryFlux(
        bucket,
        `from(bucket: ${quote('flux-string', bucket.bucket)}) |> ${range}
  |> filter(fn: (r) => r._measurement == ${quote('flux-string', measurement)} and r._field == ${quote('flux-string', field)})
  |> group(columns: ["service", "result"]) |> ${fn}()
  |> map(fn: (r) => ({r with _value: float(v: r._value)}))
  |> keep(columns: ["service", "result", "_value"])`,
      );
      const out = new Map<string, number>();
      for (const row of fluxRows(csv)) out.set(`${row.service}|${row.result}`, Number(row._value));
      return out;
    };
    expect(await counts(MEASUREMENT.connect, CONNECT_FIELD.latencyMs, 'count')).toEqual(expected);
    expect(await counts(MEASUREMENT.connectHist, HIST_FIELD.count, 'sum')).toEqual(expected);
  }, 120_000);
});
