/**
 * The one escaping function: every value that reaches Flux or InfluxQL goes through `quote`.
 * Query builders never paste user strings; they call quote(kind, value) and get a complete literal.
 *
 * - `flux-string`: a Flux string literal "..." with `\`, `"`, `${` (interpolation), CR, LF, TAB escaped.
 * - `influxql-string`: an InfluxQL string literal '...' with `\`, `'` and LF escaped.
 * - `influxql-ident`: an InfluxQL quoted identifier "..." with `\`, `"` and LF escaped.
 * - `flux-regex` / `influxql-regex`: a regex literal matching the value exactly (all metacharacters
 *   escaped), for the rare place a regex is required (InfluxQL SHOW TAG VALUES ... WITH KEY =~).
 *
 * Characters that a dialect cannot carry at all (NUL, CR and TAB in InfluxQL) raise QueryValueError, which the
 * services turn into a 400 naming the parameter.
 */

export class QueryValueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueryValueError';
  }
}

export type QuoteKind = 'flux-string' | 'influxql-string' | 'influxql-ident' | 'flux-regex' | 'influxql-regex';

const COMMON: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const REGEX_META = /[\\^$.|?*+()[\]{}/]/g;

export function quote(kind: QuoteKind, value: string): string {
  if (typeof value !== 'string') throw new QueryValueError(`expected a string, got ${typeof value}`);
  switch (kind) {
    case 'flux-string':
      return '"' + value.replace(/[\\\n\r\t"]|\$\{/g, (c) => (c === '"' ? '\\"' : c === '${' ? '\\${' : COMMON[c])) + '"';
    case 'influxql-string':
      // InfluxQL's scanner knows \n but neither \r nor \t, and refuses them raw too: such a value
      // cannot be asked for (and the agent never writes one into a tag: see lineprotocol.ts).
      if (/[\0\r\t]/.test(value)) throw new QueryValueError('InfluxQL strings cannot contain NUL, CR or TAB characters');
      return "'" + value.replace(/[\\\n']/g, (c) => (c === "'" ? "\\'" : COMMON[c])) + "'";
    case 'influxql-ident':
      if (value === '') throw new QueryValueError('an InfluxQL identifier cannot be empty');
      if (/[\0\r\t]/.test(value)) throw new QueryValueError('InfluxQL identifiers cannot contain NUL, CR or TAB characters');
      return '"' + value.replace(/[\\\n"]/g, (c) => (c === '"' ? '\\"' : COMMON[c])) + '"';
    case 'flux-regex':
    case 'influxql-regex': {
      if (value.includes('\0') || /[\n\r]/.test(value)) throw new QueryValueError('regex literals cannot contain NUL or line breaks');
      return '/^' + value.replace(REGEX_META, '\\$&') + '$/';
    }
    default:
      throw new QueryValueError(`unknown quote kind ${String(kind)}`);
  }
}
