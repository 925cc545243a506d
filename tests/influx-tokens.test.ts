/**
 * deploy/compose/influx-tokens.mjs (compose's influxdb-tokens init step) against the real InfluxDB 2.x:
 * it creates the rollup bucket (400 d); the agent's token writes through the agent's own write code and
 * makes the rollups with the agent's own rollup engine (read the bucket, read+write the rollup bucket), and
 * can do nothing else; Grafana's and the renderer's tokens read both buckets and cannot write, delete or
 * make tokens; a re-run keeps valid tokens and replaces a broken one, leaving one token per service.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MEASUREMENT, queryFlux, ROLLUP_BUCKET_SUFFIX, rollupMeasurement, writeLines, type InfluxV2Target } from '@tcplat/core';
import { rollupRange, rollupStore } from '../agent/src/rollup/engine';
import { freshBucket, missingInflux2, TEST_INFLUX2_TOKEN, TEST_INFLUX2_URL } from './support/influx';
import { describeWith } from './support/prereq';

const SCRIPT = path.resolve(__dirname, '../deploy/compose/influx-tokens.mjs');

describeWith(missingInflux2(), 'influx-tokens.mjs: scoped tokens from the operator token (InfluxDB 2.x)', () => {
  jest.setTimeout(120_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-tokens-'));
  let bucket: InfluxV2Target;
  const file = (name: string) => path.join(dir, name, 'influx-token');
  const token = (name: string) => fs.readFileSync(file(name), 'utf8');

  function run(env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
    fs.writeFileSync(path.join(dir, 'operator'), `${TEST_INFLUX2_TOKEN}\n`, { mode: 0o600 });
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [SCRIPT],
        {
          env: {
            PATH: process.env.PATH ?? '',
            INFLUX_URL: TEST_INFLUX2_URL,
            INFLUX_ORG: bucket.org,
            INFLUX_BUCKET: bucket.bucket,
            INFLUX_OPERATOR_TOKEN_FILE: path.join(dir, 'operator'),
            TCPLAT_TOKENS: `agent=write:${file('agent')},grafana=read:${file('grafana')},renderer=read:${file('renderer')}`,
            ...env,
          },
          timeout: 60_000,
        },
        (err, _out, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
  }
  const api = (tok: string, method: string, p: string, body?: string) =>
    fetch(`${TEST_INFLUX2_URL}${p}`, { method, headers: { Authorization: `Token ${tok}`, 'Content-Type': 'application/json' }, body });
  const flux = () => `from(bucket: "${bucket.bucket}") |> range(start: -1h) |> last()`;

  let orgID = '';
  /** A valid request for a new all-buckets read token: refused for what it asks, not for its shape. */
  const newToken = () => JSON.stringify({ orgID, description: 'should not exist', permissions: [{ action: 'read', resource: { type: 'buckets', orgID } }] });
  beforeAll(async () => {
    bucket = await freshBucket('tokens');
    orgID = ((await (await api(TEST_INFLUX2_TOKEN, 'GET', `/api/v2/orgs?org=${bucket.org}`)).json()) as { orgs: { id: string }[] }).orgs[0].id;
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  // InfluxDB 2.x ties /api/v2/delete to write permission on the bucket: no token can write without
  // being able to delete in that bucket. What the agent's token cannot do is touch any other bucket or
  // make tokens. It reads its bucket since the rollups are made from the database (issue 14).
  test('creates the rollup bucket and the three tokens, files mode 0400; the agent writes with its own write code and makes rollups with its own engine, and cannot touch another bucket or make tokens', async () => {
    const r = await run();
    expect([r.code, r.stderr]).toEqual([0, expect.stringMatching(new RegExp(`created rollup bucket \\S+${ROLLUP_BUCKET_SUFFIX} .*retention 400 d.*agent: new write token.*grafana: new read token.*renderer: new read token`, 's'))]);
    const made = (await (await api(TEST_INFLUX2_TOKEN, 'GET', `/api/v2/buckets?org=${bucket.org}&name=${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}`)).json()) as { buckets: { retentionRules: { everySeconds: number }[] }[] };
    expect(made.buckets[0].retentionRules[0].everySeconds).toBe(400 * 86_400);
    for (const n of ['agent', 'grafana', 'renderer']) expect((fs.statSync(file(n)).mode & 0o777).toString(8)).toBe('400');
    const agent = { ...bucket, token: token('agent') };
    const now = Math.floor(Date.now() / 60_000) * 60_000 - 120_000;
    await writeLines(agent, `tcp_connect_hist,dst=pg:5432,host=h1,result=ok,service=api count=3i,sum_ms=4.5,min_ms=1,max_ms=2,syn_retrans=0i ${now + 10_000}000000\n`);
    // The agent's live job, with the agent's token: reads the 10 s data, writes and reads the rollups.
    const r1 = await rollupRange({ store: rollupStore(agent), fromMs: now, toMs: now + 60_000, host: 'h1' });
    expect(r1.levels.map((l) => l.points)).toEqual([1, 1, 1]);
    expect(await queryFlux({ ...agent, bucket: `${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}` }, `from(bucket: "${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}") |> range(start: -1d) |> filter(fn: (r) => r._measurement == "${rollupMeasurement(MEASUREMENT.connectHist, '1h')}" and r._field == "count")`)).toMatch(/,3,count,/);
    const other = await freshBucket('tokens_other');
    expect([401, 403, 404]).toContain((await api(agent.token, 'POST', `/api/v2/delete?org=${bucket.org}&bucket=${other.bucket}`, JSON.stringify({ start: '1970-01-01T00:00:00Z', stop: '2100-01-01T00:00:00Z' }))).status);
    await expect(writeLines({ ...other, token: agent.token }, `m v=1 ${Date.now()}000000\n`)).rejects.toThrow(/HTTP (401|403|404)/);
    expect([401, 403]).toContain((await api(agent.token, 'POST', '/api/v2/authorizations', newToken())).status);
  });

  test("Grafana's and the renderer's tokens read the agent's point and cannot write, delete or make tokens", async () => {
    for (const n of ['grafana', 'renderer']) {
      const t = { ...bucket, token: token(n) };
      expect(await queryFlux(t, flux())).toMatch(/,3,count,tcp_connect_hist,/);
      expect(await queryFlux({ ...t, bucket: `${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}` }, `from(bucket: "${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}") |> range(start: -1d) |> filter(fn: (r) => r._field == "count") |> last()`)).toMatch(new RegExp(`,3,count,${rollupMeasurement(MEASUREMENT.connectHist, '1m')},`));
      await expect(writeLines(t, `m v=1 ${Date.now()}000000\n`)).rejects.toThrow();
      await expect(writeLines({ ...t, bucket: `${bucket.bucket}${ROLLUP_BUCKET_SUFFIX}` }, `m v=1 ${Date.now()}000000\n`)).rejects.toThrow();
      expect([401, 403, 404]).toContain((await api(t.token, 'POST', `/api/v2/delete?org=${bucket.org}&bucket=${bucket.bucket}`, JSON.stringify({ start: '1970-01-01T00:00:00Z', stop: '2100-01-01T00:00:00Z' }))).status);
      expect([401, 403]).toContain((await api(t.token, 'POST', '/api/v2/authorizations', newToken())).status);
    }
    expect(await queryFlux({ ...bucket, token: token('grafana') }, flux())).toMatch(/,3,count,tcp_connect_hist,/);
  });

  test('a re-run keeps valid tokens; a broken token file is replaced and the old token deleted', async () => {
    const before = { agent: token('agent'), grafana: token('grafana'), renderer: token('renderer') };
    const again = await run();
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/agent: keeping/);
    expect({ agent: token('agent'), grafana: token('grafana'), renderer: token('renderer') }).toEqual(before);
    fs.chmodSync(file('grafana'), 0o600);
    fs.writeFileSync(file('grafana'), 'not-a-token');
    const fixed = await run();
    expect(fixed.stderr).toMatch(/grafana: new read token/);
    expect(token('grafana')).not.toBe(before.grafana);
    expect(token('agent')).toBe(before.agent);
    const all = (await (await api(TEST_INFLUX2_TOKEN, 'GET', '/api/v2/authorizations')).json()) as { authorizations: { description: string }[] };
    expect(all.authorizations.filter((a) => a.description === `tcplat grafana: read ${bucket.bucket}`)).toHaveLength(1);
  });

  test('a wrong operator token fails with InfluxDB’s answer, and writes no file', async () => {
    const other = path.join(dir, 'other');
    const r = await run({ INFLUX_OPERATOR_TOKEN_FILE: path.join(dir, 'nope'), TCPLAT_TOKENS: `agent=write:${other}/t` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot read INFLUX_OPERATOR_TOKEN_FILE/);
    fs.writeFileSync(path.join(dir, 'bad'), 'wrong');
    const r2 = await run({ INFLUX_OPERATOR_TOKEN: '', INFLUX_OPERATOR_TOKEN_FILE: path.join(dir, 'bad'), TCPLAT_TOKENS: `agent=write:${other}/t` });
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/HTTP 401/);
    expect(fs.existsSync(other)).toBe(false);
  });
});
