/**
 * Reading tcp_connect_hist: queries come from pkg/core's builders (InfluxQL for 1.x, Flux for 2.x, chosen
 * by the credentials), run with a timeout, and the answer is turned into the same rows for both.
 */
import {
  BUCKET_FIELDS,
  bucketIndex,
  HIST_FIELD,
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  describeTarget,
  FluxResultError,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  InfluxError,
  queryFlux,
  queryInfluxQL,
  type HistQuery,
  type HistRow,
  type InfluxTarget,
} from '@tcplat/core';

export interface HistSource {
  /** Rows of the query; throws InfluxError (status 0 when unreachable) on failure. */
  query(q: HistQuery): Promise<HistRow[]>;
  describe(): string;
  dialect: 'influxql' | 'flux';
}

/** Bucket queries with more fields than this are split in two, run in parallel (InfluxDB uses a core each). */
const SPLIT_FIELDS = 12;

function rowKey(r: HistRow): string {
  return JSON.stringify([r.timeMs, r.tags]);
}

/** Merge rows of queries over the same bins and groups but different fields. */
export function mergeRows(parts: HistRow[][]): HistRow[] {
  const byKey = new Map<string, HistRow>();
  for (const rows of parts) {
    for (const r of rows) {
      const k = rowKey(r);
      const have = byKey.get(k);
      if (have) Object.assign(have.values, r.values);
      else byKey.set(k, { timeMs: r.timeMs, tags: r.tags, values: { ...r.values } });
    }
  }
  return [...byKey.values()].sort((a, b) => a.timeMs - b.timeMs);
}

export function influxSource(target: InfluxTarget, timeoutMs: number): HistSource {
  async function run(q: HistQuery, signal: AbortSignal): Promise<HistRow[]> {
    if (target.version === 1) {
      const [series] = await queryInfluxQL(target, buildInfluxQLHistQuery(q), { method: 'POST', epoch: 'ms', signal });
      return histRowsFromInfluxQL(series ?? [], q.groupBy ?? []);
    }
    const csv = await queryFlux(target, buildFluxHistQuery(q, { bucket: target.bucket }), signal);
    return histRowsFromFluxCsv(csv, q.groupBy ?? []);
  }

  /**
   * Bucket fields dominate the cost of a query (one cursor per field and series), and most of them are
   * zero: first read count/min/max per bin (cheap, and needed anyway), then only the buckets between the
   * smallest min and the largest max of the range, in two parallel queries when there are many.
   * An empty range costs one small query.
   */
  async function twoPhase(q: HistQuery, signal: AbortSignal): Promise<HistRow[]> {
    const scalars = q.metrics.filter((m) => m !== 'buckets');
    const head = await run({ ...q, metrics: [...new Set([...scalars, 'count', 'min', 'max'] as const)], fields: undefined }, signal);
    let lo = Infinity;
    let hi = -Infinity;
    let total = 0;
    for (const r of head) {
      total += r.values[HIST_FIELD.count] ?? 0;
      if ((r.values[HIST_FIELD.count] ?? 0) > 0) {
        lo = Math.min(lo, r.values[HIST_FIELD.minMs] ?? 0);
        hi = Math.max(hi, r.values[HIST_FIELD.maxMs] ?? Infinity);
      }
    }
    if (total <= 0) return head;
    const fields = BUCKET_FIELDS.slice(bucketIndex(lo), bucketIndex(hi) + 1);
    const halves = fields.length > SPLIT_FIELDS ? [fields.filter((_, i) => i % 2 === 0), fields.filter((_, i) => i % 2 === 1)] : [fields];
    const parts = await Promise.all(halves.map((f) => run({ ...q, metrics: ['buckets'], fields: f }, signal)));
    return mergeRows([head, ...parts]);
  }

  return {
    dialect: target.version === 1 ? 'influxql' : 'flux',
    describe: () => describeTarget(target),
    async query(q: HistQuery): Promise<HistRow[]> {
      const signal = AbortSignal.timeout(timeoutMs);
      try {
        return q.metrics.includes('buckets') && q.fields === undefined ? await twoPhase(q, signal) : await run(q, signal);
      } catch (e) {
        if (e instanceof FluxResultError) throw new InfluxError(e.message, 400);
        if (signal.aborted && !(e instanceof InfluxError && e.status !== 0)) {
          throw new InfluxError(`${describeTarget(target)} did not answer within ${timeoutMs} ms`, 0);
        }
        throw e;
      }
    },
  };
}
