/**
 * Template variables in filter values, shared by the datasource and the panel: expanded to a list of
 * plain values that the query builders (or the renderer) then quote. Never pasted into query text.
 */
import { QueryValueError } from '@tcplat/core';

/** Grafana's templateSrv.replace, as far as we use it. */
export type Replace = (target: string, format: (value: string | string[]) => string) => string;

// Unit separator: variable values reach us JSON-encoded between two of these, so no value can forge one
// (JSON.stringify writes control characters as \u001f escapes).
const SEP = '\u001f';

/**
 * Expand template variables in a list of filter values: a multi-value variable gives several values, text
 * around a variable is kept (`db-$env` with env = a, b gives db-a, db-b). `*`, `.*` (a variable's custom
 * "All" value) or `$__all` means "no filter" (returns []), as in the renderer. The values are data, never query text: the builders quote them.
 */
export function expandValues(raw: readonly string[] | undefined, replace: Replace): string[] {
  const out: string[] = [];
  for (const v of raw ?? []) {
    if (typeof v !== 'string' || v === '') continue;
    const r = replace(v, (value) => SEP + JSON.stringify((Array.isArray(value) ? value : [value]).map(String)) + SEP);
    if (!r.includes(SEP)) {
      out.push(r);
      continue;
    }
    const parts = r.split(SEP);
    if (parts.length % 2 === 0) throw new QueryValueError(`cannot expand ${JSON.stringify(v)}: a filter value cannot contain control characters`);
    let acc = [''];
    parts.forEach((p, i) => {
      const options = i % 2 === 0 ? [p] : (JSON.parse(p) as string[]);
      acc = acc.flatMap((a) => options.map((o) => a + o));
    });
    out.push(...acc.filter((x) => x !== ''));
  }
  // `.*` is the dashboards' custom "All" value (so a host with hundreds of destinations never sends a list).
  if (out.includes('*') || out.includes('.*') || out.includes('$__all')) return [];
  return [...new Set(out)];
}

