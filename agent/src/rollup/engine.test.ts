import { HIST_FIELD, parseLine, ROLLUP_RP } from '@tcplat/core';
import { HOSTILE } from '../../../tests/support/hostile';
import { chunks, fluxSums, influxQLDuration, influxQLPoints, rollupLine, rollupStore, rowsFromFluxCsv, sumPoints } from './engine';

const H = 3_600_000;

describe('rollup engine (query text and points; the real databases are in tests/rollup.test.ts)', () => {
  test('the rollup store: 1.x the rollup RP of the same database, 2.x the <bucket>_rollups bucket', () => {
    expect(rollupStore({ version: 1, url: 'http://x', db: 'tcplat' }).rollup).toEqual({ version: 1, url: 'http://x', db: 'tcplat', rp: ROLLUP_RP });
    expect(rollupStore({ version: 2, url: 'http://x', org: 'o', bucket: 'b', token: 't' }).rollup).toMatchObject({ bucket: 'b_rollups' });
    expect(rollupStore({ version: 1, url: 'http://x', db: 'd' }, { rp: 'long' }).rollup).toMatchObject({ rp: 'long' });
  });

  test('InfluxQL: the points of every series, fully qualified, the host quoted; summed here per epoch-aligned window', () => {
    const q = influxQLPoints({ version: 1, url: 'http://x', db: 'tc"plat' }, { measurement: 'tcp_connect_hist', fromMs: 60_000, toMs: 120_000, windowMs: 60_000, host: "o'brien\\" });
    expect(q).toMatch(/^SELECT "le_0.01", .*"count", "sum_ms", "min_ms", "max_ms", "syn_retrans" FROM "tc\\"plat".."tcp_connect_hist" /);
    expect(q).toContain(`"host" = 'o\\'brien\\\\'`);
    expect(q).toMatch(/GROUP BY "host", "service", "dst", "result"$/);
    expect(influxQLPoints({ version: 1, url: 'http://x', db: 'd', rp: 'r' }, { measurement: 'm', fromMs: 0, toMs: 1, windowMs: 1 })).toContain(`FROM "d"."r"."m"`);
    const tags = { host: 'h', service: 's', dst: 'd', result: 'ok' };
    const rows = sumPoints(
      [
        { tags, columns: ['time', 'count', 'sum_ms', 'min_ms', 'max_ms'], values: [[60_000, 2, 1.5, 0.5, 1], [119_999, 3, 2.25, 0.25, 2], [120_000, 1, 1, 1, 1], [61_000, 1, null, null, null]] },
        { tags: { host: 'h2' }, columns: ['time', 'count'], values: [[60_000, 7]] },
      ],
      60_000,
    );
    expect(rows).toEqual([
      { timeMs: 60_000, tags, values: { count: 6, sum_ms: 3.75, min_ms: 0.25, max_ms: 2 } },
      { timeMs: 120_000, tags, values: { count: 1, sum_ms: 1, min_ms: 1, max_ms: 1 } },
      { timeMs: 60_000, tags: { host: 'h2', service: '', dst: '', result: '' }, values: { count: 7 } },
    ]);
  });

  test.each(HOSTILE)('a hostile host never escapes its string literal (%#)', (host) => {
    let flux = '';
    try {
      flux = fluxSums({ version: 2, url: 'http://x', org: 'o', bucket: 'b', token: 't' }, { measurement: 'm', fromMs: 0, toMs: 60_000, windowMs: 60_000, host }, 'sum');
    } catch (e) {
      expect((e as Error).name).toBe('QueryValueError');
      return;
    }
    // The filter line holds exactly one string literal for the host, whatever it contains.
    const line = flux.split('\n').find((l) => l.includes('r["host"] =='))!;
    const lit = line.slice(line.indexOf('== ') + 3, line.lastIndexOf(')'));
    expect(lit.startsWith('"') && lit.endsWith('"')).toBe(true);
    // Read the literal back as Flux's scanner does: an unescaped quote would end it early.
    const body = lit.slice(1, -1);
    expect(body).not.toMatch(/(^|[^\\])(\\\\)*"/);
    const unescaped = body.replace(/\\(\$\{|[\\"nrt])/g, (_m, c: string) => ({ n: '\n', r: '\r', t: '\t' })[c] ?? c);
    expect(unescaped).toBe(host);
  });

  test('chunks are aligned to whole hours of the epoch and cover the range', () => {
    expect(chunks(H + 5, 3 * H + 1, 2 * H)).toEqual([
      [H, 2 * H],
      [2 * H, 4 * H],
    ]);
    expect(chunks(0, 1, 6 * H)).toEqual([[0, H]]);
    expect(() => chunks(0, H, 90 * 60_000)).toThrow(/whole number/);
  });

  test('a rollup point keeps the source types: counts are integers, sum/min/max floats; stamped at the window start', () => {
    const line = rollupLine('tcp_connect_hist_1m', { timeMs: 120_000, tags: { host: 'h 1', service: 'api', dst: 'pg:5432', result: 'ok' }, values: { count: 3, sum_ms: 4, min_ms: 1, max_ms: 2, syn_retrans: 0, 'le_0.01': 3 } })!;
    const p = parseLine(line);
    expect(p.measurement).toBe('tcp_connect_hist_1m');
    expect(p.tags).toEqual({ dst: 'pg:5432', host: 'h 1', result: 'ok', service: 'api' });
    expect(String(p.timeNs)).toBe('120000000000');
    expect(line).toContain('count=3i');
    expect(line).toContain('sum_ms=4,');
    expect(line).toContain('le_0.01=3i');
    expect(rollupLine('m', { timeMs: 0, tags: {}, values: {} })).toBeNull();
  });

  test("Flux answer: the tag `result` is read from its own column, not Flux's yield column", () => {
    const csv = [
      '#datatype,string,long,string,string,string,string,dateTime:RFC3339,long,double',
      '#group,false,false,true,true,true,true,false,false,false',
      '#default,_result,,,,,,,,',
      `,result,table,dst,host,result,service,_time,${HIST_FIELD.count},${HIST_FIELD.sumMs}`,
      ',,0,pg,h1,refused,api,2025-01-01T00:01:00Z,3,4.5',
      '',
    ].join('\r\n');
    expect(rowsFromFluxCsv(csv)).toEqual([{ timeMs: Date.UTC(2025, 0, 1, 0, 1), tags: { host: 'h1', service: 'api', dst: 'pg', result: 'refused' }, values: { count: 3, sum_ms: 4.5 } }]);
  });

  test('retention durations: whole hours at least 1h, or 0 for forever', () => {
    expect(influxQLDuration('400d')).toBe('9600h');
    expect(influxQLDuration('14d')).toBe('336h');
    expect(influxQLDuration('2w')).toBe('336h');
    expect(influxQLDuration('0')).toBe('INF');
    expect(() => influxQLDuration('30m')).toThrow(/hours, days or weeks/);
    expect(() => influxQLDuration('forever')).toThrow(/hours, days or weeks/);
  });
});
