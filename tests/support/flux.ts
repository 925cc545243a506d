/** Reading Flux answers (annotated CSV) in tests. */
import { parseCsv } from '@tcplat/core';

/**
 * Every data row of every table, keyed by column name. Annotation rows and blank lines start a new table
 * with its own header. A tag named like one of Flux's own columns (`result`, our schema's tag) wins over
 * Flux's column: the later column of a name is kept.
 */
export function fluxRows(csv: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  let header: string[] | null = null;
  for (const rec of parseCsv(csv)) {
    if (rec.length === 0 || (rec.length === 1 && rec[0] === '') || rec[0].startsWith('#')) {
      header = null;
      continue;
    }
    if (!header) {
      header = rec;
      continue;
    }
    const row: Record<string, string> = {};
    header.forEach((h, i) => (row[h] = rec[i] ?? ''));
    out.push(row);
  }
  return out;
}
