import {
  BUCKET_COUNT,
  BUCKET_FIELDS,
  bucketIndex,
  buildInfluxQLHistQuery,
  encodePoints,
  histRowsFromInfluxQL,
  queryInfluxQL,
  writeLines,
  type HistQuery,
  type HistQueryTag,
  type HistRow,
  type InfluxV1Target,
} from '@tcplat/core';
import { dropDatabase, freshDatabase, missingInflux } from '../../tests/support/influx';
import { describeWith } from '../../tests/support/prereq';
import { seedPoints } from '../../tests/renderer-support';
import { influxSource, MAX_BUCKET_QUERIES, MAX_PLANNED_SERIES, mergeRows, planBucketReads, seriesRanges, type SeriesRange } from './data';

const tags = (service: string, dst: string, host = 'h1', result = 'ok'): Record<HistQueryTag, string> => ({ service, dst, host, result });

test('mergeRows: the base rows joined with bucket rows, a bucket answered by several queries added up', () => {
  const base: HistRow[] = [
    { timeMs: 2, tags: { dst: 'x' }, values: { count: 3, min_ms: 0.1 } },
    { timeMs: 1, tags: { dst: 'x' }, values: { count: 1 } },
  ];
  const a = [
    { timeMs: 1, tags: { dst: 'x' }, values: { le_1: 1 } },
    { timeMs: 2, tags: { dst: 'x' }, values: { le_1: 2, le_4: 0 } },
  ];
  const b = [
    { timeMs: 2, tags: { dst: 'x' }, values: { le_1: 1 } },
    { timeMs: 2, tags: { dst: 'y' }, values: { le_1: 5 } },
  ];
  expect(mergeRows(base, [a, b])).toEqual([
    { timeMs: 1, tags: { dst: 'x' }, values: { count: 1, le_1: 1 } },
    { timeMs: 2, tags: { dst: 'x' }, values: { count: 3, min_ms: 0.1, le_1: 3, le_4: 0 } },
    { timeMs: 2, tags: { dst: 'y' }, values: { le_1: 5 } },
  ]);
  // The base rows are copied, not changed.
  expect(base[0].values).toEqual({ count: 3, min_ms: 0.1 });
});

test('seriesRanges: min and max over the rows of each series; a series missing either reads every bucket', () => {
  const rows: HistRow[] = [
    { timeMs: 0, tags: tags('rails', 'pg'), values: { min_ms: 0.3, max_ms: 2 } },
    { timeMs: 9, tags: tags('rails', 'pg'), values: { min_ms: 0.2, max_ms: 1010 } },
    { timeMs: 0, tags: { service: 'rails', dst: 'redis' }, values: { min_ms: 0.05, max_ms: 0.09 } },
    { timeMs: 0, tags: tags('rails', 'odd'), values: { max_ms: 3 } },
  ];
  expect(seriesRanges(rows)).toEqual([
    { tags: tags('rails', 'pg'), lo: bucketIndex(0.2), hi: bucketIndex(1010) },
    { tags: { service: 'rails', dst: 'redis', host: '', result: '' }, lo: bucketIndex(0.05), hi: bucketIndex(0.09) },
    { tags: tags('rails', 'odd'), lo: 0, hi: BUCKET_COUNT - 1 },
  ]);
});

/** Which bucket fields each series is read for, over all reads of a plan; throws when a series is read twice. */
function coverage(ranges: SeriesRange[], plan: ReturnType<typeof planBucketReads>): Map<string, Set<string>> {
  const key = (t: Record<string, string>) => JSON.stringify(t);
  const out = new Map<string, Set<string>>(ranges.map((r) => [key(r.tags), new Set<string>()]));
  for (const read of plan) {
    for (const s of read.series ?? ranges.map((r) => r.tags)) {
      const have = out.get(key(s))!;
      for (const f of read.fields) {
        if (have.has(f)) throw new Error(`${key(s)} reads ${f} twice`);
        have.add(f);
      }
    }
  }
  return out;
}

test('planBucketReads: series with the same range share a read; each series in one read, with every bucket of its range', () => {
  const ranges: SeriesRange[] = [
    { tags: tags('rails', 'pg', 'h1'), lo: 8, hi: 26 },
    { tags: tags('rails', 'pg', 'h2'), lo: 8, hi: 26 },
    { tags: tags('rails', 'redis', 'h1'), lo: 4, hi: 6 },
    { tags: tags('rails', 'redis', 'h2'), lo: 4, hi: 6 },
    { tags: tags('rails', 'pg', 'h1', 'refused'), lo: 3, hi: 3 },
  ];
  const plan = planBucketReads(ranges);
  expect(plan.length).toBeGreaterThan(1);
  expect(plan.length).toBeLessThanOrEqual(MAX_BUCKET_QUERIES);
  const pg = plan.find((r) => r.series?.some((s) => s.dst === 'pg' && s.result === 'ok'))!;
  expect(pg.fields).toEqual(BUCKET_FIELDS.slice(8, 27));
  expect(pg.series).toHaveLength(2);
  const cov = coverage(ranges, plan);
  for (const r of ranges) expect([...cov.get(JSON.stringify(r.tags))!]).toEqual(expect.arrayContaining(BUCKET_FIELDS.slice(r.lo, r.hi + 1)));
  // The small ranges may share a query (one more field for the refused series costs less than a query),
  // but far fewer (series, field) reads than one range for all: 5 x 24.
  const reads = plan.reduce((a, r) => a + r.fields.length * (r.series?.length ?? ranges.length), 0);
  expect(reads).toBeLessThanOrEqual(2 * 19 + 3 * 4);
});

test('planBucketReads: one range for all is one read over every series (split in two halves when wide); none for no series', () => {
  expect(planBucketReads([])).toEqual([]);
  const narrow = planBucketReads([{ tags: tags('a', 'b'), lo: 5, hi: 7 }]);
  expect(narrow).toEqual([{ series: null, fields: BUCKET_FIELDS.slice(5, 8) }]);
  const wide = planBucketReads([
    { tags: tags('a', 'b'), lo: 0, hi: 30 },
    { tags: tags('a', 'c'), lo: 0, hi: 30 },
  ]);
  expect(wide).toHaveLength(2);
  expect(wide.every((r) => r.series === null)).toBe(true);
  expect([...wide[0].fields, ...wide[1].fields].sort()).toEqual(BUCKET_FIELDS.slice(0, 31).sort());
});

test('planBucketReads: random ranges: at most MAX_BUCKET_QUERIES reads, each series read once for at least its range', () => {
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 16807) % 2147483647) % n);
  for (let round = 0; round < 200; round++) {
    const n = 1 + rnd(round < 190 ? 40 : MAX_PLANNED_SERIES + 20);
    const ranges: SeriesRange[] = Array.from({ length: n }, (_, i) => {
      const lo = rnd(BUCKET_COUNT);
      return { tags: tags('s', `d${i}`), lo, hi: lo + rnd(BUCKET_COUNT - lo) };
    });
    const plan = planBucketReads(ranges);
    expect(plan.length).toBeGreaterThan(0);
    expect(plan.length).toBeLessThanOrEqual(MAX_BUCKET_QUERIES);
    const cov = coverage(ranges, plan);
    for (const r of ranges) {
      const have = cov.get(JSON.stringify(r.tags))!;
      for (let k = r.lo; k <= r.hi; k++) expect(have.has(BUCKET_FIELDS[k])).toBe(true);
    }
  }
});

const HOUR = 3_600_000;
const T0 = Date.UTC(2025, 10, 24, 0, 0, 0);
const T1 = T0 + 6 * HOUR;

/** Rows of one query reading every field at once: what the narrowed reads must add up to. */
async function reference(target: InfluxV1Target, q: HistQuery): Promise<HistRow[]> {
  const [series] = await queryInfluxQL(target, buildInfluxQLHistQuery({ ...q, fields: undefined }), { method: 'POST' });
  return histRowsFromInfluxQL(series ?? [], q.groupBy ?? []);
}

/** Rows with every bucket field present (absent = not read = zero), in a fixed order. */
function canonical(rows: HistRow[]): HistRow[] {
  const key = (r: HistRow) => JSON.stringify([r.timeMs, Object.keys(r.tags).sort().map((k) => r.tags[k])]);
  return rows
    .map((r) => {
      const values = { ...r.values };
      for (const f of BUCKET_FIELDS) values[f] = values[f] ?? 0;
      return { timeMs: r.timeMs, tags: r.tags, values };
    })
    .filter((r) => Object.values(r.values).some((v) => v !== 0))
    .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The renderer's query of `q`, with the InfluxQL text of every request it sent to the real server. */
async function queryRecordingSent(target: InfluxV1Target, q: HistQuery): Promise<{ rows: HistRow[]; sent: string[] }> {
  const sent: string[] = [];
  const realFetch = global.fetch;
  const spy = jest.spyOn(global, 'fetch').mockImplementation((input, init) => {
    sent.push(new URLSearchParams(String(init?.body ?? '')).get('q') ?? '');
    return realFetch(input, init);
  });
  try {
    return { rows: await influxSource(target, 10_000).query(q), sent };
  } finally {
    spy.mockRestore();
  }
}

describeWith(missingInflux(), 'narrowed bucket reads on the real InfluxDB 1.x', () => {
  let target: InfluxV1Target;

  beforeAll(async () => {
    target = await freshDatabase('data');
    const points = seedPoints(
      [
        // Handshakes well under a millisecond, and 3 % at one second (a dropped SYN): empty buckets between.
        { service: 'rails', dst: 'pg:5432', host: 'h1', perWindow: 30, latency: (i, w) => ((i + w) % 33 === 0 ? 1010 + w / 100 : 0.25 + 0.01 * (i % 20)) },
        { service: 'rails', dst: 'pg:5432', host: 'h2', perWindow: 12, latency: (i) => 0.2 + 0.3 * i },
        { service: 'rails', dst: 'redis:6379', host: 'h1', perWindow: 20, latency: (i) => 0.06 + 0.002 * i },
        { service: 'rails', dst: 'redis:6379', host: 'h2', perWindow: 20, latency: (i) => 0.061 + 0.002 * i },
        { service: 'rails', dst: 'pg:5432', host: 'h1', result: 'refused', perWindow: 2, latency: () => 0.04 },
        // Drifts over the range, and beyond 10 s (overflow) at the end.
        { service: 'rails', dst: 'api:443', host: 'h1', perWindow: 3, latency: (i, w) => 0.01 * 1.004 ** w * (1 + i) },
        // No host tag at all (the encoder leaves out empty tags).
        { service: 'rails', dst: 'redis:6379', host: '', perWindow: 4, latency: () => 3 },
        { service: "evil' OR 1=1 --", dst: 'x") |> drop() //:1', host: 'h"1', perWindow: 3, latency: (i) => 7 + i },
      ],
      T0,
      T1,
      10_000,
      true,
    );
    for (let i = 0; i < points.length; i += 5000) await writeLines(target, encodePoints(points.slice(i, i + 5000)));
  });

  afterAll(async () => {
    if (target) await dropDatabase(target);
  });

  const cases: [string, Partial<HistQuery>][] = [
    ['heatmap of one service, 5 min bins', { filters: { service: ['rails'] }, windowMs: 300_000 }],
    ['everything, 1 h bins', { windowMs: HOUR }],
    ['percentiles: grouped by dst and result, 10 s bins', { filters: { service: ['rails'] }, windowMs: 10_000, groupBy: ['dst', 'result'] }],
    ['hostile service, grouped by host', { filters: { service: ["evil' OR 1=1 --"] }, windowMs: 600_000, groupBy: ['host'] }],
    ['one host and two destinations, from the middle', { filters: { host: ['h1'], dst: ['pg:5432', 'api:443'] }, windowMs: 120_000, fromMs: T0 + 2 * HOUR + 7 * 60_000 }],
    ['no data in range', { filters: { service: ['nobody'] }, windowMs: 60_000 }],
  ];

  test.each(cases)('the same rows as one query of every field: %s', async (_name, part) => {
    const q: HistQuery = { fromMs: T0, toMs: T1, windowMs: 60_000, metrics: ['buckets', 'count', 'min', 'max'], ...part };
    const { rows, sent } = await queryRecordingSent(target, q);
    const want = await reference(target, q);
    expect(canonical(rows)).toEqual(canonical(want));
    if (part.filters?.service?.[0] === 'nobody') {
      expect(want).toEqual([]);
      return;
    }
    expect(want.length).toBeGreaterThan(0);
    // Every connect is in exactly one bucket: the buckets of each row add up to its count.
    for (const r of rows) expect(BUCKET_FIELDS.reduce((a, f) => a + (r.values[f] ?? 0), 0)).toBe(r.values.count ?? 0);
    if (part.filters?.service?.[0] === 'rails') {
      // Narrowed: bucket queries name their series, and read far fewer fields than one query of all would.
      const bucketQueries = sent.filter((s) => s.includes('sum("le_'));
      expect(bucketQueries.length).toBeGreaterThan(1);
      expect(bucketQueries.some((s) => s.includes(`"host" = 'h2'`))).toBe(true);
    }
  });

  test('a series whose points lack min_ms/max_ms: its buckets fall outside every range read, so every field is read', async () => {
    const db = await freshDatabase('data_nominmax');
    try {
      const t = T0 / 1000;
      // Written by hand (the agent always writes min_ms and max_ms): b has buckets and a count only.
      const lines = [
        `tcp_connect_hist,dst=a,host=h,result=ok,service=s count=1i,le_0.063=1i,min_ms=0.05,max_ms=0.05 ${t}000000000`,
        `tcp_connect_hist,dst=c,host=h,result=ok,service=s count=1i,le_1000=1i,min_ms=900,max_ms=900 ${t}000000000`,
        `tcp_connect_hist,dst=b,host=h,result=ok,service=s count=3i,le_4=3i ${t + 10}000000000`,
      ];
      await writeLines(db, lines.join('\n'));
      const q: HistQuery = { fromMs: T0, toMs: T0 + HOUR, windowMs: 60_000, metrics: ['buckets', 'count', 'min', 'max'] };
      const { rows, sent } = await queryRecordingSent(db, q);
      expect(canonical(rows)).toEqual(canonical(await reference(db, q)));
      expect(rows[0].values).toMatchObject({ count: 5, 'le_0.063': 1, le_4: 3, le_1000: 1 });
      // Narrowed first (a and c apart), then one query of every field.
      expect(sent.some((s) => s.includes(`"dst" = 'a'`))).toBe(true);
      expect(sent[sent.length - 1]).toBe(buildInfluxQLHistQuery(q));
    } finally {
      await dropDatabase(db);
    }
  });
});
