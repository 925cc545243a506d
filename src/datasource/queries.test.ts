import { DataFrameType, FieldType, createDataFrame, getFieldDisplayName, type DataFrame } from '@grafana/data';
import { BUCKET_FIELDS, HIST_FIELD, QueryValueError, SESSION_BUCKET_FIELDS, buildInfluxQLHistQuery, bucketIndex, sessionBucketIndex, type HistRow } from '@tcplat/core';
import { BUCKET_NAMES, expandValues, framesFromRows, planQuery, queryFilters, tagValuesFlux, tagValuesFromFluxCsv, tagValuesInfluxQL, windowFor, type Replace } from './queries';
import type { TcplatQuery } from './types';

/** A templateSrv.replace over fixed variables, like Grafana's: `$name` and `${name}`, format function per value list. */
function replacer(vars: Record<string, string | string[]>): Replace {
  return (target, format) =>
    target.replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => {
      const name = a ?? b;
      if (!(name in vars)) return m;
      return format(vars[name]);
    });
}

describe('expandValues', () => {
  const replace = replacer({ service: ['api', 'web'], one: 'db', hostile: [`x' OR 1=1 --`, 'y") or r._measurement != "z', '${evil}'], all: ['*'], allRe: '.*' });

  test('literal values pass as they are', () => {
    expect(expandValues(['a', 'b'], replace)).toEqual(['a', 'b']);
  });
  test('a multi-value variable gives one value each', () => {
    expect(expandValues(['$service'], replace)).toEqual(['api', 'web']);
    expect(expandValues(['${one}', 'x'], replace)).toEqual(['db', 'x']);
  });
  test('text around a variable is kept for every value', () => {
    expect(expandValues(['svc-$service'], replace)).toEqual(['svc-api', 'svc-web']);
  });
  test('hostile variable values come back exactly, as data', () => {
    expect(expandValues(['$hostile'], replace)).toEqual([`x' OR 1=1 --`, 'y") or r._measurement != "z', '${evil}']);
  });
  test('a value cannot forge the separator', () => {
    const r = replacer({ v: ['a\u001fb'] });
    expect(expandValues(['$v'], r)).toEqual(['a\u001fb']);
  });
  test('* and $__all mean no filter; unknown variables stay text', () => {
    expect(expandValues(['$all'], replace)).toEqual([]);
    expect(expandValues(['$allRe', 'x'], replace)).toEqual([]);
    expect(expandValues(['$nope'], replace)).toEqual(['$nope']);
  });
});

describe('planQuery', () => {
  const range = { fromMs: 1_700_000_000_000, toMs: 1_700_003_600_000 };
  test('percentiles read buckets with min and max; the window is at least the flush window', () => {
    const q: TcplatQuery = { refId: 'A', metric: 'p99', groupBy: ['service'] };
    const p = planQuery(q, {}, range, 2000);
    expect(p.hist).toMatchObject({ metrics: ['buckets', 'min', 'max'], windowMs: 10_000, groupBy: ['service'], fromMs: range.fromMs, toMs: range.toMs });
    expect(windowFor(61_500)).toBe(62_000);
  });
  test('the resolution follows Grafana’s interval: the coarsest level that fits, bins of whole windows; none when rollups are off', () => {
    const at = (intervalMs: number, levels?: []) => {
      const p = planQuery({ refId: 'A', metric: 'p99' }, {}, range, intervalMs, levels);
      return [p.level, p.hist.windowMs];
    };
    expect([at(2000), at(15_000), at(60_000), at(90_000), at(600_000), at(900_000), at(1_800_000), at(3_600_000), at(3_600_000, [])]).toEqual([
      ['base', 10_000],
      ['base', 20_000],
      ['1m', 60_000],
      ['1m', 120_000],
      ['10m', 600_000],
      ['10m', 1_200_000],
      ['10m', 1_800_000],
      ['1h', 3_600_000],
      ['base', 3_600_000],
    ]);
  });
  test('error rate also groups by result in the database', () => {
    const p = planQuery({ refId: 'A', metric: 'errorRate', groupBy: ['service'] }, {}, range, 60_000);
    expect(p.queryGroupBy).toEqual(['service', 'result']);
    expect(p.groupBy).toEqual(['service']);
  });
  test('hostile variable values reach the InfluxQL text only as quoted literals', () => {
    const replace = replacer({ service: [`a' OR 1=1; DROP DATABASE x --`, 'b\\'] });
    const f = queryFilters({ service: ['$service'] }, replace);
    const text = buildInfluxQLHistQuery(planQuery({ refId: 'A', metric: 'p50' }, f, range, 60_000).hist);
    expect(text).toContain(`"service" = 'a\\' OR 1=1; DROP DATABASE x --'`);
    expect(text).toContain(`"service" = 'b\\\\'`);
  });
  test('control characters in a variable are refused with a message naming the tag', () => {
    const f = queryFilters({ dst: ['$d'] }, replacer({ d: 'a\nb' }));
    expect(() => buildInfluxQLHistQuery(planQuery({ refId: 'A', metric: 'p50' }, f, range, 60_000).hist)).toThrow(/filter dst/);
  });
});

function histRow(timeMs: number, tags: Record<string, string>, latencies: number[]): HistRow {
  const values: Record<string, number> = {};
  for (const f of BUCKET_FIELDS) values[f] = 0;
  for (const l of latencies) values[BUCKET_FIELDS[bucketIndex(l)]] += 1;
  values[HIST_FIELD.count] = latencies.length;
  values[HIST_FIELD.sumMs] = latencies.reduce((a, b) => a + b, 0);
  values[HIST_FIELD.minMs] = Math.min(...latencies);
  values[HIST_FIELD.maxMs] = Math.max(...latencies);
  return { timeMs, tags, values };
}

describe('framesFromRows', () => {
  const range = { fromMs: 0, toMs: 120_000 };
  const rows = [
    histRow(0, { service: 'api' }, [1, 1, 1, 1, 100]),
    histRow(60_000, { service: 'api' }, [2]),
    histRow(0, { service: 'web' }, [5]),
  ];
  test('one labelled time series per group', () => {
    const plan = planQuery({ refId: 'A', metric: 'max', groupBy: ['service'] }, {}, range, 60_000);
    const frames = framesFromRows(rows, plan, 'A');
    expect(frames).toHaveLength(2);
    expect(frames[0].fields[1].labels).toEqual({ service: 'api' });
    expect(frames[0].fields[0].values).toEqual([0, 60_000]);
    expect(frames[0].fields[1].values).toEqual([100, 2]);
    expect(frames[0].fields[1].config.unit).toBe('ms');
    expect(frames[1].fields[1].labels).toEqual({ service: 'web' });
  });
  test('p50 comes from the buckets, clamped to min/max', () => {
    const plan = planQuery({ refId: 'A', metric: 'p50', groupBy: ['service'] }, {}, range, 60_000);
    const [api, web] = framesFromRows(rows, plan, 'A');
    expect(api.fields[1].values[0]).toBeGreaterThan(0.63);
    expect(api.fields[1].values[0]).toBeLessThanOrEqual(1);
    expect(web.fields[1].values[0]).toBe(5);
  });
  test('connects/s divides by the window; mean is sum/count', () => {
    // Without group by, the database answers one row per bin.
    const rate = framesFromRows(rows.slice(0, 2), planQuery({ refId: 'A', metric: 'rate' }, {}, range, 60_000), 'A');
    expect(rate).toHaveLength(1);
    expect(rate[0].fields[1].values).toEqual([5 / 60, 1 / 60]);
    expect(rate[0].fields[1].config.unit).toBe('cps');
    const mean = framesFromRows([rows[0]], planQuery({ refId: 'A', metric: 'mean' }, {}, range, 60_000), 'A');
    expect(mean[0].fields[1].values).toEqual([104 / 5]);
  });
  test('error rate: failures over all attempts per group and bin', () => {
    const r = [
      { timeMs: 0, tags: { service: 'api', result: 'ok' }, values: { count: 9 } },
      { timeMs: 0, tags: { service: 'api', result: 'refused' }, values: { count: 1 } },
      { timeMs: 60_000, tags: { service: 'api', result: 'ok' }, values: { count: 4 } },
    ];
    const plan = planQuery({ refId: 'A', metric: 'errorRate', groupBy: ['service'] }, {}, range, 60_000);
    const [f] = framesFromRows(r, plan, 'A');
    expect(f.fields[1].values).toEqual([0.1, 0]);
    expect(f.fields[1].labels).toEqual({ service: 'api' });
    expect(f.fields[1].config.unit).toBe('percentunit');
  });
  test('histogram buckets: ONE heatmap-rows frame summing every group, non-cumulative, bounds numeric and ordered', () => {
    const plan = planQuery({ refId: 'A', metric: 'buckets', groupBy: ['service'] }, {}, range, 60_000);
    expect(plan.queryGroupBy).toEqual([]);
    const frames = framesFromRows(rows, plan, 'A');
    expect(frames).toHaveLength(1);
    const [f] = frames;
    expect(f.meta?.type).toBe('heatmap-rows');
    expect(f.meta?.custom).toMatchObject({ resolution: '1m', resolutionLabel: '1 min rollups' });
    expect(f.meta?.notices?.[0].text).toMatch(/summed over every service.*repeat the panel/);
    const names = f.fields.slice(1).map((x) => x.name);
    expect(names).toEqual(BUCKET_NAMES);
    expect(names.at(-1)).toBe('+Inf');
    // api: 4 connects at 1 ms and 1 at 100 ms at t=0, 1 at 2 ms at t=60s; web: 1 at 5 ms at t=0. As stored: not cumulated.
    expect(f.fields[0].values).toEqual([0, 60_000]);
    const at = (ms: string) => f.fields.find((x) => x.name === ms)!.values;
    expect(at('1')).toEqual([4, 0]);
    expect(at('100')).toEqual([1, 0]);
    expect(at('6.3')).toEqual([1, 0]);
    expect(at('2.5')).toEqual([0, 1]);
    expect(f.fields.slice(1).reduce((s, x) => s + x.values[0], 0)).toBe(6);
    // Without a group-by there is nothing to explain but the resolution read.
    expect(framesFromRows(rows, planQuery({ refId: 'A', metric: 'buckets' }, {}, range, 60_000), 'A')[0].meta?.notices).toEqual([
      { severity: 'info', text: 'Read 1 min rollups (60 s bins): the coarsest resolution with one point per interval.' },
    ]);
    // The 10 s data: no notice; a fallback: a warning that names tcplat rollup.
    expect(framesFromRows(rows, planQuery({ refId: 'A', metric: 'buckets' }, {}, range, 20_000), 'A')[0].meta?.notices).toBeUndefined();
    const fell = framesFromRows(rows, planQuery({ refId: 'A', metric: 'buckets' }, {}, range, 60_000), 'A', { level: 'base', fallback: 'missing', note: 'no rollups (retention policy tcplat_rollups not found): read the 10 s data; run tcplat rollup' })[0];
    expect(fell.meta?.custom).toMatchObject({ resolution: 'base', rollupFallback: 'missing' });
    expect(fell.meta?.notices).toEqual([{ severity: 'warning', text: 'Read the 10 s data: no rollups (retention policy tcplat_rollups not found): read the 10 s data; run tcplat rollup.' }]);
    expect(framesFromRows([], plan, 'A')).toEqual([]);
  });

  test('buckets pass Grafana’s own heatmap rules (prepareHeatmapData + rowsToCellsHeatmap): every connect counted, lowest bound 0', () => {
    const plan = planQuery({ refId: 'A', metric: 'buckets', groupBy: ['service', 'host'] }, {}, range, 60_000);
    const cells = grafanaHeatmapOf(framesFromRows(rows, plan, 'A'));
    // Every connect of every service is in the one heatmap Grafana draws.
    expect(cells.counts.reduce((a, b) => a + b, 0)).toBe(7);
    expect(cells.ordinalFieldName).toBe('yMax');
    expect(cells.yMatchWithLabel).toBe('le');
    expect(cells.yZeroDisplay).toBe('0.0');
    expect(cells.yOrdinalDisplay).toEqual(BUCKET_NAMES);
    expect(cells.yOrdinalLabel).toEqual(BUCKET_NAMES);
    const bounds = cells.yOrdinalLabel.map(parseNumeric);
    expect(bounds.every((b, i) => i === 0 || b > bounds[i - 1])).toBe(true);
  });

  test('the rules catch the shapes of issue 12: one frame per service (last wins) and `service` before `le` (no lower bound)', () => {
    const perService = ['api', 'web'].map((service) =>
      createDataFrame({
        meta: { type: DataFrameType.HeatmapRows },
        fields: [
          { name: 'Time', type: FieldType.time, values: [0] },
          { name: '1', type: FieldType.number, values: [service === 'api' ? 5 : 1], labels: { service, le: '1' } },
          { name: '+Inf', type: FieldType.number, values: [0], labels: { service, le: '+Inf' } },
        ],
      }),
    );
    const cells = grafanaHeatmapOf(perService);
    expect(cells.counts.reduce((a, b) => a + b, 0)).toBe(1); // api's 5 connects are gone
    expect(cells.yMatchWithLabel).toBe('service');
    expect(cells.yZeroDisplay).toBeUndefined();
  });
});

// ---- Grafana's heatmap rules, reimplemented minimally (neither @grafana/data nor another published package
// exports them). Source: grafana/grafana public/app/plugins/panel/heatmap/fields.ts (prepareHeatmapData: the
// first heatmap-cells frame returns at once, otherwise the LAST heatmap-rows frame is kept) and
// public/app/features/transformers/calculateHeatmap/heatmap.ts (rowsToCellsHeatmap: y fields are the number
// fields after the first; cells are `yMax` when the first y field has an `le` label; the label to match is
// the first label key of the first y field, and only `le` gives yZeroDisplay '0.0', the lowest bucket's
// lower bound; yOrdinalDisplay is getFieldDisplayName of each y field; sortAscStrInf parses '+Inf').
// getFieldDisplayName is Grafana's own, from @grafana/data.

function parseNumeric(v?: string | null): number {
  return v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : +(v ?? 0);
}

function grafanaHeatmapOf(frames: DataFrame[]) {
  let rowsHeatmap: DataFrame | undefined;
  for (const frame of frames) if (frame.meta?.type === DataFrameType.HeatmapRows) rowsHeatmap = frame;
  if (!rowsHeatmap) throw new Error('no heatmap-rows frame');
  const frame = rowsHeatmap;
  const yFields = frame.fields.filter((f, i) => f.type === FieldType.number && i > 0);
  const counts: number[] = [];
  for (let t = 0; t < frame.fields[0].values.length; t++) for (const f of yFields) counts.push(f.values[t]);
  const yMatchWithLabel = Object.keys(yFields[0].labels ?? {})[0];
  return {
    ordinalFieldName: yFields[0].labels?.le != null ? 'yMax' : 'y',
    yOrdinalDisplay: yFields.map((f) => getFieldDisplayName(f, frame)),
    yMatchWithLabel,
    yOrdinalLabel: yFields.map((f) => f.labels?.[yMatchWithLabel] ?? ''),
    yZeroDisplay: yMatchWithLabel === 'le' ? '0.0' : undefined,
    counts,
  };
}

describe('tag value queries', () => {
  test('InfluxQL: quoted identifiers and strings only', () => {
    expect(tagValuesInfluxQL('dst', { service: [`a'b`, 'c'] })).toBe(`SHOW TAG VALUES FROM "tcp_connect_hist" WITH KEY = "dst" WHERE ("service" = 'a\\'b' OR "service" = 'c')`);
    expect(tagValuesInfluxQL('service')).toBe('SHOW TAG VALUES FROM "tcp_connect_hist" WITH KEY = "service"');
    expect(() => tagValuesInfluxQL('dst', { service: ['a\r'] })).toThrow(QueryValueError);
  });
  test('Flux: schema.tagValues with quoted strings, no interpolation', () => {
    const q = tagValuesFlux('my"bucket', 'host', { service: ['${x}") or true //'] }, 0);
    expect(q).toContain('schema.tagValues(bucket: "my\\"bucket", tag: "host"');
    expect(q).toContain('r["service"] == "\\${x}\\") or true //"');
    expect(q).toContain('start: 1970-01-01T00:00:00.000Z');
  });
  test('Flux CSV answers', () => {
    const csv = '#datatype,string,long,string\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,api\n,,0,web\n\n';
    expect(tagValuesFromFluxCsv(csv)).toEqual(['api', 'web']);
  });
});

describe('churn and TLS metrics (issues 15, 16)', () => {
  const range = { fromMs: 1_700_000_000_000, toMs: 1_700_000_000_000 + 7 * 86_400_000 };
  const replace = replacer({ service: [`api' OR 1=1 --`, 'web"; DROP'] });

  test('each reads its measurement, and its rollups: churn and TLS pick a rollup level as connects do', () => {
    const plan = (metric: TcplatQuery['metric']) => planQuery({ refId: 'A', metric, groupBy: ['service'] }, {}, range, 600_000);
    expect(plan('p99')).toMatchObject({ measurement: 'tcp_connect_hist', level: '10m' });
    expect(plan('newConnRate')).toMatchObject({ measurement: 'tcp_connect_hist', level: '10m' });
    for (const m of ['openMean', 'lifespanP50', 'lifespanP99', 'shortShare'] as const) expect(plan(m)).toMatchObject({ measurement: 'tcp_session_hist', level: '10m', hist: { measurement: 'tcp_session_hist', windowMs: 600_000 } });
    for (const m of ['tlsP50', 'tlsP99', 'tlsFailureRate', 'tlsRate'] as const) expect(plan(m)).toMatchObject({ measurement: 'tls_handshake_hist', level: '10m', hist: { measurement: 'tls_handshake_hist' } });
  });

  test('new connections are the ok connects; lifespans ignore a result filter and group-by (tcp_session_hist has no result)', () => {
    const f = queryFilters({ service: ['$service'], result: ['refused'] }, replace);
    expect(planQuery({ refId: 'A', metric: 'newConnRate' }, f, range, 60_000).hist.filters).toEqual({ service: [`api' OR 1=1 --`, 'web"; DROP'], result: ['ok'] });
    const life = planQuery({ refId: 'A', metric: 'lifespanP99', groupBy: ['service', 'result'] }, f, range, 60_000);
    expect(life.hist.filters).toEqual({ service: [`api' OR 1=1 --`, 'web"; DROP'] });
    expect(life.groupBy).toEqual(['service']);
    // The hostile variable values reach the text only as quoted literals.
    const text = buildInfluxQLHistQuery(life.hist);
    expect(text).toContain(`FROM "tcp_session_hist"`);
    expect(text.replace(/'(?:\\.|[^'\\])*'/gs, "''")).toMatch(/WHERE time >= \d+ms AND time < \d+ms AND \("service" = '' OR "service" = ''\) GROUP BY/);
    expect(planQuery({ refId: 'A', metric: 'tlsFailureRate', groupBy: ['dst'] }, {}, range, 60_000).queryGroupBy).toEqual(['dst', 'result']);
  });

  test('frames: the churn formulas of pkg/core and the TLS failure share', () => {
    const t = 1_700_000_000_000;
    const sessionBuckets = (short: number, long: number) => {
      const v: Record<string, number> = {};
      SESSION_BUCKET_FIELDS.forEach((f) => (v[f] = 0));
      v[SESSION_BUCKET_FIELDS[sessionBucketIndex(50)]] = short;
      v[SESSION_BUCKET_FIELDS[sessionBucketIndex(5000)]] = long;
      return v;
    };
    const rows: HistRow[] = [{ timeMs: t, tags: {}, values: { ...sessionBuckets(30, 10), count: 40, sum_ms: 30 * 50 + 10 * 5000, min_ms: 50, max_ms: 5000 } }];
    const one = (metric: TcplatQuery['metric']) => framesFromRows(rows, planQuery({ refId: 'A', metric }, {}, { fromMs: t, toMs: t + 60_000 }, 60_000), 'A')[0].fields[1];
    expect([...one('shortShare').values]).toEqual([0.75]);
    expect(one('shortShare').config.unit).toBe('percentunit');
    expect(one('openMean').values[0]).toBeCloseTo(51.5 / 60, 12);
    expect(one('lifespanP50').values[0]).toBeGreaterThanOrEqual(50);
    expect(one('lifespanP50').values[0]).toBeLessThanOrEqual(63);
    expect(one('lifespanP99').values[0]).toBeGreaterThan(4000);
    const tls: HistRow[] = [
      { timeMs: t, tags: { result: 'ok' }, values: { count: 19 } },
      { timeMs: t, tags: { result: 'failed' }, values: { count: 1 } },
    ];
    const fr = framesFromRows(tls, planQuery({ refId: 'A', metric: 'tlsFailureRate' }, {}, { fromMs: t, toMs: t + 60_000 }, 60_000), 'A');
    expect([...fr[0].fields[1].values]).toEqual([0.05]);
  });

  test('no tcp_session_hist in range: the panel says the agent needs --probe-close', () => {
    const frames = framesFromRows([], planQuery({ refId: 'A', metric: 'shortShare' }, {}, range, 60_000), 'A');
    expect(frames[0].meta?.notices?.[0].text).toMatch(/--probe-close/);
    expect(framesFromRows([], planQuery({ refId: 'A', metric: 'tlsP99' }, {}, range, 60_000), 'A')[0].meta?.notices?.[0].text).toMatch(/No tls_handshake_hist/);
    expect(framesFromRows([], planQuery({ refId: 'A', metric: 'p99' }, {}, range, 60_000), 'A')).toEqual([]);
  });
});
