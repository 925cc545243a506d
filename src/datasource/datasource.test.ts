import { dateTime, type DataQueryRequest, type DataSourceInstanceSettings } from '@grafana/data';
import { buildFluxHistQuery, buildInfluxQLHistQuery, BUCKET_FIELDS } from '@tcplat/core';
import { Observable, lastValueFrom, of, throwError } from 'rxjs';
import { TcplatDataSource, TcplatVariableSupport } from './datasource';
import { planQuery } from './queries';
import type { TcplatOptions, TcplatQuery } from './types';

const fetchMock = jest.fn();
const vars: Record<string, string | string[]> = {};

jest.mock('@grafana/runtime', () => ({
  getBackendSrv: () => ({ fetch: (req: unknown) => fetchMock(req) }),
  getTemplateSrv: () => ({
    getVariables: () => Object.keys(vars).map((name) => ({ name })),
    replace: (target: string, _scoped: unknown, format: (v: string | string[]) => string) =>
      target.replace(/\$(\w+)/g, (m, name) => (name in vars ? format(vars[name]) : m)),
  }),
}));

function ds(jsonData: Partial<TcplatOptions>): TcplatDataSource {
  return new TcplatDataSource({
    id: 1,
    uid: 'tcplat',
    type: 'tcplat-connect-datasource',
    name: 'tcplat',
    url: '/api/datasources/proxy/uid/tcplat',
    jsonData: { influxUrl: 'http://influx:8086', ...jsonData },
    meta: {} as DataSourceInstanceSettings['meta'],
    readOnly: false,
    access: 'proxy',
  } as DataSourceInstanceSettings<TcplatOptions>);
}

const ok = (data: unknown) => of({ data, status: 200, headers: new Headers(), ok: true });
const fail = (status: number, data: unknown) => throwError(() => ({ status, data, statusText: 'x' }));

const FROM = 1_700_000_000_000;
function request(targets: TcplatQuery[]): DataQueryRequest<TcplatQuery> {
  return {
    targets,
    range: { from: dateTime(FROM), to: dateTime(FROM + 3_600_000), raw: { from: 'now-1h', to: 'now' } },
    intervalMs: 60_000,
    scopedVars: {},
  } as unknown as DataQueryRequest<TcplatQuery>;
}

beforeEach(() => {
  fetchMock.mockReset();
  for (const k of Object.keys(vars)) delete vars[k];
});

describe('query (InfluxDB 1.x)', () => {
  test('GETs the builder’s InfluxQL through the influx/query route (GET only), with hostile variable values only quoted', async () => {
    vars.service = [`api' OR 1=1 --`, 'web"; DROP'];
    const d = ds({ dialect: 'influxql', database: 'tcplat', retentionPolicy: 'week' });
    fetchMock.mockReturnValue(
      ok({
        results: [
          {
            series: [
              { name: 'tcp_connect_hist', tags: { service: `api' OR 1=1 --` }, columns: ['time', 'max_ms'], values: [[FROM, 12.5], [FROM + 60_000, 3]] },
              { name: 'tcp_connect_hist', tags: { service: 'web"; DROP' }, columns: ['time', 'max_ms'], values: [[FROM, 1]] },
            ],
          },
        ],
      }),
    );
    const q: TcplatQuery = { refId: 'A', version: 1, service: ['$service'], metric: 'max', groupBy: ['service'] };
    const res = await lastValueFrom(d.query(request([q])));
    expect(res.errors).toBeUndefined();
    const req = fetchMock.mock.calls[0][0];
    const url = new URL(req.url, 'http://grafana');
    expect(url.pathname).toBe('/api/datasources/proxy/uid/tcplat/influx/query');
    const sent = url.searchParams.get('q');
    url.searchParams.delete('q');
    expect(Object.fromEntries(url.searchParams)).toEqual({ db: 'tcplat', rp: 'week', epoch: 'ms' });
    expect(req.method).toBe('GET');
    expect(req.data).toBeUndefined();
    const plan = planQuery(q, { service: [`api' OR 1=1 --`, 'web"; DROP'] }, { fromMs: FROM, toMs: FROM + 3_600_000 }, 60_000);
    // A 1 min interval reads the 1 min rollups, from their retention policy (the rp parameter stays the 10 s data's).
    expect(plan.level).toBe('1m');
    expect(sent).toBe(buildInfluxQLHistQuery({ ...plan.hist, source: { level: '1m', rp: 'tcplat_rollups' } }));
    expect(sent).toContain('FROM "tcplat_rollups"."tcp_connect_hist_1m"');
    expect(sent).toContain(`"service" = 'api\\' OR 1=1 --'`);
    expect(res.data).toHaveLength(2);
    expect(res.data[0].fields[1].labels).toEqual({ service: `api' OR 1=1 --` });
    expect(res.data[0].fields[1].values).toEqual([12.5, 3]);
    expect(res.data[0].meta.custom).toMatchObject({ resolution: '1m', resolutionLabel: '1 min rollups' });
  });

  test('a control character in a variable is an error of that query, and nothing is sent', async () => {
    vars.dst = 'db\n1';
    fetchMock.mockReturnValue(ok({ results: [{}] }));
    const res = await lastValueFrom(ds({ dialect: 'influxql', database: 'tcplat' }).query(request([{ refId: 'B', metric: 'p99', dst: ['$dst'] } as TcplatQuery])));
    expect(res.errors?.[0]).toMatchObject({ refId: 'B' });
    expect(res.errors?.[0].message).toMatch(/filter dst/);
    expect(fetchMock).not.toHaveBeenCalled();
  });

  test('an InfluxDB error becomes the query error', async () => {
    fetchMock.mockReturnValue(ok({ results: [{ error: 'database not found: nope' }] }));
    const res = await lastValueFrom(ds({ dialect: 'influxql', database: 'nope' }).query(request([{ refId: 'A', metric: 'p99' } as TcplatQuery])));
    expect(res.errors?.[0].message).toBe('InfluxDB: database not found: nope');
  });
});

describe('query (InfluxDB 2.x)', () => {
  test('POSTs the builder’s Flux with the org, reads annotated CSV into heatmap buckets', async () => {
    const d = ds({ dialect: 'flux', org: 'my org', bucket: 'b"1' });
    const header = ['', 'result', 'table', '_start', '_stop', '_time', ...BUCKET_FIELDS].join(',');
    const row = ['', '_result', '0', '', '', new Date(FROM).toISOString(), ...BUCKET_FIELDS.map((_, i) => (i === 15 ? '3' : '0'))].join(',');
    fetchMock.mockReturnValue(ok(`#datatype,string,long\n#group,false,false\n#default,hist,\n${header}\n${row}\n\n`));
    const q: TcplatQuery = { refId: 'A', version: 1, metric: 'buckets', groupBy: [] };
    const res = await lastValueFrom(d.query(request([q])));
    expect(res.errors).toBeUndefined();
    const req = fetchMock.mock.calls[0][0];
    expect(req.url).toBe('/api/datasources/proxy/uid/tcplat/influx/api/v2/query?org=my+org');
    expect(req.headers.Accept).toBe('application/csv');
    const plan = planQuery(q, {}, { fromMs: FROM, toMs: FROM + 3_600_000 }, 60_000);
    expect(req.data.query).toBe(buildFluxHistQuery({ ...plan.hist, source: { level: '1m', rp: 'tcplat_rollups' } }, { bucket: 'b"1' }));
    expect(req.data.query).toContain('from(bucket: "b\\"1_rollups")');
    expect(res.data).toHaveLength(1);
    expect(res.data[0].meta.type).toBe('heatmap-rows');
    expect(res.data[0].fields[16].values).toEqual([3]);
  });
});

describe('cancelling and Explore', () => {
  test('unsubscribing from query() cancels the request in flight, and nothing is emitted after', async () => {
    // Stand-in for getBackendSrv().fetch: an Observable whose teardown aborts the request, as Grafana's
    // (grafana/grafana public/app/core/services/backend_srv.ts builds fetch on rxjs fromFetch, which aborts its
    // AbortController on unsubscribe). Real aborts of real HTTP requests: tests/plugins-grafana13.browser.test.ts.
    const aborted = jest.fn();
    let started = 0;
    fetchMock.mockImplementation(
      () =>
        new Observable(() => {
          started++;
          return aborted;
        }),
    );
    const seen: unknown[] = [];
    const sub = ds({ dialect: 'influxql', database: 'tcplat' })
      .query(request([{ refId: 'A', metric: 'p99' } as TcplatQuery, { refId: 'B', metric: 'rate' } as TcplatQuery]))
      .subscribe({ next: (v) => seen.push(v), error: (e) => seen.push(e) });
    await new Promise((r) => setTimeout(r, 0));
    expect(started).toBe(2);
    sub.unsubscribe();
    expect(aborted).toHaveBeenCalledTimes(2);
    await new Promise((r) => setTimeout(r, 0));
    expect(seen).toEqual([]);
  });

  test('variable queries too: unsubscribing aborts the tag-values request', async () => {
    const aborted = jest.fn();
    fetchMock.mockImplementation(() => new Observable(() => aborted));
    const d = ds({ dialect: 'flux', org: 'o', bucket: 'b' });
    const sub = (d.variables as TcplatVariableSupport).query({ targets: [{ refId: 'v', kind: 'services' }], range: request([]).range, scopedVars: {} } as never).subscribe({ error: () => {} });
    await new Promise((r) => setTimeout(r, 0));
    expect(fetchMock).toHaveBeenCalledTimes(1);
    sub.unsubscribe();
    expect(aborted).toHaveBeenCalledTimes(1);
  });

  test('interpolateVariablesInQueries: Explore gets the values, All means no filter, literals stay', () => {
    vars.service = ['api', 'web'];
    vars.dst = ['.*'];
    vars.host = 'h1';
    const [q] = ds({ dialect: 'flux' }).interpolateVariablesInQueries(
      [{ refId: 'A', metric: 'p99', service: ['$service'], dst: ['$dst'], host: ['$host', 'h2'], result: ['refused'], groupBy: ['service'] } as TcplatQuery],
      {},
    );
    expect(q).toMatchObject({ refId: 'A', metric: 'p99', service: ['api', 'web'], host: ['h1', 'h2'], result: ['refused'], groupBy: ['service'] });
    expect(q.dst).toBeUndefined();
  });
});

describe('testDatasource', () => {
  test('unreachable (the proxy answers 502): says to check the URL from the Grafana server', async () => {
    fetchMock.mockReturnValue(fail(502, { message: 'Bad Gateway' }));
    const r = await ds({ dialect: 'flux', org: 'o', bucket: 'b' }).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/cannot reach InfluxDB at http:\/\/influx:8086/);
    expect(r.message).toMatch(/reachable from the Grafana server/);
  });
  // What Grafana answers when InfluxDB says 401: 400 with a plain-text body; the 401 never reaches the
  // browser (grafana/grafana pkg/api/pluginproxy/ds_proxy.go, HandleRequest's modifyResponse). The real
  // thing, through the stand-in against a real InfluxDB, is in tests/grafana-proxy.test.ts.
  test('wrong token or password (Grafana’s 400 "Authentication to data source failed"): says to check them', async () => {
    fetchMock.mockReturnValue(fail(400, 'Authentication to data source failed'));
    const r = await ds({ dialect: 'flux', org: 'o', bucket: 'b' }).testDatasource();
    expect(r).toMatchObject({ status: 'error' });
    expect(r.message).toMatch(/^InfluxDB refused the datasource's credentials \(Grafana: Authentication to data source failed\)\. Check the token \(InfluxDB 2\.x\)/);
  });
  test('a route the user’s role may not use (Grafana’s 403): says it needs an Editor', async () => {
    fetchMock.mockReturnValue(fail(403, { message: 'plugin proxy route access denied' }));
    const r = await ds({ dialect: 'influxql', database: 'tcplat' }).testDatasource();
    expect(r.message).toMatch(/Grafana refused this request to InfluxDB \(plugin proxy route access denied\): it needs the Editor role/);
  });
  test('missing bucket (2.x) and missing database (1.x)', async () => {
    fetchMock.mockReturnValue(fail(404, { code: 'not found', message: 'failed to initialize execute state: could not find bucket "b"' }));
    const r2 = await ds({ dialect: 'flux', org: 'o', bucket: 'b' }).testDatasource();
    expect(r2.message).toMatch(/no bucket "b" in organization "o": create it/);
    fetchMock.mockReturnValue(ok({ results: [{ statement_id: 0, error: 'database not found: tcplat' }] }));
    const r1 = await ds({ dialect: 'influxql', database: 'tcplat' }).testDatasource();
    expect(r1).toMatchObject({ status: 'error' });
    expect(r1.message).toMatch(/no database "tcplat": create it/);
  });
  test('connected, no tcplat data yet: says to start the agent', async () => {
    fetchMock.mockReturnValue(ok({ results: [{ statement_id: 0 }] }));
    const r = await ds({ dialect: 'influxql', database: 'tcplat' }).testDatasource();
    expect(r.status).toBe('success');
    expect(r.message).toMatch(/no tcplat data yet.*Start the tcplat agent/);
    expect(new URL(fetchMock.mock.calls[0][0].url, 'http://g').searchParams.get('q')).toBe('SHOW SERIES FROM "tcp_connect_hist" LIMIT 1');
  });
  test('with data, and the renderer checked through its route', async () => {
    fetchMock.mockImplementation((req: { url: string }) =>
      req.url.includes('/renderer/') ? fail(400, 'Authentication to data source failed') : ok({ results: [{ series: [{ columns: ['key'], values: [['tcp_connect_hist,service=api']] }] }] }),
    );
    const r = await ds({ dialect: 'influxql', database: 'tcplat', rendererUrl: 'http://renderer:7071' }).testDatasource();
    expect(r.status).toBe('error');
    expect(r.message).toMatch(/InfluxDB is fine, but: the renderer refused the datasource's credentials .*Check the renderer token/);
    expect(fetchMock.mock.calls[1][0].url).toBe('/api/datasources/proxy/uid/tcplat/renderer/metrics');
  });
});

describe('variables', () => {
  test('destinations of $service: SHOW TAG VALUES with the expanded, quoted values', async () => {
    vars.service = ["a'b", 'c'];
    fetchMock.mockReturnValue(ok({ results: [{ series: [{ columns: ['key', 'value'], values: [['dst', 'db:5432'], ['dst', 'cache:6379']] }] }] }));
    const values = await ds({ dialect: 'influxql', database: 'tcplat' }).metricFindQuery({ refId: 'v', kind: 'destinations', service: '$service' });
    expect(values.map((v) => v.text)).toEqual(['cache:6379', 'db:5432']);
    expect(new URL(fetchMock.mock.calls[0][0].url, 'http://g').searchParams.get('q')).toBe(
      `SHOW TAG VALUES FROM "tcp_connect_hist" WITH KEY = "dst" WHERE ("service" = 'a\\'b' OR "service" = 'c')`,
    );
  });
  test('services on 2.x: schema.tagValues', async () => {
    fetchMock.mockReturnValue(ok('#datatype,string,long,string\n,result,table,_value\n,,0,api\n'));
    const values = await ds({ dialect: 'flux', org: 'o', bucket: 'b' }).metricFindQuery('services');
    expect(values).toEqual([{ text: 'api', value: 'api' }]);
    expect(fetchMock.mock.calls[0][0].data.query).toMatch(/schema\.tagValues\(bucket: "b", tag: "service"/);
  });
});
