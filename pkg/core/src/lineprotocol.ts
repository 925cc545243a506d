/**
 * InfluxDB line protocol encoder (v1 `/write` and v2 `/api/v2/write` share the format).
 *
 * Escaping, as the real InfluxDB parses it (checked against influxd 1.6.7 by round-trip tests):
 * - measurement: `,` and space are escaped with a backslash;
 * - tag keys, tag values, field keys: `,`, `=` and space are escaped; any other backslash is literal;
 * - string field values: `"` and `\` are escaped; newlines are allowed inside the quotes.
 *
 * Two things line protocol cannot carry in names and tag values, so they are normalised (documented,
 * tested, never silent data loss of the point itself):
 * - control characters would end or break the line: CR, LF and TAB are written as the two characters
 *   `\r`, `\n`, `\t`, any other (NUL, ESC, ...) as `\xNN`;
 * - a backslash at the end, or right before `,`, `=` or space, would escape the separator after it:
 *   it is written as U+FF3C (fullwidth reverse solidus), which looks the same in a legend.
 * An empty tag value is omitted (InfluxDB reads a missing tag as ""). An empty measurement, tag key or
 * field key, a point without fields, and a non-finite float are errors.
 *
 * Names and tag values are capped at MAX_TAG_BYTES (256) bytes of UTF-8, after the normalisation above.
 * InfluxDB refuses a point whose series key (measurement and tags) exceeds 64 KiB, which would cost the
 * whole point; a kernel comm is at most 15 bytes, but tool output, a --source-cmd or a capture can carry
 * anything. A longer value keeps its first bytes and ends with a visible marker: `…#` and 8 hex digits of
 * a hash (FNV-1a) of the whole value, so two long values that share a prefix stay two series.
 */

export class LineProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LineProtocolError';
  }
}

/** An integer field value (written with the `i` suffix). Plain JS numbers are written as floats. */
export class IntValue {
  constructor(readonly value: number | bigint) {}
}

export function int(value: number | bigint): IntValue {
  return new IntValue(value);
}

export type FieldValue = number | IntValue | string | boolean;
export type Tags = Record<string, string | undefined>;
export type Fields = Record<string, FieldValue | undefined>;

export interface Point {
  measurement: string;
  tags?: Tags;
  fields: Fields;
  /** Unix time in ns (bigint or decimal string). Absent: the server's time on arrival. */
  timeNs?: bigint | string;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
// eslint-disable-next-line no-control-regex
const CONTROL_G = /[\x00-\x1f\x7f]/g;
const CONTROL_TEXT: Record<string, string> = { '\r': '\\r', '\n': '\\n', '\t': '\\t' };
const controlText = (c: string): string => CONTROL_TEXT[c] ?? '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0');
// InfluxDB's scanner skips the character after any backslash, but unescapes only `\,`, `\=` and `\ `:
// a backslash right before a separator (or at the end) cannot be written so that it reads back.
const BACKSLASH_BEFORE_SEPARATOR = /\\(?=[,= ]|$)/g;
const TAG_SPECIAL = /[,= ]/;
const TAG_SPECIAL_G = /([,= ])/g;
const MEAS_SPECIAL = /[, ]/;
const MEAS_SPECIAL_G = /([, ])/g;
const STR_SPECIAL = /["\\]/;
const STR_SPECIAL_G = /(["\\])/g;

/** The longest name or tag value written, in bytes of UTF-8 (see the module comment). */
export const MAX_TAG_BYTES = 256;
const MARKER_BYTES = 3 + 1 + 8; // "…" (3 bytes) "#" and 8 hex digits

function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** `s` cut to MAX_TAG_BYTES of UTF-8 with the marker, when longer (never inside a surrogate pair). */
export function capTagValue(s: string): string {
  // A UTF-16 unit is at most 3 bytes of UTF-8: short strings need no count.
  if (s.length * 3 <= MAX_TAG_BYTES) return s;
  const budget = MAX_TAG_BYTES - MARKER_BYTES;
  let bytes = 0;
  let cut = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.codePointAt(i)!;
    const n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if (cut < 0 && bytes + n > budget) cut = i;
    bytes += n;
    if (bytes > MAX_TAG_BYTES) return s.slice(0, cut) + '\u2026#' + fnv1a(s);
    if (c >= 0x10000) i++;
  }
  return s;
}

/** What a name or tag value becomes in InfluxDB after normalisation and the cap (see the module comment). */
export function normalizeName(s: string): string {
  if (CONTROL.test(s)) s = s.replace(CONTROL_G, controlText);
  if (s.includes('\\')) s = s.replace(BACKSLASH_BEFORE_SEPARATOR, '\uFF3C');
  return capTagValue(s);
}

export function escapeMeasurement(name: string): string {
  if (name === '') throw new LineProtocolError('measurement name is empty');
  const s = normalizeName(name);
  return MEAS_SPECIAL.test(s) ? s.replace(MEAS_SPECIAL_G, '\\$1') : s;
}

// Tag keys, tag values and field keys repeat endlessly (a few services, destinations, hosts): remember
// their escaped form. Bounded; cleared when full.
const ESCAPED = new Map<string, string>();
const ESCAPED_MAX = 20_000;

/** Escapes a tag key, tag value or field key. */
export function escapeTag(value: string): string {
  let out = ESCAPED.get(value);
  if (out !== undefined) return out;
  const s = normalizeName(value);
  out = TAG_SPECIAL.test(s) ? s.replace(TAG_SPECIAL_G, '\\$1') : s;
  // Long values are not remembered: the cache would hold on to arbitrarily large strings.
  if (value.length > MAX_TAG_BYTES) return out;
  if (ESCAPED.size >= ESCAPED_MAX) ESCAPED.clear();
  ESCAPED.set(value, out);
  return out;
}

export function escapeStringField(value: string): string {
  return '"' + (STR_SPECIAL.test(value) ? value.replace(STR_SPECIAL_G, '\\$1') : value) + '"';
}

/** A float field value as line protocol writes it; `key` only names the field in the error. */
export function floatText(key: string, v: number): string {
  if (!Number.isFinite(v)) throw new LineProtocolError(`field ${JSON.stringify(key)} is ${v}: InfluxDB stores only finite floats`);
  return String(v);
}

/**
 * `floatText(key, ns / 1e6)` for a whole number of nanoseconds, written as the exact decimal of the
 * milliseconds (digit arithmetic instead of a float-to-shortest-string conversion, the costliest step of
 * a raw point). It reads back as the very same double; for ns below 1e15 it is the same text too.
 */
export function nsAsMsText(key: string, ns: number): string {
  if (!Number.isSafeInteger(ns) || ns < 0) return floatText(key, ns / 1e6);
  let whole = Math.floor(ns / 1e6);
  let frac = ns - whole * 1e6; // exact: whole * 1e6 <= ns < 2^53
  // Near 2^53 the float division can round up to the next integer: correct by one.
  if (frac < 0) {
    whole--;
    frac += 1e6;
  }
  if (frac === 0) return String(whole);
  let digits = String(frac);
  digits = '000000'.slice(digits.length) + digits;
  let end = digits.length;
  while (digits.charCodeAt(end - 1) === 48 /* 0 */) end--;
  return whole + '.' + digits.slice(0, end);
}

/** `n` itself, if it can be an integer field; `key` only names the field in the error. */
export function checkedInt<T extends number | bigint>(key: string, n: T): T {
  if (typeof n === 'number' && !Number.isSafeInteger(n)) throw new LineProtocolError(`field ${JSON.stringify(key)} is not an integer: ${n}`);
  return n;
}

/** An integer field value with its `i` suffix; `key` only names the field in the error. */
export function intText(key: string, n: number | bigint): string {
  return `${checkedInt(key, n)}i`;
}

function encodeFieldValue(key: string, v: FieldValue): string {
  switch (typeof v) {
    case 'number':
      return floatText(key, v);
    case 'string':
      return escapeStringField(v);
    case 'boolean':
      return v ? 'true' : 'false';
    default:
      return intText(key, v.value);
  }
}

const TIMESTAMP = /^-?\d{1,19}$/;

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A point's timestamp as line protocol writes it: integer ns, as a bigint or decimal string. */
export function timeText(t: bigint | string): string {
  if (typeof t === 'bigint') {
    if (t < INT64_MIN || t > INT64_MAX) throw new LineProtocolError(`timestamp ${t} is beyond InfluxDB's int64 nanoseconds`);
    return String(t);
  }
  if (!TIMESTAMP.test(t)) throw new LineProtocolError(`timestamp ${JSON.stringify(t)} is not integer nanoseconds`);
  return t;
}

/** Encode one point as one line (no trailing newline). Tag order is sorted, as InfluxDB recommends. */
export function encodePoint(p: Point): string {
  let line = escapeMeasurement(p.measurement);
  if (p.tags) {
    const keys = Object.keys(p.tags);
    // Builders insert tags in sorted order already; sort only when they are not.
    for (let i = 1; i < keys.length; i++) {
      if (keys[i - 1] > keys[i]) {
        keys.sort();
        break;
      }
    }
    for (const k of keys) {
      const v = p.tags[k];
      if (v === undefined || v === '') continue;
      if (k === '') throw new LineProtocolError('tag key is empty');
      line += ',' + escapeTag(k) + '=' + escapeTag(v);
    }
  }
  let first = true;
  for (const k in p.fields) {
    const v = p.fields[k];
    if (v === undefined) continue;
    if (k === '') throw new LineProtocolError('field key is empty');
    line += (first ? ' ' : ',') + escapeTag(k) + '=' + encodeFieldValue(k, v);
    first = false;
  }
  if (first) throw new LineProtocolError(`point of ${JSON.stringify(p.measurement)} has no fields`);
  if (p.timeNs !== undefined) line += ' ' + timeText(p.timeNs);
  return line;
}

/** Encode many points as a write body, one line each, newline-terminated. */
export function encodePoints(points: Iterable<Point>): string {
  let out = '';
  for (const p of points) out += encodePoint(p) + '\n';
  return out;
}

/**
 * Read one line written by encodePoint back into a point: tags and names unescaped, floats as numbers,
 * integers as IntValue (bigint when beyond 2^53), strings unescaped, the timestamp as a decimal string.
 * For tests and tools that check what the agent writes; it reads only what this encoder produces.
 */
export function parseLine(line: string): Point {
  let i = 0;
  const bad = (what: string): never => {
    throw new LineProtocolError(`cannot read line protocol (${what} at ${i}): ${JSON.stringify(line.slice(0, 200))}`);
  };
  // A name or tag part, up to one of `stops` not escaped by a backslash.
  const token = (stops: string, unescapes: string): string => {
    let out = '';
    while (i < line.length && !stops.includes(line[i])) {
      if (line[i] === '\\' && i + 1 < line.length && unescapes.includes(line[i + 1])) {
        out += line[i + 1];
        i += 2;
      } else out += line[i++];
    }
    return out;
  };
  const measurement = token(', ', ', ');
  if (measurement === '') bad('empty measurement');
  const tags: Tags = {};
  let hasTags = false;
  while (line[i] === ',') {
    i++;
    const k = token('=', ',= ');
    if (line[i++] !== '=') bad('tag without =');
    tags[k] = token(', ', ',= ');
    hasTags = true;
  }
  if (line[i++] !== ' ') bad('no fields');
  const fields: Fields = {};
  for (;;) {
    const k = token('=', ',= ');
    if (line[i++] !== '=') bad('field without =');
    if (line[i] === '"') {
      let v = '';
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\')) i++;
        v += line[i++];
      }
      if (line[i++] !== '"') bad('unterminated string');
      fields[k] = v;
    } else {
      const start = i;
      while (i < line.length && line[i] !== ',' && line[i] !== ' ') i++;
      const text = line.slice(start, i);
      if (text === 'true' || text === 'false') fields[k] = text === 'true';
      else if (/^-?\d+i$/.test(text)) {
        const b = BigInt(text.slice(0, -1));
        fields[k] = int(b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b);
      } else if (text !== '' && Number.isFinite(Number(text))) fields[k] = Number(text);
      else bad(`field value ${JSON.stringify(text)}`);
    }
    if (line[i] !== ',') break;
    i++;
  }
  const p: Point = { measurement, fields };
  if (hasTags) p.tags = tags;
  if (line[i] === ' ') {
    i++;
    p.timeNs = timeText(line.slice(i));
    i = line.length;
  }
  if (i !== line.length) bad('trailing text');
  return p;
}
