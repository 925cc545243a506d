/**
 * Saved queries change shape only here. Version 1 is the first shape; what came before it (a single
 * `service` string from hand-written dashboards, a missing or unknown metric) is read into it.
 */
import { HIST_QUERY_TAGS, type HistQueryTag } from '@tcplat/core';
import { DEFAULT_QUERY, METRICS, QUERY_VERSION, VARIABLE_TAG, type Metric, type TcplatQuery, type TcplatVariableQuery, type VariableKind } from './types';

function list(v: unknown): string[] | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const items = Array.isArray(v) ? v : [v];
  const out = items.filter((x): x is string | number => typeof x === 'string' || typeof x === 'number').map(String).filter((x) => x !== '');
  return out.length ? out : undefined;
}

export function migrateQuery(raw: TcplatQuery): TcplatQuery {
  if (raw.version === QUERY_VERSION) return raw;
  const q = { ...raw } as TcplatQuery & Record<string, unknown>;
  for (const tag of HIST_QUERY_TAGS) {
    const v = list(q[tag]);
    if (v) q[tag] = v;
    else delete q[tag];
  }
  if (!(METRICS as readonly string[]).includes(q.metric as string)) q.metric = DEFAULT_QUERY.metric as Metric;
  const g = list(q.groupBy)?.filter((x): x is HistQueryTag => (HIST_QUERY_TAGS as readonly string[]).includes(x));
  q.groupBy = g ?? (raw.groupBy === undefined ? [...(DEFAULT_QUERY.groupBy ?? [])] : []);
  q.version = QUERY_VERSION;
  return q;
}

/** Variable queries: the object shape, or a bare word (`services`, `destinations`, `hosts`). */
export function migrateVariableQuery(raw: TcplatVariableQuery | string | undefined): TcplatVariableQuery {
  if (typeof raw === 'string') {
    const kind = raw.trim().toLowerCase();
    return { refId: 'variable', kind: (kind in VARIABLE_TAG ? kind : 'services') as VariableKind };
  }
  if (!raw || !(raw.kind in VARIABLE_TAG)) return { refId: 'variable', ...(raw ?? {}), kind: 'services' };
  return raw;
}
