/**
 * The real InfluxDB 1.x that `npm test` starts (scripts/test exports TCPLAT_TEST_INFLUX_URL).
 * Each suite gets its own database so suites cannot see each other's points.
 */
import crypto from 'node:crypto';
import { queryInfluxQL, quote, type InfluxV1Target } from '@tcplat/core';

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
