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

/** What a name or tag value becomes in InfluxDB after normalisation (see the module comment). */
export function normalizeName(s: string): string {
  if (CONTROL.test(s)) s = s.replace(CONTROL_G, controlText);
  if (s.includes('\\')) s = s.replace(BACKSLASH_BEFORE_SEPARATOR, '\uFF3C');
  return s;
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
  if (ESCAPED.size >= ESCAPED_MAX) ESCAPED.clear();
  ESCAPED.set(value, out);
  return out;
}

export function escapeStringField(value: string): string {
  return '"' + (STR_SPECIAL.test(value) ? value.replace(STR_SPECIAL_G, '\\$1') : value) + '"';
}

function encodeFieldValue(key: string, v: FieldValue): string {
  switch (typeof v) {
    case 'number':
      if (!Number.isFinite(v)) throw new LineProtocolError(`field ${JSON.stringify(key)} is ${v}: InfluxDB stores only finite floats`);
      return String(v);
    case 'string':
      return escapeStringField(v);
    case 'boolean':
      return v ? 'true' : 'false';
    default: {
      const n = v.value;
      if (typeof n === 'number' && !Number.isSafeInteger(n)) throw new LineProtocolError(`field ${JSON.stringify(key)} is not an integer: ${n}`);
      return `${n}i`;
    }
  }
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
  if (p.timeNs !== undefined) {
    const t = String(p.timeNs);
    if (!/^-?\d{1,19}$/.test(t)) throw new LineProtocolError(`timestamp ${JSON.stringify(t)} is not integer nanoseconds`);
    line += ' ' + t;
  }
  return line;
}

/** Encode many points as a write body, one line each, newline-terminated. */
export function encodePoints(points: Iterable<Point>): string {
  let out = '';
  for (const p of points) out += encodePoint(p) + '\n';
  return out;
}
