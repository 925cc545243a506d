import { BUCKET_FIELDS } from './buckets';
import { QueryValueError } from './escape';
import {
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  FluxResultError,
  histColumns,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  MAX_SERIES_ENTRIES,
  parseCsv,
  type HistQuery,
} from './query';

const FROM = 1_764_100_000_000; // 2025-11-25T19:46:40Z
const TO = FROM + 3_600_000;

const HOSTILE = [
  `"`,
  `'`,
  `\\`,
  `\\"`,
  `' OR 1=1 --`,
  `") |> drop(columns: ["_value"]) //`,
  `x" or r["service"] != "`,
  '${danger}',
  `;DROP DATABASE x;`,
  `/^.*$/`,
  'ünï©ødé 🚀',
];

describe('histColumns', () => {
  test('buckets first, then the scalar metrics with their aggregation', () => {
    const cols = histColumns(['max', 'buckets', 'count', 'min', 'sum', 'synRetrans']);
    expect(cols.slice(0, BUCKET_FIELDS.length).map((c) => c.field)).toEqual(BUCKET_FIELDS);
    expect(cols.slice(BUCKET_FIELDS.length)).toEqual([
      { field: 'count', agg: 'sum' },
      { field: 'sum_ms', agg: 'sum' },
      { field: 'min_ms', agg: 'min' },
      { field: 'max_ms', agg: 'max' },
      { field: 'syn_retrans', agg: 'sum' },
    ]);
  });
});

describe('InfluxQL builder (golden)', () => {
  test('count, sum, min, max grouped by dst with two filters', () => {
    const q: HistQuery = {
      filters: { service: ['rails', 'nest'], result: ['ok'] },
      fromMs: FROM,
      toMs: TO,
      windowMs: 60_000,
      metrics: ['count', 'sum', 'min', 'max'],
      groupBy: ['dst'],
    };
    expect(buildInfluxQLHistQuery(q)).toBe(
      'SELECT sum("count") AS "count", sum("sum_ms") AS "sum_ms", min("min_ms") AS "min_ms", max("max_ms") AS "max_ms" ' +
        'FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms ' +
        `AND ("service" = 'nest' OR "service" = 'rails') AND "result" = 'ok' GROUP BY time(60000ms), "dst" fill(none)`,
    );
  });

  test('buckets, no filter, no grouping', () => {
    const text = buildInfluxQLHistQuery({ fromMs: FROM, toMs: TO, windowMs: 10_000, metrics: ['buckets'] });
    expect(text.startsWith('SELECT sum("le_0.01") AS "le_0.01", sum("le_0.016") AS "le_0.016", ')).toBe(true);
    expect(text.endsWith('sum("le_10000") AS "le_10000", sum("le_inf") AS "le_inf" FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms GROUP BY time(10000ms) fill(none)')).toBe(true);
  });

  test('fields: a subset of the metrics, in the metrics order', () => {
    const text = buildInfluxQLHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['buckets', 'max'], fields: ['max_ms', 'le_1', 'le_0.63'] });
    expect(text).toBe(
      'SELECT sum("le_0.63") AS "le_0.63", sum("le_1") AS "le_1", max("max_ms") AS "max_ms" FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms GROUP BY time(60000ms) fill(none)',
    );
    expect(() => buildInfluxQLHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'], fields: ['le_1'] })).toThrow(/not one of/);
    expect(() => buildFluxHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'], fields: [] }, { bucket: 'b' })).toThrow(/empty/);
  });

  test('filters are order-independent and deduplicated (same text, same cache key)', () => {
    const a = buildInfluxQLHistQuery({ filters: { host: ['b', 'a', 'b'] }, fromMs: FROM, toMs: TO, windowMs: 1000, metrics: ['count'] });
    const b = buildInfluxQLHistQuery({ filters: { host: ['a', 'b'] }, fromMs: FROM, toMs: TO, windowMs: 1000, metrics: ['count'] });
    expect(a).toBe(b);
  });

  test.each(HOSTILE)('hostile value %j stays inside one string literal', (v) => {
    const text = buildInfluxQLHistQuery({ filters: { service: [v], dst: [v] }, fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'] });
    // Strip every string literal: what remains must be exactly our own query skeleton.
    const skeleton = text.replace(/'(?:\\.|[^'\\])*'/gs, "''");
    expect(skeleton).toBe(
      `SELECT sum("count") AS "count" FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms AND "service" = '' AND "dst" = '' GROUP BY time(60000ms) fill(none)`,
    );
    expect(text).not.toMatch(/[\n\r]/);
  });

  test('series: exact series ORed together and ANDed with the filters; "" is a series without the tag', () => {
    const text = buildInfluxQLHistQuery({
      filters: { service: ['rails'] },
      fromMs: FROM,
      toMs: TO,
      windowMs: 60_000,
      metrics: ['buckets'],
      fields: ['le_1'],
      series: [
        { result: 'ok', host: 'h1', dst: 'pg:5432', service: 'rails' },
        { dst: 'redis:6379', host: '' },
      ],
    });
    expect(text).toBe(
      `SELECT sum("le_1") AS "le_1" FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms AND "service" = 'rails' ` +
        `AND (("service" = 'rails' AND "dst" = 'pg:5432' AND "host" = 'h1' AND "result" = 'ok') OR ("dst" = 'redis:6379' AND "host" = '')) GROUP BY time(60000ms) fill(none)`,
    );
    const one = buildInfluxQLHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'], series: [{ host: 'h1' }] });
    expect(one).toContain(` AND "host" = 'h1' GROUP BY`);
  });

  test('a "" filter value means a series without the tag in Flux too, as InfluxQL reads it', () => {
    const q: HistQuery = { filters: { host: ['', 'h2'] }, fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'] };
    expect(buildFluxHistQuery(q, { bucket: 'b' })).toContain('  |> filter(fn: (r) => (not exists r["host"] or r["host"] == "") or r["host"] == "h2")\n');
    expect(buildInfluxQLHistQuery(q)).toContain(`AND ("host" = '' OR "host" = 'h2') GROUP BY`);
  });

  test('series: refuses an empty list, empty entries, unknown tags, control characters, too many entries', () => {
    const ok: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'] };
    for (const build of [(q: HistQuery) => buildInfluxQLHistQuery(q), (q: HistQuery) => buildFluxHistQuery(q, { bucket: 'b' })]) {
      expect(() => build({ ...ok, series: [] })).toThrow(/series: empty/);
      expect(() => build({ ...ok, series: [{}] })).toThrow(/at least one tag/);
      expect(() => build({ ...ok, series: [{ comm: 'x' } as never] })).toThrow(/cannot match on "comm"/);
      expect(() => build({ ...ok, series: [{ host: 'a\rb' }] })).toThrow(/control characters/);
      expect(() => build({ ...ok, series: [{ host: 7 as never }] })).toThrow(/expected strings/);
      expect(() => build({ ...ok, series: Array.from({ length: MAX_SERIES_ENTRIES + 1 }, (_, i) => ({ host: `h${i}` })) })).toThrow(/at most/);
    }
  });

  test.each(HOSTILE)('hostile value %j in series stays inside one string literal', (v) => {
    const text = buildInfluxQLHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'], series: [{ service: v, dst: v }, { host: v }] });
    const skeleton = text.replace(/'(?:\\.|[^'\\])*'/gs, "''");
    expect(skeleton).toBe(
      `SELECT sum("count") AS "count" FROM "tcp_connect_hist" WHERE time >= 1764100000000ms AND time < 1764103600000ms AND (("service" = '' AND "dst" = '') OR "host" = '') GROUP BY time(60000ms) fill(none)`,
    );
  });

  test('refuses bad numbers, ranges, tags and metrics', () => {
    const ok: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'] };
    expect(() => buildInfluxQLHistQuery({ ...ok, fromMs: 1.5 })).toThrow(QueryValueError);
    expect(() => buildInfluxQLHistQuery({ ...ok, fromMs: NaN })).toThrow('fromMs');
    expect(() => buildInfluxQLHistQuery({ ...ok, toMs: FROM })).toThrow('must be after');
    expect(() => buildInfluxQLHistQuery({ ...ok, windowMs: 0 })).toThrow('windowMs');
    expect(() => buildInfluxQLHistQuery({ ...ok, toMs: 1e300 })).toThrow('toMs');
    expect(() => buildInfluxQLHistQuery({ ...ok, metrics: [] })).toThrow('at least one metric');
    expect(() => buildInfluxQLHistQuery({ ...ok, metrics: ['p99' as never] })).toThrow('unknown metric');
    expect(() => buildInfluxQLHistQuery({ ...ok, groupBy: ['pid' as never] })).toThrow('cannot group by "pid"');
    expect(() => buildInfluxQLHistQuery({ ...ok, filters: { comm: ['x'] } as never })).toThrow('cannot filter on "comm"');
    expect(() => buildInfluxQLHistQuery({ ...ok, filters: { service: ['a\u0000b'] } })).toThrow(QueryValueError);
    // Tag values never hold control characters (line protocol writes them as text), and InfluxQL 1.x
    // literals cannot carry CR or TAB: refused in both dialects rather than sent.
    for (const v of ['a\rb', 'a\tb', 'a\nb', '\u001b[31m']) {
      expect(() => buildInfluxQLHistQuery({ ...ok, filters: { dst: [v] } })).toThrow(/control characters/);
      expect(() => buildFluxHistQuery({ ...ok, filters: { dst: [v] } }, { bucket: 'b' })).toThrow(/control characters/);
    }
  });
});

describe('Flux builder (golden)', () => {
  test('all metrics grouped by dst and result, one filter', () => {
    const text = buildFluxHistQuery(
      { filters: { service: ['api'] }, fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count', 'sum', 'min', 'max'], groupBy: ['dst', 'result'] },
      { bucket: 'tcplat' },
    );
    expect(text).toBe(
      [
        'data = from(bucket: "tcplat")',
        '  |> range(start: 2025-11-25T19:46:40.000Z, stop: 2025-11-25T20:46:40.000Z)',
        '  |> filter(fn: (r) => r._measurement == "tcp_connect_hist")',
        '  |> filter(fn: (r) => r["service"] == "api")',
        '',
        'sums = data',
        '  |> filter(fn: (r) => r._field == "count" or r._field == "sum_ms")',
        '  |> aggregateWindow(every: 60000ms, fn: sum, createEmpty: false, timeSrc: "_start")',
        '  |> group(columns: ["_field", "dst", "result"])',
        '  |> aggregateWindow(every: 60000ms, fn: sum, createEmpty: false, timeSrc: "_start")',
        '',
        'mins = data',
        '  |> filter(fn: (r) => r._field == "min_ms")',
        '  |> aggregateWindow(every: 60000ms, fn: min, createEmpty: false, timeSrc: "_start")',
        '  |> group(columns: ["_field", "dst", "result"])',
        '  |> aggregateWindow(every: 60000ms, fn: min, createEmpty: false, timeSrc: "_start")',
        '',
        'maxs = data',
        '  |> filter(fn: (r) => r._field == "max_ms")',
        '  |> aggregateWindow(every: 60000ms, fn: max, createEmpty: false, timeSrc: "_start")',
        '  |> group(columns: ["_field", "dst", "result"])',
        '  |> aggregateWindow(every: 60000ms, fn: max, createEmpty: false, timeSrc: "_start")',
        '',
        'union(tables: [sums, mins, maxs])',
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        '  |> group(columns: ["dst", "result"])',
        '  |> sort(columns: ["_time"])',
        '  |> yield(name: "hist")',
        '',
      ].join('\n'),
    );
  });

  test('buckets only: one stream, no union, ungrouped at the end', () => {
    const text = buildFluxHistQuery({ filters: { dst: ['db:5432', 'cache:6379'] }, fromMs: FROM, toMs: TO, windowMs: 10_000, metrics: ['buckets'] }, { bucket: 'b' });
    expect(text).toContain('  |> filter(fn: (r) => r["dst"] == "cache:6379" or r["dst"] == "db:5432")\n');
    expect(text).toContain(`r._field == "le_0.01" or r._field == "le_0.016"`);
    expect(text).toContain(`r._field == "le_inf")\n`);
    expect(text).toContain('  |> group(columns: ["_field"])\n');
    expect(text).not.toContain('union');
    expect(text).toContain('\nsums\n  |> pivot(');
    expect(text).toContain('  |> group(columns: [])\n');
  });

  test('series: exact series ORed together; "" also matches a series without the tag', () => {
    const text = buildFluxHistQuery(
      { filters: { service: ['rails'] }, fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['buckets'], fields: ['le_1'], series: [{ host: 'h1', service: 'rails' }, { dst: 'redis:6379', host: '' }, { result: 'ok' }] },
      { bucket: 'b' },
    );
    expect(text).toContain(
      [
        '  |> filter(fn: (r) => r["service"] == "rails")',
        '  |> filter(fn: (r) => (r["service"] == "rails" and r["host"] == "h1") or (r["dst"] == "redis:6379" and (not exists r["host"] or r["host"] == "")) or r["result"] == "ok")',
        '',
        'sums = data',
      ].join('\n'),
    );
  });

  test.each(HOSTILE)('hostile value %j in series stays inside one string literal', (v) => {
    const text = buildFluxHistQuery({ fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'], series: [{ service: v, dst: v }, { host: v }] }, { bucket: 'b' });
    const skeleton = text.replace(/"(?:\\.|[^"\\])*"/gs, '""');
    expect(skeleton).toContain('  |> filter(fn: (r) => (r[""] == "" and r[""] == "") or r[""] == "")\n');
    expect(text).not.toMatch(/[^\\]\$\{/);
  });

  test.each(HOSTILE)('hostile value %j stays inside one string literal', (v) => {
    const text = buildFluxHistQuery({ filters: { host: [v] }, fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['count'] }, { bucket: v });
    const skeleton = text.replace(/"(?:\\.|[^"\\])*"/gs, '""');
    expect(skeleton).toBe(
      [
        'data = from(bucket: "")',
        '  |> range(start: 2025-11-25T19:46:40.000Z, stop: 2025-11-25T20:46:40.000Z)',
        '  |> filter(fn: (r) => r._measurement == "")',
        '  |> filter(fn: (r) => r[""] == "")',
        '',
        'sums = data',
        '  |> filter(fn: (r) => r._field == "")',
        '  |> aggregateWindow(every: 60000ms, fn: sum, createEmpty: false, timeSrc: "")',
        '  |> group(columns: [""])',
        '  |> aggregateWindow(every: 60000ms, fn: sum, createEmpty: false, timeSrc: "")',
        '',
        'sums',
        '  |> pivot(rowKey: [""], columnKey: [""], valueColumn: "")',
        '  |> group(columns: [])',
        '  |> sort(columns: [""])',
        '  |> yield(name: "")',
        '',
      ].join('\n'),
    );
    // No `${` interpolation survives unescaped inside a literal.
    expect(text).not.toMatch(/[^\\]\$\{/);
  });
});

describe('answers to rows', () => {
  test('InfluxQL series (epoch=ms) with tags and nulls', () => {
    const rows = histRowsFromInfluxQL(
      [
        { tags: { dst: 'db:5432' }, columns: ['time', 'count', 'max_ms'], values: [[120_000, 3, 2.5], [60_000, 1, null]] },
        { tags: { dst: 'cache:6379' }, columns: ['time', 'count', 'max_ms'], values: [[60_000, 7, 0.1]] },
      ],
      ['dst'],
    );
    expect(rows).toEqual([
      { timeMs: 60_000, tags: { dst: 'db:5432' }, values: { count: 1 } },
      { timeMs: 60_000, tags: { dst: 'cache:6379' }, values: { count: 7, max_ms: 0.1 } },
      { timeMs: 120_000, tags: { dst: 'db:5432' }, values: { count: 3, max_ms: 2.5 } },
    ]);
  });

  test('CSV: quotes, doubled quotes, embedded newlines and commas, CRLF', () => {
    expect(parseCsv('a,"b,c","d""e"\r\n,"x\ny",\n')).toEqual([
      ['a', 'b,c', 'd"e'],
      ['', 'x\ny', ''],
    ]);
  });

  test('Flux annotated CSV, two tables with their own headers', () => {
    const csv = [
      '#datatype,string,long,dateTime:RFC3339,string,long,double',
      '#group,false,false,false,true,false,false',
      '#default,hist,,,,,',
      ',result,table,_time,dst,count,max_ms',
      ',,0,2025-11-25T19:47:00Z,"db,5432",3,2.5',
      ',,0,2025-11-25T19:48:00Z,"db,5432",1,',
      '',
      '#datatype,string,long,dateTime:RFC3339,string,long,double',
      '#group,false,false,false,true,false,false',
      '#default,hist,,,,,',
      ',result,table,_time,dst,count,max_ms',
      ',,1,2025-11-25T19:47:00Z,cache,7,0.1',
      '',
    ].join('\r\n');
    expect(histRowsFromFluxCsv(csv, ['dst'])).toEqual([
      { timeMs: Date.UTC(2025, 10, 25, 19, 47), tags: { dst: 'db,5432' }, values: { count: 3, max_ms: 2.5 } },
      { timeMs: Date.UTC(2025, 10, 25, 19, 47), tags: { dst: 'cache' }, values: { count: 7, max_ms: 0.1 } },
      { timeMs: Date.UTC(2025, 10, 25, 19, 48), tags: { dst: 'db,5432' }, values: { count: 1 } },
    ]);
  });

  test('Flux error table becomes FluxResultError', () => {
    const csv = '#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,"type error: bad",897\n';
    expect(() => histRowsFromFluxCsv(csv)).toThrow(FluxResultError);
    expect(() => histRowsFromFluxCsv(csv)).toThrow('type error: bad');
  });

  test('empty Flux answer: no rows', () => {
    expect(histRowsFromFluxCsv('\r\n')).toEqual([]);
  });
});
