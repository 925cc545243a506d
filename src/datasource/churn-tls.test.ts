/**
 * Issues 15 and 16: the churn and TLS metrics of the datasource on the real InfluxDB 1.x (InfluxQL) and
 * 2.x (Flux), through the stand-in for Grafana's proxy (tests/support/datasource-backend.ts). Known
 * points in the agent's schema (pkg/core histPoint / sessionHistPoint) for one minute, and the values a
 * user reads off the panel: 30 connections of 50 ms and 10 of 5 s closed in 60 s, 40 new ones.
 */
import { dateTime, type DataFrame, type DataQueryRequest, type DataSourceInstanceSettings } from '@grafana/data';
import { Histogram, histPoint, MEASUREMENT, SESSION_BUCKET_FIELDS, sessionBucketIndex, sessionHistPoint, type Point } from '@tcplat/core';
import { lastValueFrom } from 'rxjs';
import { backend, bucket2, database1, INFLUX1, INFLUX2, TOKEN2, write1, write2 } from '../../tests/support/datasource-backend';
import { describeWith } from '../../tests/support/prereq';
import { TcplatDataSource } from './datasource';
import type { Metric, TcplatOptions, TcplatQuery } from './types';

jest.mock('@grafana/runtime', () => jest.requireActual('../../tests/support/datasource-backend').grafanaRuntime());

const MIN = 60_000;
// A whole minute that ended a while ago (one 60 s bin, well inside the 10 s data).
const T0 = Math.floor((Date.now() - 30 * MIN) / MIN) * MIN;
const ns = (ms: number) => BigInt(ms) * 1_000_000n;

/** Service names an agent may have written (label values of real workloads), none with control characters. */
const HOSTILE = [`quote"here`, `single'quote`, 'back\\slash', `' OR 1=1 --`, '|> drop()', '${interp}', 'unicode ü 中文 😀', ' leading and trailing '];

function sessionHist(tags: { host: string; service: string; dst: string }, lifespans: number[], t: number): Point {
  const buckets = SESSION_BUCKET_FIELDS.map(() => 0);
  for (const ms of lifespans) buckets[sessionBucketIndex(ms)]++;
  const sum = lifespans.reduce((a, b) => a + b, 0);
  return sessionHistPoint(tags, { count: lifespans.length, sumMs: sum, minMs: Math.min(...lifespans), maxMs: Math.max(...lifespans), buckets, retrans: 0, resetsIn: 0, resetsOut: 0 }, ns(t));
}

function connectHist(tags: { host: string; service: string; dst: string; result: 'ok' | 'refused' }, latencies: number[], t: number, measurement: string = MEASUREMENT.connectHist): Point {
  const h = new Histogram();
  for (const ms of latencies) h.add(ms);
  return { ...histPoint(tags, h, ns(t)), measurement };
}

function points(): Point[] {
  const api = { service: 'api', dst: 'pg:5432' };
  const out: Point[] = [];
  // The churning pool of "api", on two hosts: the datasource adds the hosts up.
  for (let w = 0; w < 6; w++) {
    const t = T0 + w * 10_000;
    // 40 new connections over the minute (h1 5 per window, h2 2 or 1), and 6 refused ones that are not new connections.
    out.push(connectHist({ ...api, host: 'h1', result: 'ok' }, Array<number>(5).fill(0.4), t));
    out.push(connectHist({ ...api, host: 'h2', result: 'ok' }, Array<number>(w < 4 ? 2 : 1).fill(0.4), t));
    out.push(connectHist({ ...api, host: 'h1', result: 'refused' }, [0.05], t));
    // 30 connections of 50 ms (h1) and 10 of 5 s (h2) closed in the minute.
    out.push(sessionHist({ ...api, host: 'h1' }, Array<number>(5).fill(50), t));
    if (w < 5) out.push(sessionHist({ ...api, host: 'h2' }, Array<number>(2).fill(5000), t));
    // TLS: 20 handshakes of api -> pg, one of which failed (the client refused the certificate).
    out.push(connectHist({ ...api, host: 'h1', result: 'ok' }, w === 0 ? [280, 290, 300, 1200] : [280, 290, 300], t, MEASUREMENT.tlsHist));
  }
  out.push(connectHist({ ...api, host: 'h1', result: 'failed' as 'ok' }, [15], T0 + 20_000, MEASUREMENT.tlsHist));
  // Outside the minute: must not count.
  out.push(connectHist({ ...api, host: 'h1', result: 'ok' }, Array<number>(50).fill(0.4), T0 + MIN));
  out.push(sessionHist({ ...api, host: 'h1' }, Array<number>(50).fill(10), T0 - 10_000));
  // Services with hostile names: i + 1 connections of 2 s each, their own numbers only.
  HOSTILE.forEach((service, i) => {
    out.push(connectHist({ service, dst: 'x:1', host: 'h1', result: 'ok' }, Array<number>(i + 1).fill(1), T0));
    out.push(sessionHist({ service, dst: 'x:1', host: 'h1' }, Array<number>(i + 1).fill(2000), T0));
  });
  return out;
}

function ds(jsonData: Partial<TcplatOptions>): TcplatDataSource {
  return new TcplatDataSource({
    id: 1,
    uid: 'tcplat',
    type: 'tcplat-connect-datasource',
    name: 'tcplat',
    url: '/api/datasources/proxy/uid/tcplat',
    jsonData: { influxUrl: backend.upstream.influxUrl, ...jsonData },
    meta: {} as DataSourceInstanceSettings['meta'],
    readOnly: false,
    access: 'proxy',
  } as DataSourceInstanceSettings<TcplatOptions>);
}

function request(metric: Metric, q: Partial<TcplatQuery> = {}): DataQueryRequest<TcplatQuery> {
  return {
    targets: [{ refId: 'A', version: 1, metric, groupBy: [], ...q }],
    range: { from: dateTime(T0), to: dateTime(T0 + MIN), raw: { from: 'now', to: 'now' } },
    intervalMs: MIN,
    scopedVars: {},
  } as unknown as DataQueryRequest<TcplatQuery>;
}

interface Store {
  name: string;
  missing: string | null;
  upstream: () => { influxUrl: string; token: string };
  setup(): Promise<Partial<TcplatOptions>>;
}

const STORES: Store[] = [
  {
    name: 'InfluxDB 1.x (InfluxQL)',
    missing: INFLUX1 ? null : 'no test InfluxDB: TCPLAT_TEST_INFLUX_URL is unset (run through npm test)',
    upstream: () => ({ influxUrl: INFLUX1, token: '' }),
    async setup() {
      const db = await database1('churn');
      await write1(db, null, points());
      return { dialect: 'influxql', database: db };
    },
  },
  {
    name: 'InfluxDB 2.x (Flux)',
    missing: INFLUX2 && TOKEN2 ? null : 'no test InfluxDB 2.x: TCPLAT_TEST_INFLUX2_URL/TOKEN are unset (run through npm test)',
    upstream: () => ({ influxUrl: INFLUX2, token: TOKEN2 }),
    async setup() {
      const b = `churn_${Date.now().toString(36)}`;
      await bucket2(b);
      await write2(b, points());
      return { dialect: 'flux', org: 'tcplat', bucket: b };
    },
  },
];

for (const store of STORES) {
  describeWith(store.missing, `churn and TLS metrics on ${store.name}`, () => {
    let json: Partial<TcplatOptions>;
    beforeAll(async () => {
      backend.upstream = store.upstream();
      json = await store.setup();
    }, 120_000);
    beforeEach(() => {
      backend.upstream = store.upstream();
      for (const k of Object.keys(backend.vars)) delete backend.vars[k];
      backend.sent.length = 0;
    });

    /** The one value of the minute for service api (through the $service variable). */
    async function value(metric: Metric, q: Partial<TcplatQuery> = {}): Promise<number | null> {
      backend.vars.service = 'api';
      const res = await lastValueFrom(ds(json).query(request(metric, { service: ['$service'], ...q })));
      expect(res.errors).toBeUndefined();
      const frames = (res.data as DataFrame[]).filter((f) => f.fields.length > 0);
      expect([metric, frames.length]).toEqual([metric, 1]);
      expect([metric, frames[0].fields[0].values.length]).toEqual([metric, 1]);
      expect(frames[0].fields[0].values[0]).toBe(T0);
      return frames[0].fields[1].values[0] as number | null;
    }

    test('churn: 40 new connections, 30 of 50 ms and 10 of 5 s closed in 60 s', async () => {
      expect(await value('newConnRate')).toBeCloseTo(40 / 60, 9);
      // The result filter of the query does not turn refused attempts into new connections.
      expect(await value('newConnRate', { result: ['refused'] })).toBeCloseTo(40 / 60, 9);
      // Every attempt, refused ones too: the connect metric as before.
      expect(await value('rate')).toBeCloseTo(46 / 60, 9);
      expect(await value('shortShare')).toBeCloseTo(0.75, 12);
      // Little's law: (30 x 0.05 s + 10 x 5 s) / 60 s.
      expect(await value('openMean')).toBeCloseTo(51.5 / 60, 9);
      const p50 = (await value('lifespanP50'))!;
      expect(p50).toBeGreaterThanOrEqual(50);
      expect(p50).toBeLessThanOrEqual(63);
      const p99 = (await value('lifespanP99'))!;
      expect(p99).toBeGreaterThan(4000);
      expect(p99).toBeLessThanOrEqual(5000);
      // Read from tcp_session_hist, no result filter on it.
      expect(backend.sent.at(-1)).toContain(MEASUREMENT.sessionHist);
      expect(backend.sent.at(-1)).not.toMatch(/result/);
    }, 60_000);

    test('TLS: 20 handshakes of about 300 ms, one failed', async () => {
      expect(await value('tlsRate')).toBeCloseTo(20 / 60, 9);
      expect(await value('tlsFailureRate')).toBeCloseTo(0.05, 12);
      const p50 = (await value('tlsP50'))!;
      expect(p50).toBeGreaterThan(250);
      expect(p50).toBeLessThanOrEqual(400);
      // p99 lies in the slow one's bucket (1000, 1600], at most the slowest handshake.
      const p99 = (await value('tlsP99'))!;
      expect(p99).toBeGreaterThan(1000);
      expect(p99).toBeLessThanOrEqual(1200);
      expect(backend.sent.at(-1)).toContain(MEASUREMENT.tlsHist);
      // TLS p99 of the same service -> destination side by side with the TCP connect p99 (well under 1 ms).
      expect(await value('p99', { dst: ['pg:5432'], result: ['ok'] })).toBeLessThan(1);
    }, 60_000);

    test('grouped by service: one series each, hostile service names read back exactly and only their own numbers', async () => {
      backend.vars.service = [...HOSTILE];
      for (const metric of ['newConnRate', 'shortShare', 'openMean'] as const) {
        const res = await lastValueFrom(ds(json).query(request(metric, { service: ['$service'], groupBy: ['service'] })));
        expect(res.errors).toBeUndefined();
        const frames = (res.data as DataFrame[]).filter((f) => f.fields.length > 0);
        const got = Object.fromEntries(frames.map((f) => [f.fields[1].labels!.service, f.fields[1].values[0]]));
        expect(Object.keys(got).sort()).toEqual([...HOSTILE].sort());
        HOSTILE.forEach((s, i) => {
          const want = metric === 'newConnRate' ? (i + 1) / 60 : metric === 'shortShare' ? 0 : ((i + 1) * 2) / 60;
          expect([s, got[s]]).toEqual([s, expect.closeTo(want, 9)]);
        });
      }
    }, 60_000);

    test('no tcp_session_hist for a service: no series, and the panel says the agent needs --probe-close', async () => {
      backend.vars.service = 'nobody';
      const res = await lastValueFrom(ds(json).query(request('lifespanP99', { service: ['$service'] })));
      expect(res.errors).toBeUndefined();
      const frames = res.data as DataFrame[];
      expect(frames.every((f) => f.fields.length === 0)).toBe(true);
      expect(frames[0].meta?.notices?.[0].text).toMatch(/--probe-close/);
    }, 60_000);
  });
}
