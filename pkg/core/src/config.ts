/**
 * One configuration mechanism for every tcplat command: flags, then `TCPLAT_<FLAG>` environment variables,
 * then a config file (`--config FILE`, YAML or JSON, keys = flag names), then defaults. Validated at start;
 * every error names the bad key and where it came from.
 *
 * Secrets (options marked `secret`) can also come from a file: `--influx-token-file F`,
 * `TCPLAT_INFLUX_TOKEN_FILE=F` or the config key `influx-token-file`, so they never need to sit in argv.
 * describeConfig() prints a config with secrets masked.
 */
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import YAML from 'yaml';
import { parseDuration } from './duration';

export type OptionType = 'string' | 'int' | 'number' | 'duration' | 'bool' | 'list' | 'enum' | 'hostport';

export interface OptionSpec {
  /** Flag name without dashes, kebab-case: `influx-url`. */
  name: string;
  type: OptionType;
  help: string;
  default?: unknown;
  /** For enum. */
  values?: readonly string[];
  /** Allowed range for int/number. */
  min?: number;
  max?: number;
  secret?: boolean;
  /** Placeholder in --help, e.g. URL. */
  arg?: string;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export type ConfigValues = Record<string, unknown>;

export interface LoadedConfig {
  values: ConfigValues;
  /** Where each value came from: flag, env, file, default. */
  sources: Record<string, 'flag' | 'env' | 'file' | 'default'>;
  /** The parsed config file (for component-specific sections such as mapping rules), or {}. */
  file: Record<string, unknown>;
  filePath?: string;
  help: boolean;
}

export function envName(option: string): string {
  return 'TCPLAT_' + option.toUpperCase().replace(/-/g, '_');
}

function convert(spec: OptionSpec, raw: unknown, where: string): unknown {
  const bad = (why: string) => new ConfigError(`${where}: ${why}`);
  switch (spec.type) {
    case 'string':
      if (typeof raw !== 'string' && typeof raw !== 'number') throw bad(`expected a string, got ${JSON.stringify(raw)}`);
      return String(raw);
    case 'int':
    case 'number': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
      if (!Number.isFinite(n) || (spec.type === 'int' && !Number.isInteger(n))) throw bad(`expected ${spec.type === 'int' ? 'an integer' : 'a number'}, got ${JSON.stringify(raw)}`);
      if (spec.min !== undefined && n < spec.min) throw bad(`must be at least ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`must be at most ${spec.max}, got ${n}`);
      return n;
    }
    case 'duration': {
      if (typeof raw === 'number') return raw;
      try {
        return parseDuration(String(raw));
      } catch (e) {
        throw bad((e as Error).message);
      }
    }
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (['true', '1', 'yes', 'on', ''].includes(String(raw).toLowerCase())) return true;
      if (['false', '0', 'no', 'off'].includes(String(raw).toLowerCase())) return false;
      throw bad(`expected true or false, got ${JSON.stringify(raw)}`);
    case 'list':
      if (Array.isArray(raw)) return raw.map((x) => String(x));
      return String(raw)
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
    case 'enum':
      if (!spec.values?.includes(String(raw))) throw bad(`must be one of ${spec.values?.join(', ')}, got ${JSON.stringify(raw)}`);
      return String(raw);
    case 'hostport': {
      const s = String(raw);
      const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(s);
      if (!m || Number(m[2]) > 65535) throw bad(`expected HOST:PORT (e.g. 127.0.0.1:7070), got ${JSON.stringify(raw)}`);
      return { host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
    }
  }
}

function readSecretFile(path: string, where: string): string {
  try {
    return fs.readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`${where}: cannot read secret file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`--config ${path}: cannot read it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = path.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`--config ${path}: not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`--config ${path}: expected a mapping of option names to values`);
  return parsed as Record<string, unknown>;
}

/**
 * Load options. `extraFileKeys` are config-file sections the command validates itself (e.g. `services`);
 * any other unknown key in the file is an error, as is any unknown flag.
 */
export function loadConfig(
  specs: readonly OptionSpec[],
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  extraFileKeys: readonly string[] = [],
): LoadedConfig {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const flags = new Map<string, unknown[]>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    if (!a.startsWith('--')) throw new ConfigError(`unexpected argument ${JSON.stringify(a)} (flags start with --; see --help)`);
    let name = a.slice(2);
    let value: string | undefined;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const base = name.endsWith('-file') ? name.slice(0, -5) : name;
    const spec = byName.get(name) ?? (byName.get(base)?.secret ? byName.get(base) : undefined);
    if (!spec && name !== 'config') throw new ConfigError(`unknown flag --${name} (see --help)`);
    if (value === undefined) {
      if (spec?.type === 'bool' && name === spec.name) value = 'true';
      else {
        if (i + 1 >= argv.length) throw new ConfigError(`flag --${name} needs a value`);
        value = argv[++i];
      }
    }
    const list = flags.get(name) ?? [];
    list.push(value);
    flags.set(name, list);
  }

  const filePath = (flags.get('config')?.at(-1) as string | undefined) ?? env.TCPLAT_CONFIG;
  const file = filePath ? readConfigFile(filePath) : {};
  for (const key of Object.keys(file)) {
    const base = key.endsWith('-file') ? key.slice(0, -5) : key;
    if (!byName.has(key) && !byName.get(base)?.secret && !extraFileKeys.includes(key)) {
      throw new ConfigError(`--config ${filePath}: unknown key ${JSON.stringify(key)} (keys are flag names; see --help)`);
    }
  }

  const values: ConfigValues = {};
  const sources: LoadedConfig['sources'] = {};
  for (const spec of specs) {
    const e = envName(spec.name);
    let raw: unknown;
    let where = '';
    let source: LoadedConfig['sources'][string] = 'default';
    const fromFlag = flags.get(spec.name);
    const fromFlagFile = spec.secret ? flags.get(`${spec.name}-file`) : undefined;
    if (fromFlag) {
      raw = spec.type === 'list' ? fromFlag.flatMap((v) => convert(spec, v, `--${spec.name}`) as string[]) : fromFlag.at(-1);
      where = `--${spec.name}`;
      source = 'flag';
    } else if (fromFlagFile) {
      raw = readSecretFile(String(fromFlagFile.at(-1)), `--${spec.name}-file`);
      where = `--${spec.name}-file`;
      source = 'flag';
    } else if (env[e] !== undefined) {
      raw = env[e];
      where = `environment variable ${e}`;
      source = 'env';
    } else if (spec.secret && env[`${e}_FILE`] !== undefined) {
      raw = readSecretFile(String(env[`${e}_FILE`]), `environment variable ${e}_FILE`);
      where = `environment variable ${e}_FILE`;
      source = 'env';
    } else if (file[spec.name] !== undefined) {
      raw = file[spec.name];
      where = `config key ${spec.name} in ${filePath}`;
      source = 'file';
    } else if (spec.secret && file[`${spec.name}-file`] !== undefined) {
      raw = readSecretFile(String(file[`${spec.name}-file`]), `config key ${spec.name}-file in ${filePath}`);
      where = `config key ${spec.name}-file in ${filePath}`;
      source = 'file';
    }
    if (source === 'default') {
      if (spec.default === undefined) continue;
      values[spec.name] = spec.type === 'hostport' || spec.type === 'duration' ? convert(spec, spec.default, `default of ${spec.name}`) : spec.default;
    } else {
      values[spec.name] = convert(spec, raw, where);
    }
    sources[spec.name] = source;
  }
  return { values, sources, file, filePath, help };
}

/** --help text: synopsis, then one line per option with its env var and default. */
export function formatHelp(command: string, summary: string, specs: readonly OptionSpec[], footer = ''): string {
  const lines = [`usage: tcplat ${command} [flags]`, '', summary, '', 'flags (each also TCPLAT_<FLAG> in the environment, or a key in --config FILE):'];
  const rows = specs.map((s) => {
    const arg = s.type === 'bool' ? '' : ` ${s.arg ?? (s.type === 'enum' ? s.values?.join('|') : s.type.toUpperCase())}`;
    const def = s.default !== undefined && s.default !== '' ? ` (default ${Array.isArray(s.default) ? s.default.join(',') : String(s.default)})` : '';
    const extra = s.secret ? `; or --${s.name}-file FILE / ${envName(s.name)}_FILE` : '';
    return [`  --${s.name}${arg}`, `${s.help}${def} [${envName(s.name)}${extra}]`];
  });
  rows.push(['  --config FILE', 'YAML or JSON file whose keys are these flag names [TCPLAT_CONFIG]']);
  rows.push(['  --help', 'this text']);
  const w = Math.min(34, Math.max(...rows.map((r) => r[0].length)) + 2);
  for (const [a, b] of rows) lines.push(a.length >= w ? `${a}\n${' '.repeat(w)}${b}` : a.padEnd(w) + b);
  if (footer) lines.push('', footer);
  return lines.join('\n') + '\n';
}

/** A one-line description of the effective config with secrets masked, for start-up logs. */
export function describeConfig(specs: readonly OptionSpec[], values: ConfigValues): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const s of specs) {
    if (values[s.name] === undefined) continue;
    out[s.name] = s.secret ? '***' : values[s.name];
  }
  return out;
}

/**
 * The token rule of every tcplat service (agent --api-token, renderer --auth-token): each token is trimmed,
 * must not be empty and needs at least MIN_TOKEN_LENGTH characters, so it cannot be guessed in a few tries.
 * `list` accepts several comma-separated tokens (the renderer's, so one can be revoked alone).
 */
export const MIN_TOKEN_LENGTH = 16;

export function parseTokens(flag: string, raw: string | undefined, opts: { list?: boolean } = {}): string[] {
  if (raw === undefined) return [];
  const parts = opts.list ? raw.split(',') : [raw];
  const tokens = parts.map((s) => s.trim());
  if (tokens.every((t) => t === '')) throw new ConfigError(`--${flag}: the token is empty; give a random one of at least ${MIN_TOKEN_LENGTH} characters (e.g. openssl rand -hex 24), or leave the flag out`);
  if (opts.list && tokens.some((t) => t === '')) throw new ConfigError(`--${flag}: an empty token in the comma-separated list`);
  for (const t of tokens) {
    if (t.length < MIN_TOKEN_LENGTH) throw new ConfigError(`--${flag}: every token needs at least ${MIN_TOKEN_LENGTH} characters, got one of ${t.length} (e.g. openssl rand -hex 24)`);
  }
  return tokens;
}

/** True for an IPv4/IPv6 loopback address literal (127.0.0.0/8, ::1, ::ffff:127.x.y.z); false for anything else. */
// Built on first use: this module is also bundled (never run) into the browser plugins, where node:net is empty.
let loopback: net.BlockList | null = null;

export function isLoopbackAddress(ip: string): boolean {
  const family = net.isIP(ip);
  if (family === 0) return false;
  if (!loopback) {
    loopback = new net.BlockList();
    loopback.addSubnet('127.0.0.0', 8, 'ipv4');
    loopback.addAddress('::1', 'ipv6');
    loopback.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');
  }
  return loopback.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

export type LookupAll = (host: string) => Promise<string[]>;

/** Every address a listen host stands for, as the server's own listen() will resolve it (getaddrinfo: /etc/hosts, then DNS). */
export const lookupAll: LookupAll = async (host) => {
  if (net.isIP(host)) return [host];
  const found = await dns.promises.lookup(host, { all: true, verbatim: true });
  return found.map((a) => a.address);
};

/**
 * The rule that keeps a service from running open on a network: unless every address the listen host resolves
 * to is a loopback address, a token is required. Decided by what the name resolves to, never by its spelling
 * (a hosts file may map `localhost` anywhere). Returns the resolved addresses.
 */
export async function requireTokenBeyondLoopback(
  listen: { host: string; port: number },
  hasToken: boolean,
  tokenFlag: string,
  lookup: LookupAll = lookupAll,
): Promise<string[]> {
  let addresses: string[];
  try {
    addresses = await lookup(listen.host);
  } catch (e) {
    throw new ConfigError(`--listen ${listen.host}:${listen.port}: cannot resolve ${JSON.stringify(listen.host)}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  checkExposure(listen, addresses, hasToken, tokenFlag);
  return addresses;
}

/**
 * The same rule on addresses already known: throws unless every one is loopback or there is a token.
 * Config validation calls it for an IP literal (nothing to resolve); the services call
 * requireTokenBeyondLoopback() before they listen.
 */
export function checkExposure(listen: { host: string; port: number }, addresses: readonly string[], hasToken: boolean, tokenFlag: string): void {
  if (addresses.length === 0) throw new ConfigError(`--listen ${listen.host}:${listen.port}: ${JSON.stringify(listen.host)} resolves to no address`);
  const exposed = addresses.filter((a) => !isLoopbackAddress(a));
  if (exposed.length === 0 || hasToken) return;
  const how = net.isIP(listen.host) ? 'is not a loopback address' : `resolves to ${exposed.join(', ')}, which is not loopback`;
  throw new ConfigError(
    `--listen ${listen.host}:${listen.port} ${how}, and the service refuses to start unauthenticated there: give --${tokenFlag} (or --${tokenFlag}-file / ${envName(tokenFlag)}), or listen on 127.0.0.1`,
  );
}

/** checkExposure() for a listen host that is an IP literal; a name is left to requireTokenBeyondLoopback(). */
export function checkExposureIfLiteral(listen: { host: string; port: number }, hasToken: boolean, tokenFlag: string): void {
  if (net.isIP(listen.host)) checkExposure(listen, [listen.host], hasToken, tokenFlag);
}
