import { quote, QueryValueError } from './escape';

describe('quote (the one escaping function)', () => {
  test('Flux string literals', () => {
    expect(quote('flux-string', 'plain')).toBe('"plain"');
    expect(quote('flux-string', 'a"b')).toBe('"a\\"b"');
    expect(quote('flux-string', 'a\\b')).toBe('"a\\\\b"');
    expect(quote('flux-string', 'x${y}')).toBe('"x\\${y}"');
    expect(quote('flux-string', 'l1\nl2\r\t')).toBe('"l1\\nl2\\r\\t"');
    expect(quote('flux-string', '") |> drop() //')).toBe('"\\") |> drop() //"');
    expect(quote('flux-string', '$')).toBe('"$"');
    expect(quote('flux-string', '\\${')).toBe('"\\\\\\${"');
  });

  test('InfluxQL string literals and identifiers', () => {
    expect(quote('influxql-string', "' OR 1=1 --")).toBe("'\\' OR 1=1 --'");
    expect(quote('influxql-string', 'a\\b\nc')).toBe("'a\\\\b\\nc'");
    expect(quote('influxql-ident', 'we"ird')).toBe('"we\\"ird"');
    expect(quote('influxql-ident', 'tcp_connect')).toBe('"tcp_connect"');
  });

  test('regex literals match the value exactly', () => {
    const lit = quote('influxql-regex', 'a.b/c(d)*');
    expect(lit).toBe('/^a\\.b\\/c\\(d\\)\\*$/');
    const re = new RegExp(lit.slice(1, -1));
    expect(re.test('a.b/c(d)*')).toBe(true);
    expect(re.test('aXb/c(d)*')).toBe(false);
  });

  test('refuses what a dialect cannot carry', () => {
    expect(() => quote('influxql-string', 'a\u0000b')).toThrow(QueryValueError);
    expect(() => quote('influxql-string', 'a\rb')).toThrow(/CR or TAB/);
    expect(() => quote('influxql-ident', 'a\tb')).toThrow(QueryValueError);
    expect(() => quote('influxql-ident', '')).toThrow(QueryValueError);
    expect(() => quote('influxql-regex', 'a\nb')).toThrow(QueryValueError);
    expect(() => quote('flux-string', 42 as unknown as string)).toThrow(QueryValueError);
  });

  test('every Flux literal is closed: no unescaped quote inside', () => {
    for (const v of ['"', '\\"', '\\\\"', '"\\', 'a"b"c', '\\']) {
      const lit = quote('flux-string', v);
      const inner = lit.slice(1, -1);
      // walk escapes: an unescaped " would end the literal early
      for (let i = 0; i < inner.length; i++) {
        if (inner[i] === '\\') i++;
        else expect(inner[i]).not.toBe('"');
      }
    }
  });
});
