import { bucketIndex, sessionBucketIndex } from '@tcplat/core';
import { budgetWarning, CHURN_HINT, renderTable, sortRows, TopModel, type SessionSummaryRow, type SummaryRow } from './top';

function row(service: string, dst: string, result: string, latencies: number[], retrans = 0): SummaryRow {
  const buckets: Record<string, number> = {};
  for (const l of latencies) buckets[bucketIndex(l)] = (buckets[bucketIndex(l)] ?? 0) + 1;
  return {
    service,
    dst,
    result,
    count: latencies.length,
    sum_ms: latencies.reduce((a, b) => a + b, 0),
    min_ms: Math.min(...latencies),
    max_ms: Math.max(...latencies),
    syn_retrans: retrans,
    buckets,
  };
}

describe('tcplat top model', () => {
  test('merges per-result summaries into one row per service -> destination over the window', () => {
    const m = new TopModel(10_000);
    for (let s = 0; s < 5; s++) {
      m.add({
        ts_ms: 1000 * s,
        series: [
          row('rails', 'pg:5432', 'ok', [1020, 1030, 0.3, 0.3], 2),
          row('rails', 'pg:5432', 'refused', [0.05]),
          row('nest', 'pg:5432', 'ok', new Array(20).fill(0.2)),
        ],
      });
    }
    const rows = m.rows();
    expect(rows).toHaveLength(2);
    const rails = rows.find((r) => r.service === 'rails')!;
    expect(rails.rate).toBeCloseTo(5, 5); // 25 connects over 5 s of summaries
    expect(rails.failures).toEqual({ refused: 5 });
    expect(rails.retrans).toBe(10);
    expect(rails.max).toBe(1030);
    expect(rails.p99).toBeGreaterThan(1000); // the slow handshakes of ok connects, not the fast refusals
    expect(rails.p50).toBeLessThan(1031);
    const nest = rows.find((r) => r.service === 'nest')!;
    expect(nest.rate).toBeCloseTo(20, 5);
    expect(nest.p99).toBeLessThan(0.26);
  });

  test('old summaries leave the window', () => {
    const m = new TopModel(3000);
    m.add({ ts_ms: 0, series: [row('old', 'a:1', 'ok', [1])] });
    for (let s = 1; s <= 4; s++) m.add({ ts_ms: 1000 * s, series: [row('new', 'b:2', 'ok', [1])] });
    expect(m.rows().map((r) => r.service)).toEqual(['new']);
  });

  test('a service with only failures still shows their latency and counts', () => {
    const m = new TopModel(10_000);
    m.add({ ts_ms: 0, series: [row('cron', '10.0.0.9:443', 'timeout', [3000, 3100])] });
    const [r] = m.rows();
    expect(r.failures).toEqual({ timeout: 2 });
    expect(r.max).toBe(3100);
  });

  test('sorting and the plain-text table', () => {
    const m = new TopModel(10_000);
    m.add({ ts_ms: 0, series: [row('a', 'x:1', 'ok', [1, 1, 1]), row('b\u001b[31m', 'y:2', 'ok', [500]), row('c', 'z:3', 'refused', [0.1, 0.1])] });
    const rows = m.rows();
    expect(sortRows(rows, 'rate')[0].service).toBe('a');
    expect(sortRows(rows, 'p99')[0].service).toBe('b\u001b[31m');
    expect(sortRows(rows, 'fail')[0].service).toBe('c');
    const text = renderTable(rows, { sort: 'p99', limit: 10, windowS: 10, agent: 'http://127.0.0.1:7070' }).join('\n');
    expect(text).toContain('SERVICE');
    expect(text).toMatch(/a\s+x:1\s+3\.0\s/);
    expect(text).toContain('refused:2');
    expect(text).not.toContain('\u001b'); // names from the host never reach the terminal as escapes
    expect(renderTable([], { sort: 'rate', limit: 5, windowS: 10, agent: 'u' }).join('\n')).toContain('no connects');
    // Names are shown whole up to the column's cap, whatever the other rows' lengths.
    const m2 = new TopModel(10_000);
    m2.add({ ts_ms: 0, series: [row('checkout-api', 'db:5432', 'ok', [1]), row('a', 'b:1', 'ok', [1]), row('x'.repeat(40), 'c:1', 'ok', [1])] });
    const t2 = renderTable(m2.rows(), { sort: 'name', limit: 10, windowS: 10, agent: 'u' }).join('\n');
    expect(t2).toMatch(/checkout-api +db:5432 /);
    expect(t2).toContain('x'.repeat(27) + '~');
  });
});

describe('tcplat top: the cardinality budget warning', () => {
  const status = (live: number, folded: number) => ({
    series: {
      max_series: 2000,
      measurements: {
        tcp_connect_hist: { budget: 2000, live, other: 3, folded_series: 40, folded_points: { dst: folded, all: 0 }, top: { service: [{ value: 'crawler', series: 1890, folded: 40 }], dst: [{ value: '10.0.0.1:443', series: 2, folded: 0 }] } },
        tcp_connect: { budget: 2000, live: 12, other: 0, folded_series: 0, folded_points: { dst: 0, all: 0 }, top: {} },
      },
    },
  });

  test('one line naming the full measurement and the top contributor, shown under the header', () => {
    const w = budgetWarning(status(2000, 1234));
    expect(w).toBe("! series budget full, new series written as 'other': tcp_connect_hist 2000/2000 (1,234 points folded); top service=crawler (1890 series); see /api/status");
    const lines = renderTable([], { sort: 'rate', limit: 10, windowS: 10, agent: 'http://a', warning: w });
    expect(lines[1]).toBe(w);
  });

  test('nothing when nothing folds, the budget has room again, or the agent predates the budget', () => {
    expect(budgetWarning(status(2000, 0))).toBeNull();
    expect(budgetWarning(status(1500, 99))).toBeNull();
    expect(budgetWarning({ version: 1 })).toBeNull();
    expect(renderTable([], { sort: 'rate', limit: 10, windowS: 10, agent: 'http://a', warning: null })[1]).toMatch(/^SERVICE/);
  });
});

describe('tcplat top TLS columns', () => {
  test("handshakes/s, TLS p50/p99 of successful handshakes and failed handshakes beside the same service -> destination's connects", () => {
    const m = new TopModel(10_000);
    for (let s = 0; s < 4; s++) {
      m.add({
        ts_ms: 1000 * s,
        series: [row('rails', 'api:443', 'ok', [0.4, 0.5])],
        tls: [row('rails', 'api:443', 'ok', [310, 320]), row('rails', 'api:443', 'failed', [5])],
      });
    }
    // A destination with a handshake and no connect in the window (its connect fell before it) still shows.
    m.add({ ts_ms: 4000, series: [], tls: [row('nest', 'auth:443', 'ok', [900])] });
    const rows = m.rows();
    const rails = rows.find((r) => r.service === 'rails')!;
    expect(rails.tls!.rate).toBeCloseTo(12 / 5, 5); // 12 handshakes over 5 s of summaries
    expect(rails.tls!.fail).toBe(4);
    expect(rails.tls!.p50).toBeGreaterThan(300); // the ok handshakes, not the fast failures
    expect(rails.tls!.p99).toBeLessThan(330);
    expect(rails.rate).toBeCloseTo(8 / 5, 5); // connect columns unchanged
    const nest = rows.find((r) => r.service === 'nest')!;
    expect(nest.rate).toBe(0);
    expect(nest.tls!.p99).toBeGreaterThan(800);
    expect(sortRows(rows, 'tls')[0].service).toBe('nest');

    const text = renderTable(rows, { sort: 'name', limit: 10, windowS: 10, agent: 'u' });
    expect(text[0]).toContain('TLS handshakes/s');
    expect(text[1]).toMatch(/SYN-RETX\s+TLS\/S\s+TLS-P50\s+TLS-P99\s+TLS-FAIL\s+FAILURES/);
    const railsLine = text.find((l) => l.startsWith('rails'))!;
    expect(railsLine).toMatch(/\s2\.4\s+3\d\dms\s+3\d\dms\s+4\s+-$/);
    // A row without handshakes: dashes in the TLS group.
    const plain = new TopModel(10_000);
    plain.add({ ts_ms: 0, series: [row('a', 'x:1', 'ok', [1])] });
    expect(renderTable(plain.rows(), { sort: 'rate', limit: 5, windowS: 10, agent: 'u' })[2]).toMatch(/\s0\s+-\s+-\s+-\s+-\s+-$/);
  });

  test('an agent from before issue 16 (no tls rows): no TLS columns for the row, nothing breaks', () => {
    const m = new TopModel(10_000);
    m.add({ ts_ms: 0, series: [row('a', 'x:1', 'ok', [1])] });
    expect(m.rows()[0].tls).toBeUndefined();
  });
});

describe('tcplat top: the churn group (close events, --probe-close)', () => {
  /** One second's closed connections of a series, as agent/src/stream.ts sends them. */
  function closed(service: string, dst: string, lifespans: number[], resets = 0): SessionSummaryRow {
    const buckets: Record<string, number> = {};
    for (const l of lifespans) buckets[sessionBucketIndex(l)] = (buckets[sessionBucketIndex(l)] ?? 0) + 1;
    return { service, dst, count: lifespans.length, sum_ms: lifespans.reduce((a, b) => a + b, 0), min_ms: Math.min(...lifespans), max_ms: Math.max(...lifespans), resets, buckets };
  }

  test('a reusing pool: few new connects, long lifespans; a churning one: connects/s = requests/s, lifespans near the request time', () => {
    const m = new TopModel(10_000);
    for (let s = 0; s < 10; s++) {
      m.add({
        ts_ms: 1000 * s,
        // churn: 50 requests/s, each on a new connection that lives ~20 ms; reuse: 50 requests/s over 4 connections, one replaced every 5 s.
        series: [row('churn', 'api:8080', 'ok', new Array(50).fill(0.1)), row('churn', 'api:8080', 'refused', [0.05]), ...(s % 5 === 0 ? [row('reuse', 'api:8081', 'ok', [0.1])] : [])],
        sessions: [closed('churn', 'api:8080', Array.from({ length: 50 }, (_, i) => 18 + (i % 5)), s === 0 ? 1 : 0), ...(s % 5 === 0 ? [closed('reuse', 'api:8081', [120_000])] : [])],
      });
    }
    expect(m.sawSessions).toBe(true);
    const rows = m.churnRows();
    const churn = rows.find((r) => r.service === 'churn')!;
    expect(churn.newPerS).toBeCloseTo(50, 6); // ok connects only: the refused ones opened nothing
    expect(churn.closedPerS).toBeCloseTo(50, 6);
    expect(churn.lifeP50).toBeGreaterThanOrEqual(18);
    expect(churn.lifeP99).toBeLessThanOrEqual(22);
    expect(churn.underOneS).toBe(1);
    expect(churn.meanOpen).toBeCloseTo((50 * 20) / 1000, 6); // Little's law: 50/s x 20 ms = 1 open on average
    expect(churn.resets).toBe(1);
    const reuse = rows.find((r) => r.service === 'reuse')!;
    expect(reuse.newPerS).toBeCloseTo(0.2, 6);
    expect(reuse.lifeP50).toBe(120_000);
    expect(reuse.underOneS).toBe(0);
    const text = renderTable(m.rows(), { sort: 'rate', limit: 10, windowS: 10, agent: 'u', churn: { rows, saw: true } }).join('\n');
    expect(text).toMatch(/NEW\/S +CLOSED\/S +OPEN~ +LIFE-P50 +LIFE-P99 +<1S +RESETS/);
    expect(text).toMatch(/churn +api:8080 +50\.0 +50\.0 +1\.0 +\d\dms +\d\dms +100% +1/);
    expect(text).toMatch(/reuse +api:8081 +0\.2 +0\.2 +24\.0 +2\.0m +2\.0m +0% +0/);
  });

  test('without close events: a hint naming --probe-close, never empty columns', () => {
    const m = new TopModel(10_000);
    m.add({ ts_ms: 0, series: [row('a', 'x:1', 'ok', [1])] });
    m.add({ ts_ms: 1000, series: [row('a', 'x:1', 'ok', [1])], sessions: [] });
    expect(m.sawSessions).toBe(false);
    const text = renderTable(m.rows(), { sort: 'rate', limit: 10, windowS: 10, agent: 'u', churn: { rows: m.churnRows(), saw: m.sawSessions } });
    expect(text.at(-1)).toBe(CHURN_HINT);
    expect(CHURN_HINT).toContain('--probe-close');
  });
});
