import { describeWith } from '../../../tests/support/prereq';
import { dropDatabase, freshDatabase, missingInflux } from '../../../tests/support/influx';
import { queryInfluxQL, type InfluxV1Target, writeLines } from './influx';
import { capTagValue, encodePoint, encodePoints, escapeStringField, escapeTag, int, LineProtocolError, MAX_TAG_BYTES, normalizeName, parseLine } from './lineprotocol';
import { quote } from './escape';
import { HOSTILE } from '../../../tests/support/hostile';


describe('line protocol encoder', () => {
  test('golden lines', () => {
    expect(
      encodePoint({
        measurement: 'tcp_connect',
        tags: { service: 'my svc', dst: '10.0.0.1:5432', host: 'h1', empty: '' },
        fields: { latency_ms: 1.5, pid: int(42), comm: 'ru"by', ok: true },
        timeNs: 1764100000123456789n,
      }),
    ).toBe('tcp_connect,dst=10.0.0.1:5432,host=h1,service=my\\ svc latency_ms=1.5,pid=42i,comm="ru\\"by",ok=true 1764100000123456789');
    expect(encodePoint({ measurement: 'm,x y', fields: { 'f k=': int(1n) } })).toBe('m\\,x\\ y f\\ k\\==1i');
    expect(escapeTag('a,b=c d')).toBe('a\\,b\\=c\\ d');
    expect(escapeStringField('a\\"b')).toBe('"a\\\\\\"b"');
  });

  test('names that line protocol cannot carry are normalised, visibly', () => {
    expect(normalizeName('a\nb\tc\rd')).toBe('a\\nb\\tc\\rd');
    expect(normalizeName('nul\u0000')).toBe('nul\\x00');
    expect(normalizeName('end\\')).toBe('end\uFF3C');
    expect(normalizeName('plain')).toBe('plain');
    expect(normalizeName('a\\ b\\,c\\=d\\e')).toBe('a\uFF3C b\uFF3C,c\uFF3C=d\\e');
  });

  test('rejects points InfluxDB would refuse, with a message', () => {
    expect(() => encodePoint({ measurement: '', fields: { a: 1 } })).toThrow(LineProtocolError);
    expect(() => encodePoint({ measurement: 'm', fields: {} })).toThrow(/no fields/);
    expect(() => encodePoint({ measurement: 'm', fields: { a: NaN } })).toThrow(/finite/);
    expect(() => encodePoint({ measurement: 'm', fields: { a: Infinity } })).toThrow(LineProtocolError);
    expect(() => encodePoint({ measurement: 'm', fields: { a: int(1.5) } })).toThrow(/integer/);
    expect(() => encodePoint({ measurement: 'm', fields: { '': 1 } })).toThrow(/field key/);
    expect(() => encodePoint({ measurement: 'm', tags: { '': 'x' }, fields: { a: 1 } })).toThrow(/tag key/);
    expect(() => encodePoint({ measurement: 'm', fields: { a: 1 }, timeNs: '12; DROP' })).toThrow(/timestamp/);
    expect(() => encodePoint({ measurement: 'm', fields: { a: 1 }, timeNs: 2n ** 63n })).toThrow(/int64/);
  });

  test('parseLine reads back what encodePoint writes, hostile values included (normalised names as stored)', () => {
    for (const v of HOSTILE) {
      const p = {
        measurement: `m ${v}`,
        tags: { [`t ${v}`]: v || 'x', a: 'plain' },
        fields: { text: v, [`k ${v}`]: int(-7), big: int(2n ** 62n), f: 0.25, yes: true },
        timeNs: 1_700_000_000_000_000_001n,
      };
      const back = parseLine(encodePoint(p));
      expect(back).toEqual({
        measurement: normalizeName(p.measurement),
        tags: { a: 'plain', [normalizeName(`t ${v}`)]: normalizeName(v || 'x') },
        fields: { text: v, [normalizeName(`k ${v}`)]: int(-7), big: int(2n ** 62n), f: 0.25, yes: true },
        timeNs: '1700000000000000001',
      });
    }
    expect(parseLine('m a=1')).toEqual({ measurement: 'm', fields: { a: 1 } });
    expect(() => parseLine('m,t=1')).toThrow(/no fields/);
    expect(() => parseLine('m a=nope')).toThrow(LineProtocolError);
    expect(() => parseLine('m a="open')).toThrow(/unterminated/);
  });

  test('encodePoints terminates every line', () => {
    expect(encodePoints([{ measurement: 'm', fields: { a: 1 } }, { measurement: 'm', fields: { a: 2 } }])).toBe('m a=1\nm a=2\n');
  });
});

describeWith(missingInflux(), 'line protocol round-trip through the real InfluxDB', () => {
  let db: InfluxV1Target;
  beforeAll(async () => {
    db = await freshDatabase('lp');
  });
  afterAll(async () => {
    if (db) await dropDatabase(db);
  });

  test('every hostile value written as tag, field, key and measurement reads back equal', async () => {
    // One batch: the string fields with raw newlines must not split lines.
    const points = HOSTILE.map((v, i) => ({
      measurement: 'roundtrip',
      tags: { case: String(i), hostile: v },
      fields: { text: v, n: int(i), [`k_${v}`]: int(1) },
      timeNs: BigInt(1_700_000_000_000_000_000n + BigInt(i)),
    }));
    const meas = HOSTILE.map((v, i) => ({ measurement: `m_${v}`, tags: { [`t_${v}`]: 'x' }, fields: { n: int(i) }, timeNs: 1_700_000_000_000_000_000n }));
    await writeLines(db, encodePoints([...points, ...meas]));

    const [series] = await queryInfluxQL(db, 'SELECT * FROM "roundtrip"', { epoch: 'ns' });
    expect(series).toHaveLength(1);
    const cols = series[0].columns;
    const rows = series[0].values;
    expect(rows).toHaveLength(HOSTILE.length);
    const idx = (c: string) => cols.indexOf(c);
    const notEqualTags: string[] = [];
    for (const row of rows) {
      const i = Number(row[idx('case')]);
      const v = HOSTILE[i];
      // String field values carry everything exactly, newlines and NUL included.
      expect(row[idx('text')]).toBe(v);
      expect(row[idx('n')]).toBe(i);
      // Tag values read back equal, except what line protocol cannot carry, which reads back normalised.
      expect(row[idx('hostile')]).toBe(v === '' ? null : normalizeName(v));
      if (normalizeName(v) !== v) notEqualTags.push(v);
      // Field keys likewise.
      expect(row[idx(normalizeName(`k_${v}`))]).toBe(1);
    }
    // The only values not stored verbatim are those with control characters, a trailing backslash, or
    // more than MAX_TAG_BYTES bytes (capped with a marker).
    expect(notEqualTags.sort()).toEqual(HOSTILE.filter((v) => /[\u0000-\u001f]|\\([ ,=]|$)/.test(v) || Buffer.byteLength(v) > MAX_TAG_BYTES).sort());

    const [names] = await queryInfluxQL(db, 'SHOW MEASUREMENTS');
    const got = new Set(names[0].values.map((r) => r[0]));
    for (const v of HOSTILE) expect(got.has(normalizeName(`m_${v}`))).toBe(true);
    const [tagKeys] = await queryInfluxQL(db, 'SHOW TAG KEYS');
    const keys = new Set(tagKeys.flatMap((s) => s.values.map((r) => r[0])));
    for (const v of HOSTILE) expect(keys.has(normalizeName(`t_${v}`))).toBe(true);
  });

  test('hostile tag values are selectable exactly through the escaping function', async () => {
    for (const [i, v] of HOSTILE.entries()) {
      if (v.includes('\u0000')) {
        expect(() => quote('influxql-string', normalizeName(v))).not.toThrow(); // normalised names never carry NUL
        continue;
      }
      const stored = normalizeName(v);
      const q = `SELECT "n" FROM "roundtrip" WHERE ${quote('influxql-ident', 'hostile')} = ${quote('influxql-string', stored)}`;
      const [s] = await queryInfluxQL(db, q);
      expect(s).toHaveLength(1);
      expect(s[0].values.map((r) => r[1])).toEqual([i]);
    }
    // Raw hostile values (not normalised): quote() either refuses them with a QueryValueError or gives
    // a literal InfluxDB parses, never a query error.
    for (const v of HOSTILE) {
      let lit: string;
      try {
        lit = quote('influxql-string', v);
      } catch (e) {
        expect((e as Error).name).toBe('QueryValueError');
        continue;
      }
      await expect(queryInfluxQL(db, `SELECT "n" FROM "roundtrip" WHERE "hostile" = ${lit} AND ${quote('influxql-ident', v || 'x')} = ${lit}`)).resolves.toBeDefined();
    }
    // and the data is all still there
    const [count] = await queryInfluxQL(db, 'SELECT count("n") FROM "roundtrip"');
    expect(count[0].values[0][1]).toBe(HOSTILE.length);
  });
});

describe('tag values are capped at MAX_TAG_BYTES bytes of UTF-8 with a visible marker', () => {
  test('a 900 KiB comm becomes a 256-byte tag ending in …#<hash>; short values are untouched', () => {
    const long = 'x'.repeat(900 << 10);
    const line = encodePoint({ measurement: 'm', tags: { comm: long }, fields: { f: 1 } });
    const tag = /comm=(\S+) /.exec(line)![1];
    expect(Buffer.byteLength(tag)).toBe(MAX_TAG_BYTES);
    expect(tag).toMatch(/^x+…#[0-9a-f]{8}$/);
    expect(normalizeName(long)).toBe(tag);
    expect(capTagValue('ruby')).toBe('ruby');
    expect(capTagValue('é'.repeat(128))).toBe('é'.repeat(128)); // 256 bytes exactly
  });

  test('two long values with the same prefix stay distinct; multi-byte characters are never cut in half', () => {
    const a = capTagValue('a'.repeat(300) + '1');
    const b = capTagValue('a'.repeat(300) + '2');
    expect(a).not.toBe(b);
    const emoji = capTagValue('☃😀'.repeat(100));
    expect(Buffer.byteLength(emoji)).toBeLessThanOrEqual(MAX_TAG_BYTES);
    expect(emoji).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/); // no lone high surrogate
    expect(Buffer.from(emoji, 'utf8').toString('utf8')).toBe(emoji);
  });
});
