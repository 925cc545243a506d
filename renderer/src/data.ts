/**
 * Reading tcp_connect_hist: queries come from pkg/core's builders (InfluxQL for 1.x, Flux for 2.x, chosen
 * by the credentials), run with a timeout, and the answer is turned into the same rows for both.
 */
import {
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  describeTarget,
  FluxResultError,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  InfluxError,
  queryInfluxQL,
  authHeaders,
  type HistQuery,
  type HistRow,
  type InfluxTarget,
  type InfluxV2Target,
} from '@tcplat/core';

export interface HistSource {
  /** Rows of the query; throws InfluxError (status 0 when unreachable) on failure. */
  query(q: HistQuery): Promise<HistRow[]>;
  describe(): string;
  dialect: 'influxql' | 'flux';
}

async function queryFlux(t: InfluxV2Target, flux: string, signal: AbortSignal): Promise<string> {
  const url = `${t.url.replace(/\/+$/, '')}/api/v2/query?${new URLSearchParams({ org: t.org })}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { ...authHeaders(t), 'Content-Type': 'application/json', Accept: 'application/csv' },
      body: JSON.stringify({ query: flux, type: 'flux', dialect: { header: true, annotations: ['datatype', 'group', 'default'] } }),
      signal,
    });
  } catch (e) {
    throw new InfluxError(`cannot reach ${describeTarget(t)}: ${(e as Error).message}`, 0);
  }
  const text = await res.text();
  if (!res.ok) {
    let msg = text.slice(0, 300);
    try {
      msg = (JSON.parse(text) as { message?: string }).message ?? msg;
    } catch {
      /* not JSON: keep the text */
    }
    throw new InfluxError(`Flux query failed: HTTP ${res.status}: ${msg}`, res.status, text);
  }
  return text;
}

export function influxSource(target: InfluxTarget, timeoutMs: number): HistSource {
  return {
    dialect: target.version === 1 ? 'influxql' : 'flux',
    describe: () => describeTarget(target),
    async query(q: HistQuery): Promise<HistRow[]> {
      const signal = AbortSignal.timeout(timeoutMs);
      try {
        if (target.version === 1) {
          const [series] = await queryInfluxQL(target, buildInfluxQLHistQuery(q), { method: 'POST', epoch: 'ms', signal });
          return histRowsFromInfluxQL(series ?? [], q.groupBy ?? []);
        }
        const csv = await queryFlux(target, buildFluxHistQuery(q, { bucket: target.bucket }), signal);
        return histRowsFromFluxCsv(csv, q.groupBy ?? []);
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
