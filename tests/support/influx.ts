/**
 * The real InfluxDB 1.x that `npm test` starts (scripts/test exports TCPLAT_TEST_INFLUX_URL).
 * Each suite gets its own database so suites cannot see each other's points.
 */
import crypto from 'node:crypto';
import { queryInfluxQL, quote, type InfluxV1Target, type InfluxV2Target } from '@tcplat/core';

export const TEST_INFLUX_URL = process.env.TCPLAT_TEST_INFLUX_URL ?? '';

export function missingInflux(): string | null {
  return TEST_INFLUX_URL ? null : 'no test InfluxDB: TCPLAT_TEST_INFLUX_URL is unset (run through npm test, which starts one)';
}

/** Create a fresh database and return a target for it. */
export async function freshDatabase(prefix = 'test'): Promise<InfluxV1Target> {
  const db = `${prefix}_${crypto.randomBytes(5).toString('hex')}`;
  const target: InfluxV1Target = { version: 1, url: TEST_INFLUX_URL, db };
  await queryInfluxQL({ ...target, db: '' }, `CREATE DATABASE ${quote('influxql-ident', db)}`, { method: 'POST' });
  return target;
}

export async function dropDatabase(t: InfluxV1Target): Promise<void> {
  await queryInfluxQL({ ...t, db: '' }, `DROP DATABASE ${quote('influxql-ident', t.db)}`, { method: 'POST' });
}

/** The real InfluxDB 2.x that `npm test` starts from scripts/influxdb2 (org and bucket "tcplat"). */
export const TEST_INFLUX2_URL = process.env.TCPLAT_TEST_INFLUX2_URL ?? '';
export const TEST_INFLUX2_TOKEN = process.env.TCPLAT_TEST_INFLUX2_TOKEN ?? '';
export const TEST_INFLUX2_ORG = 'tcplat';

export function missingInflux2(): string | null {
  return TEST_INFLUX2_URL && TEST_INFLUX2_TOKEN
    ? null
    : 'no test InfluxDB 2.x: TCPLAT_TEST_INFLUX2_URL/TOKEN are unset (run through npm test, which builds and starts one with scripts/influxdb2)';
}

/** Create a fresh bucket in the test org and return a v2 target for it. */
export async function freshBucket(prefix = 'test'): Promise<InfluxV2Target> {
  const headers = { Authorization: `Token ${TEST_INFLUX2_TOKEN}`, 'Content-Type': 'application/json' };
  const orgs = (await (await fetch(`${TEST_INFLUX2_URL}/api/v2/orgs?org=${TEST_INFLUX2_ORG}`, { headers })).json()) as { orgs: { id: string }[] };
  const bucket = `${prefix}_${crypto.randomBytes(5).toString('hex')}`;
  const res = await fetch(`${TEST_INFLUX2_URL}/api/v2/buckets`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ orgID: orgs.orgs[0].id, name: bucket, retentionRules: [] }),
  });
  if (res.status !== 201) throw new Error(`cannot create bucket ${bucket}: HTTP ${res.status} ${await res.text()}`);
  return { version: 2, url: TEST_INFLUX2_URL, org: TEST_INFLUX2_ORG, bucket, token: TEST_INFLUX2_TOKEN };
}
