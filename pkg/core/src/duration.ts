/**
 * Durations (`10s`, `1m`, `1h30m`, `500ms`) and Grafana-style time expressions (`now`, `now-1h`, epoch ms,
 * ISO 8601). Errors are DurationError with a message that names the input.
 */

export class DurationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DurationError';
  }
}

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const PART = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)/y;

/** Parse a duration to milliseconds. Accepts compound forms like `1h30m`. */
export function parseDuration(input: string): number {
  const s = String(input).trim();
  if (s === '') throw new DurationError('empty duration: use a number with a unit, e.g. 10s, 500ms, 1m, 1h');
  if (s === '0') return 0;
  let total = 0;
  PART.lastIndex = 0;
  let pos = 0;
  while (pos < s.length) {
    PART.lastIndex = pos;
    const m = PART.exec(s);
    if (!m) {
      throw new DurationError(`invalid duration ${JSON.stringify(input)}: use a number with a unit (ns, us, ms, s, m, h, d, w), e.g. 10s or 1h30m`);
    }
    total += Number(m[1]) * UNIT_MS[m[2]];
    pos = PART.lastIndex;
  }
  if (!Number.isFinite(total)) throw new DurationError(`duration ${JSON.stringify(input)} is too large`);
  return total;
}

/** Latest time accepted anywhere (year 2262: InfluxDB's int64 ns limit). */
export const MAX_TIME_MS = 9_223_372_036_854;

/**
 * Parse a time expression to epoch milliseconds: `now`, `now-1h`, `now+5m`, epoch ms (digits), or an
 * ISO 8601 date. `nowMs` is the reference for relative forms.
 */
export function parseTime(input: string | number, nowMs: number = Date.now()): number {
  if (typeof input === 'number') {
    if (!Number.isFinite(input) || input < 0 || input > MAX_TIME_MS) throw new DurationError(`time ${input} is out of range (epoch ms between 0 and ${MAX_TIME_MS})`);
    return Math.floor(input);
  }
  const s = String(input).trim();
  if (s === 'now') return nowMs;
  const rel = /^now\s*([+-])\s*(.+)$/.exec(s);
  if (rel) {
    const d = parseDuration(rel[2]);
    const t = rel[1] === '-' ? nowMs - d : nowMs + d;
    if (t < 0 || t > MAX_TIME_MS) throw new DurationError(`time ${JSON.stringify(input)} is out of range`);
    return Math.floor(t);
  }
  if (/^\d{1,16}$/.test(s)) return parseTime(Number(s), nowMs);
  if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(s)) {
    const t = Date.parse(s);
    if (Number.isFinite(t)) return parseTime(t, nowMs);
  }
  throw new DurationError(`invalid time ${JSON.stringify(input)}: use now, now-1h, epoch milliseconds or an ISO 8601 date`);
}
