import { BUCKET_FIELDS, SESSION_BUCKET_FIELDS } from './buckets';
import { QueryValueError } from './escape';
import {
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  FluxResultError,
  histColumns,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  HIST_LEVELS,
  levelLabel,
  levelMs,
  MAX_SERIES_ENTRIES,
  mergeHistParts,
  parseCsv,
  pickResolution,
  planHistParts,
  readHistLevels,
  ROLLED_UP_MEASUREMENTS,
  rollupSchemaOf,
  rollupLevelsFor,
  coversAllHosts,
  ROLLUP_LAG_MS,
  type HistLevel,
  type HistQuery,
  type HistRow,
} from './query';
import { FLEET_LAG_MS, ROLLUP_WINDOWS } from './schema';

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

describe('resolution: which level a query reads', () => {
  const H = 3_600_000;
  const D = 24 * H;

  test('the rule: the coarsest level no wider than the asked bin, the bin rounded up to whole windows of it', () => {
    // [asked bin, level, bin]: the renderer's bins at 1,000 px (20 s at 1 h, 10 min at 24 h, 1 h at 7 d,
    // 6 h at 30 d) and Grafana's rounded intervals at ~1,000 px (1 min at 24 h, 10 min at 7 d, 30 min at 30 d).
    const cases: [number, string, number][] = [
      [10_000, 'base', 10_000],
      [15_000, 'base', 20_000], // never half a 10 s window in a bin
      [20_000, 'base', 20_000],
      [59_999, 'base', 60_000],
      [60_000, '1m', 60_000],
      [86_400, '1m', 120_000],
      [300_000, '1m', 300_000],
      [600_000, '10m', 600_000],
      [900_000, '10m', 1_200_000],
      [1_800_000, '10m', 1_800_000],
      [H, '1h', H],
      [6 * H, '1h', 6 * H],
      [D, '1h', D],
    ];
    for (const [intervalMs, level, windowMs] of cases) {
      expect([intervalMs, pickResolution({ fromMs: 0, toMs: D, intervalMs })]).toEqual([intervalMs, { level, levelMs: levelMs(level as HistLevel), windowMs }]);
    }
    // By columns: 24 h over 1,440 columns is one minute each; 30 d over 200 columns is 3.6 h: 1 h rollups, 4 h bins.
    expect(pickResolution({ fromMs: 0, toMs: D, columns: 1440 })).toEqual({ level: '1m', levelMs: 60_000, windowMs: 60_000 });
    expect(pickResolution({ fromMs: 0, toMs: 30 * D, columns: 200 })).toEqual({ level: '1h', levelMs: H, windowMs: 4 * H });
    // Only the allowed levels; none: the 10 s data with bins of whole 10 s windows.
    expect(pickResolution({ fromMs: 0, toMs: D, intervalMs: 6 * H, levels: ['1m'] })).toEqual({ level: '1m', levelMs: 60_000, windowMs: 6 * H });
    expect(pickResolution({ fromMs: 0, toMs: D, intervalMs: 6 * H, levels: [] })).toEqual({ level: 'base', levelMs: 10_000, windowMs: 6 * H });
    expect(pickResolution({ fromMs: 0, toMs: D, intervalMs: 25_000, levels: [] })).toEqual({ level: 'base', levelMs: 10_000, windowMs: 30_000 });
    // An agent flushing every minute: its data is as coarse as the 1 min rollup, which then gains nothing.
    expect(pickResolution({ fromMs: 0, toMs: D, intervalMs: 120_000, baseMs: 60_000 })).toEqual({ level: 'base', levelMs: 60_000, windowMs: 120_000 });
    expect(() => pickResolution({ fromMs: 0, toMs: D })).toThrow(/intervalMs or columns/);
  });

  test('for any asked bin: one bin per column at least, whole windows, and no coarser allowed level would fit', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 2000; i++) {
      const intervalMs = Math.floor(1 + rnd() * 2 * D);
      const levels = ROLLUP_WINDOWS.map((w) => w.name).filter(() => rnd() < 0.7);
      const r = pickResolution({ fromMs: 0, toMs: 30 * D, intervalMs, levels });
      expect(r.windowMs % r.levelMs).toBe(0);
      expect(r.windowMs).toBeGreaterThanOrEqual(Math.max(intervalMs, 10_000));
      // Never more than one level window wider than asked: at least as many bins as columns, minus one.
      expect(r.windowMs).toBeLessThan(Math.max(intervalMs, 10_000) + r.levelMs);
      for (const w of ROLLUP_WINDOWS) if (levels.includes(w.name) && w.ms <= intervalMs) expect(r.levelMs).toBeGreaterThanOrEqual(w.ms);
      if (r.level !== 'base') expect(levels).toContain(r.level);
    }
  });

  test('planHistParts: a past range is one part; a range reaching now reads the windows a rollup may lag behind from finer levels', () => {
    const now = Date.UTC(2026, 11, 7, 12, 34, 56);
    expect(planHistParts({ fromMs: now - 7 * D, toMs: now - D, level: '1h', nowMs: now })).toEqual([{ level: '1h', fromMs: now - 7 * D, toMs: now - D }]);
    const parts = planHistParts({ fromMs: now - 7 * D, toMs: now, level: '1h', nowMs: now });
    expect(parts).toEqual([
      { level: '1h', fromMs: now - 7 * D, toMs: Date.UTC(2026, 11, 7, 12) },
      { level: '10m', fromMs: Date.UTC(2026, 11, 7, 12), toMs: Date.UTC(2026, 11, 7, 12, 30) },
      { level: '1m', fromMs: Date.UTC(2026, 11, 7, 12, 30), toMs: Date.UTC(2026, 11, 7, 12, 32) },
      { level: 'base', fromMs: Date.UTC(2026, 11, 7, 12, 32), toMs: now },
    ]);
    // A level left out is skipped; the 10 s data takes the rest.
    expect(planHistParts({ fromMs: now - D, toMs: now, level: '10m', nowMs: now, levels: ['10m'] })).toEqual([
      { level: '10m', fromMs: now - D, toMs: Date.UTC(2026, 11, 7, 12, 30) },
      { level: 'base', fromMs: Date.UTC(2026, 11, 7, 12, 30), toMs: now },
    ]);
    expect(planHistParts({ fromMs: now - 3600_000, toMs: now, level: 'base', nowMs: now })).toEqual([{ level: 'base', fromMs: now - 3600_000, toMs: now }]);
    // Random ranges: the parts tile the range, in order, each inner bound a whole window of the coarser side.
    let seed = 11;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 500; i++) {
      const toMs = now - Math.floor(rnd() * 3 * H);
      const fromMs = toMs - 1 - Math.floor(rnd() * 2 * D);
      const level = HIST_LEVELS[Math.floor(rnd() * HIST_LEVELS.length)];
      const ps = planHistParts({ fromMs, toMs, level, nowMs: now });
      expect(ps[0].fromMs).toBe(fromMs);
      expect(ps.at(-1)!.toMs).toBe(toMs);
      for (let k = 0; k < ps.length; k++) {
        expect(ps[k].toMs).toBeGreaterThan(ps[k].fromMs);
        if (k > 0) expect(ps[k].fromMs).toBe(ps[k - 1].toMs);
        if (k < ps.length - 1) {
          expect(ps[k].toMs % levelMs(ps[k].level)).toBe(0);
          expect(ps[k].toMs).toBeLessThanOrEqual(now - ROLLUP_LAG_MS);
        }
      }
      expect(ps[0].level === level || level === 'base' || ps[0].level !== 'base').toBe(true);
    }
  });

  test('mergeHistParts: rows of a bin from several parts add up (min of mins, max of maxes), times snapped to the bin', () => {
    const a: HistRow[] = [{ timeMs: 0, tags: { dst: 'x' }, values: { count: 3, min_ms: 0.5, max_ms: 2, le_1: 1 } }];
    const b: HistRow[] = [
      { timeMs: 1_800_000, tags: { dst: 'x' }, values: { count: 2, min_ms: 0.2, max_ms: 1, le_1: 2 } },
      { timeMs: 1_800_000, tags: { dst: 'y' }, values: { count: 1 } },
      { timeMs: 3_600_000, tags: { dst: 'x' }, values: { count: 4 } },
    ];
    expect(mergeHistParts([a, b], 3_600_000)).toEqual([
      { timeMs: 0, tags: { dst: 'x' }, values: { count: 5, min_ms: 0.2, max_ms: 2, le_1: 3 } },
      { timeMs: 0, tags: { dst: 'y' }, values: { count: 1 } },
      { timeMs: 3_600_000, tags: { dst: 'x' }, values: { count: 4 } },
    ]);
    expect(a[0].values.count).toBe(3);
  });

  test('InfluxQL reads a rollup from its retention policy in the FROM clause (default tcplat_rollups), the 10 s data as before', () => {
    const q: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 3_600_000, metrics: ['count'] };
    const tail = `WHERE time >= 1764100000000ms AND time < 1764103600000ms GROUP BY time(3600000ms) fill(none)`;
    expect(buildInfluxQLHistQuery({ ...q, source: { level: '1h' } })).toBe(`SELECT sum("count") AS "count" FROM "tcplat_rollups"."tcp_connect_hist_1h" ${tail}`);
    expect(buildInfluxQLHistQuery({ ...q, source: { level: '1m', rp: 'long' } })).toBe(`SELECT sum("count") AS "count" FROM "long"."tcp_connect_hist_1m" ${tail}`);
    expect(buildInfluxQLHistQuery({ ...q, source: { level: 'base' } })).toBe(`SELECT sum("count") AS "count" FROM "tcp_connect_hist" ${tail}`);
    expect(buildInfluxQLHistQuery({ ...q, source: { level: 'base', rp: 'week' } })).toBe(`SELECT sum("count") AS "count" FROM "week"."tcp_connect_hist" ${tail}`);
    expect(() => buildInfluxQLHistQuery({ ...q, source: { level: '5m' as never } })).toThrow(/unknown resolution "5m"/);
    expect(() => buildInfluxQLHistQuery({ ...q, source: { level: '1h', rp: '' } })).toThrow(/source rp/);
    expect(() => buildInfluxQLHistQuery({ ...q, source: { level: '1h', rp: 'a\nb' } })).toThrow(/control characters/);
  });

  test('Flux reads a rollup from the rollup bucket (default <bucket>_rollups) and its measurement', () => {
    const q: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 600_000, metrics: ['count'] };
    const head = (text: string) => text.split('\n').slice(0, 3);
    expect(head(buildFluxHistQuery({ ...q, source: { level: '10m' } }, { bucket: 'tcplat' }))).toEqual([
      'data = from(bucket: "tcplat_rollups")',
      '  |> range(start: 2025-11-25T19:46:40.000Z, stop: 2025-11-25T20:46:40.000Z)',
      '  |> filter(fn: (r) => r._measurement == "tcp_connect_hist_10m")',
    ]);
    expect(head(buildFluxHistQuery({ ...q, source: { level: '1h', bucket: 'long' } }, { bucket: 'tcplat' }))[0]).toBe('data = from(bucket: "long")');
    expect(head(buildFluxHistQuery({ ...q, source: { level: 'base' } }, { bucket: 'tcplat' }))).toEqual([
      'data = from(bucket: "tcplat")',
      '  |> range(start: 2025-11-25T19:46:40.000Z, stop: 2025-11-25T20:46:40.000Z)',
      '  |> filter(fn: (r) => r._measurement == "tcp_connect_hist")',
    ]);
  });

  test.each(HOSTILE)('hostile retention policy or bucket %j stays inside one literal', (v) => {
    const q: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 600_000, metrics: ['count'] };
    const influxql = buildInfluxQLHistQuery({ ...q, source: { level: '10m', rp: v } });
    expect(influxql.replace(/"(?:\\.|[^"\\])*"/gs, '""')).toBe(
      `SELECT sum("") AS "" FROM "".""` + ` WHERE time >= 1764100000000ms AND time < 1764103600000ms GROUP BY time(600000ms) fill(none)`,
    );
    for (const text of [buildFluxHistQuery({ ...q, source: { level: '10m', bucket: v } }, { bucket: 'b' }), buildFluxHistQuery({ ...q, source: { level: '10m' } }, { bucket: v })]) {
      const skeleton = text.replace(/"(?:\\.|[^"\\])*"/gs, '""');
      expect(skeleton.split('\n')[0]).toBe('data = from(bucket: "")');
      expect(skeleton.split('\n')[2]).toBe('  |> filter(fn: (r) => r._measurement == "")');
      expect(text).not.toMatch(/[^\\]\$\{/);
    }
  });

  test('labels name what was read', () => {
    expect(HIST_LEVELS.map((l) => levelLabel(l))).toEqual(['10 s data', '1 min rollups', '10 min rollups', '1 h rollups']);
    expect(levelLabel('base', 60_000)).toBe('1 min data');
  });
});

describe('the measurement a query reads (issues 15 and 16: tcp_session_hist, tls_handshake_hist)', () => {
  const q: HistQuery = { fromMs: FROM, toMs: TO, windowMs: 60_000, metrics: ['buckets', 'count'] };
  const tail = `WHERE time >= 1764100000000ms AND time < 1764103600000ms GROUP BY time(60000ms) fill(none)`;

  test('tls_handshake_hist: the connect schema, only the measurement changes (and its rollups would be named after it)', () => {
    const connect = buildInfluxQLHistQuery(q);
    expect(buildInfluxQLHistQuery({ ...q, measurement: 'tls_handshake_hist' })).toBe(connect.replace('"tcp_connect_hist"', '"tls_handshake_hist"'));
    expect(buildFluxHistQuery({ ...q, measurement: 'tls_handshake_hist' }, { bucket: 'b' })).toBe(buildFluxHistQuery(q, { bucket: 'b' }).replace('"tcp_connect_hist"', '"tls_handshake_hist"'));
    expect(buildInfluxQLHistQuery({ ...q, metrics: ['count'], measurement: 'tls_handshake_hist', source: { level: '1h' } })).toContain('FROM "tcplat_rollups"."tls_handshake_hist_1h"');
  });

  test('tcp_session_hist: the lifespan bucket fields, and no result tag to filter or group on', () => {
    const text = buildInfluxQLHistQuery({ ...q, measurement: 'tcp_session_hist', filters: { service: ['api'] }, groupBy: ['dst'] });
    expect(text).toContain('FROM "tcp_session_hist"');
    for (const f of SESSION_BUCKET_FIELDS) expect(text).toContain(`sum("${f}") AS "${f}"`);
    expect(text).not.toContain('"le_0.01"');
    expect(histColumns(['buckets'], 'tcp_session_hist').map((c) => c.field)).toEqual([...SESSION_BUCKET_FIELDS]);
    expect(() => buildInfluxQLHistQuery({ ...q, measurement: 'tcp_session_hist', filters: { result: ['ok'] } })).toThrow(/tcp_session_hist has no "result" tag/);
    expect(() => buildFluxHistQuery({ ...q, measurement: 'tcp_session_hist', groupBy: ['result'] }, { bucket: 'b' })).toThrow(/no "result" tag/);
    expect(() => buildInfluxQLHistQuery({ ...q, measurement: 'tcp_session_hist', metrics: ['synRetrans'] })).toThrow(/no syn_retrans/);
    // An empty result filter is no filter: allowed.
    expect(() => buildInfluxQLHistQuery({ ...q, measurement: 'tcp_session_hist', filters: { result: [] } })).not.toThrow();
    expect(() => buildInfluxQLHistQuery({ ...q, measurement: 'tcp_session' as never })).toThrow(/unknown histogram measurement "tcp_session"/);
  });

  test.each(HOSTILE)('hostile value %j in a tcp_session_hist / tls_handshake_hist query stays inside one string literal', (v) => {
    for (const measurement of ['tcp_session_hist', 'tls_handshake_hist'] as const) {
      const iql = buildInfluxQLHistQuery({ ...q, metrics: ['count'], measurement, filters: { service: [v], dst: [v] } });
      expect(iql.replace(/'(?:\\.|[^'\\])*'/gs, "''")).toBe(`SELECT sum("count") AS "count" FROM "${measurement}" WHERE time >= 1764100000000ms AND time < 1764103600000ms AND "service" = '' AND "dst" = '' GROUP BY time(60000ms) fill(none)`);
      const flux = buildFluxHistQuery({ ...q, metrics: ['count'], measurement, filters: { service: [v] } }, { bucket: 'b' });
      expect(flux.replace(/"(?:\\.|[^"\\])*"/gs, '""').split('\n')[3]).toBe('  |> filter(fn: (r) => r[""] == "")');
    }
  });

  test('rollups: every histogram measurement has them, from the one table ROLLUP_SCHEMAS (the one switch)', () => {
    expect(ROLLED_UP_MEASUREMENTS).toEqual(['tcp_connect_hist', 'tls_handshake_hist', 'tcp_session_hist']);
    expect(rollupLevelsFor('tcp_connect_hist')).toEqual(ROLLUP_WINDOWS.map((w) => w.name));
    expect(rollupLevelsFor('tcp_connect_hist', ['1h'])).toEqual(['1h']);
    expect(rollupLevelsFor('tcp_session_hist')).toEqual(ROLLUP_WINDOWS.map((w) => w.name));
    expect(rollupLevelsFor('tls_handshake_hist')).toEqual(ROLLUP_WINDOWS.map((w) => w.name));
    // tcp_session_hist: no result tag; its session fields summed, min_ms/max_ms kept as min/max.
    const session = rollupSchemaOf('tcp_session_hist');
    expect(session.tags).toEqual(['host', 'service', 'dst']);
    const agg = Object.fromEntries(session.columns.map((c) => [c.field, c.agg]));
    expect(agg).toMatchObject({ count: 'sum', sum_ms: 'sum', min_ms: 'min', max_ms: 'max', retrans: 'sum', resets_in: 'sum', resets_out: 'sum', zero_windows: 'sum' });
    for (const f of SESSION_BUCKET_FIELDS) expect(agg[f]).toBe('sum');
    expect(rollupSchemaOf('tls_handshake_hist').columns).toEqual(rollupSchemaOf('tcp_connect_hist').columns);
    expect(() => rollupSchemaOf('tcp_connect')).toThrow(/has no rollups/);
  });

  test('readHistLevels reads a tcp_session_hist rollup level when one was picked (per host: it has no fleet rollups)', async () => {
    const seen: HistQuery[] = [];
    const run = async (x: HistQuery): Promise<HistRow[]> => {
      seen.push(x);
      return x.source?.level === '1h' ? [{ timeMs: q.fromMs, tags: {}, values: { count: 3 } }] : [];
    };
    const read = await readHistLevels(run, 'influxql', { ...q, windowMs: 3_600_000, measurement: 'tcp_session_hist' }, '1h', { levels: ['1m', '10m', '1h'], rp: 'r', fleet: true }, TO + 86_400_000);
    expect(read.level).toBe('1h');
    expect(seen[0]).toMatchObject({ measurement: 'tcp_session_hist', source: { level: '1h', rp: 'r' } });
    expect(seen.every((x) => !x.source?.fleet)).toBe(true);
  });

  test('readHistLevels reads the 10 s data when the levels allowed hold no rollup level', async () => {
    const seen: HistQuery[] = [];
    const run = async (x: HistQuery): Promise<HistRow[]> => {
      seen.push(x);
      return [];
    };
    const read = await readHistLevels(run, 'influxql', { ...q, windowMs: 3_600_000, measurement: 'tcp_session_hist' }, '1h', { levels: [], rp: 'r' }, TO + 86_400_000);
    expect(read.level).toBe('base');
    expect(seen.map((x) => [x.source?.level, x.measurement])).toEqual([['base', 'tcp_session_hist']]);
    expect(read.note).toBeUndefined();
  });
});

describe('fleet rollups: which measurement each range of a query over every host reads', () => {
  const H = 3_600_000;
  const D = 24 * H;
  const NOW = Date.UTC(2026, 10, 30, 12, 34, 56);
  // 7 d in 1 h bins, as the renderer asks at 1,000 px.
  const q: HistQuery = { fromMs: Math.floor((NOW - 7 * D) / H) * H, toMs: NOW, windowMs: H, metrics: ['count'] };
  const where = { levels: ROLLUP_WINDOWS.map((w) => w.name), rp: 'tcplat_rollups', fleet: true };
  /**
   * Data of one connect per second everywhere: answers each bin's share of the range asked (the fleet
   * rollup only for bins inside [fleetFrom, fleetTo)), and records what was asked.
   */
  function store(fleetFrom: number, fleetTo: number) {
    const asked: { measurement: string; fromMs: number; toMs: number }[] = [];
    const run = async (x: HistQuery): Promise<HistRow[]> => {
      const m = buildInfluxQLHistQuery(x).match(/FROM "[^"]+"\."([^"]+)"|FROM "([^"]+)"/)!;
      const measurement = m[1] ?? m[2];
      asked.push({ measurement, fromMs: x.fromMs, toMs: x.toMs });
      const rows: HistRow[] = [];
      for (let t = Math.floor(x.fromMs / x.windowMs) * x.windowMs; t < x.toMs; t += x.windowMs) {
        if (x.source?.fleet && (t < fleetFrom || t >= fleetTo)) continue;
        rows.push({ timeMs: t, tags: {}, values: { count: (Math.min(t + x.windowMs, x.toMs) - Math.max(t, x.fromMs)) / 1000 } });
      }
      return rows;
    };
    return { asked, run };
  }
  const fleetEnd = Math.floor((NOW - FLEET_LAG_MS) / H) * H;

  test('a query over every host reads the fleet rollup up to the windows it may lag behind, per-host levels after', async () => {
    const s = store(0, Infinity);
    const read = await readHistLevels(s.run, 'influxql', q, '1h', where, NOW);
    expect(read.fleet).toBe(true);
    expect(read.note).toBeUndefined();
    expect(read.parts[0]).toEqual({ level: '1h', fromMs: q.fromMs, toMs: fleetEnd, fleet: true });
    expect(read.parts.slice(1).every((p) => !p.fleet && p.fromMs >= fleetEnd)).toBe(true);
    expect(read.parts.at(-1)!.level).toBe('base');
    expect(s.asked[0]).toEqual({ measurement: 'tcp_connect_hist_fleet_1h', fromMs: q.fromMs, toMs: fleetEnd });
    // Nothing before fleetEnd is read per host: the cost is one series per service, dst, result.
    expect(s.asked.filter((a) => !a.measurement.includes('fleet') && a.fromMs < fleetEnd)).toEqual([]);
    expect(levelLabel(read.level, undefined, read.fleet)).toBe('1 h fleet rollups');
    // 24 h at 10 min bins reads the 10 min fleet rollup.
    const s10 = store(0, Infinity);
    const r10 = await readHistLevels(s10.run, 'influxql', { ...q, fromMs: NOW - D - ((NOW - D) % 600_000), windowMs: 600_000 }, '10m', where, NOW);
    expect([r10.fleet, s10.asked[0].measurement]).toEqual([true, 'tcp_connect_hist_fleet_10m']);
  });

  test('a host filter, grouping by host, a level without a fleet rollup, or fleet reading off: per-host levels only', async () => {
    for (const [x, level, w] of [
      [{ ...q, filters: { host: ['web-1'] } }, '1h', where],
      [{ ...q, groupBy: ['host'] }, '1h', where],
      [{ ...q, series: [{ host: 'web-1', service: 'api' }] }, '1h', where],
      [{ ...q, windowMs: 60_000 }, '1m', where],
      [q, '1h', { ...where, fleet: false }],
    ] as [HistQuery, HistLevel, typeof where][]) {
      const s = store(0, Infinity);
      const read = await readHistLevels(s.run, 'influxql', x, level, w, NOW);
      expect(read.fleet).toBeUndefined();
      expect(s.asked.some((a) => a.measurement.includes('fleet'))).toBe(false);
    }
    expect(coversAllHosts({ ...q, filters: { host: [] } })).toBe(true);
  });

  test('fleet rollups that start late or stop early: those bins are read per host, whole, and the note says so; no bin counted twice', async () => {
    const from = q.fromMs + 2 * D + 30 * 60_000; // mid-bin
    const to = fleetEnd - D;
    const s = store(from, to);
    const read = await readHistLevels(s.run, 'influxql', q, '1h', where, NOW);
    expect(read.fleet).toBe(true);
    // The first and last bins the fleet rollup answers may hold only some of their windows: they are read
    // per host, with everything before and after them.
    const firstFleetBin = Math.floor(from / H) * H + H;
    const lastFleetBin = to - H;
    expect(read.parts.find((p) => p.fleet)).toEqual({ level: '1h', fromMs: firstFleetBin + H, toMs: lastFleetBin, fleet: true });
    expect(read.parts.filter((p) => !p.fleet && p.fromMs < fleetEnd).map((p) => [p.fromMs, p.toMs])).toEqual([
      [q.fromMs, firstFleetBin + H],
      [lastFleetBin, fleetEnd],
    ]);
    expect(read.note).toMatch(/^before .* UTC: per-host data \(no fleet rollups there; run tcplat rollup\); after .* UTC: per-host data \(fleet rollups end there: is tcplat rollup --follow running\?\)$/);
    // Every second counted once: whole bins 3,600, the open last one up to now.
    expect(read.rows.length).toBe(Math.ceil((q.toMs - q.fromMs) / H));
    expect(read.rows.slice(0, -1).every((r) => r.values.count === 3600)).toBe(true);
    expect(read.rows.at(-1)!.values.count).toBe((NOW - Math.floor(NOW / H) * H) / 1000);
  });

  test('no fleet rollups at all (never made, or their store missing): per-host levels, no note', async () => {
    const s = store(0, 0);
    const read = await readHistLevels(s.run, 'influxql', q, '1h', where, NOW);
    expect([read.fleet, read.note, read.fallback]).toEqual([undefined, undefined, undefined]);
    expect(read.rows.length).toBe(Math.ceil((q.toMs - q.fromMs) / H));
    const missing = async (x: HistQuery) => {
      if (x.source?.fleet) throw new Error('retention policy not found: tcplat_rollups');
      return s.run(x);
    };
    expect((await readHistLevels(missing, 'influxql', q, '1h', where, NOW)).rows.length).toBe(Math.ceil((q.toMs - q.fromMs) / H));
  });
});
