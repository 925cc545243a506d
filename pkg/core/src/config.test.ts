import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkExposureIfLiteral, ConfigError, describeConfig, envName, formatHelp, isLoopbackAddress, loadConfig, parseTokens, requireTokenBeyondLoopback, type OptionSpec } from './config';
import { describeTarget, INFLUX_OPTIONS, influxTargetFromConfig } from './influx';

const SPECS: OptionSpec[] = [
  { name: 'influx-url', type: 'string', help: 'InfluxDB URL', arg: 'URL' },
  { name: 'influx-token', type: 'string', help: 'token', secret: true },
  { name: 'listen', type: 'hostport', help: 'address', default: '127.0.0.1:7070' },
  { name: 'flush-interval', type: 'duration', help: 'flush', default: '1s' },
  { name: 'workers', type: 'int', help: 'workers', default: 2, min: 1, max: 16 },
  { name: 'once', type: 'bool', help: 'once', default: false },
  { name: 'source', type: 'enum', help: 'source', values: ['probe', 'tcplife'], default: 'probe' },
  { name: 'dport', type: 'list', help: 'ports', default: [] },
];

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function tmpFile(name: string, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-cfg-'));
  tmpDirs.push(dir);
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

describe('loadConfig', () => {
  test('defaults, then file, then env, then flags', () => {
    const file = tmpFile('c.yaml', 'influx-url: http://file:8086\nworkers: 3\nsource: tcplife\n');
    const env = { TCPLAT_WORKERS: '4', TCPLAT_INFLUX_URL: 'http://env:8086' };
    const c = loadConfig(SPECS, ['--config', file, '--influx-url=http://flag:8086', '--once', '--dport', '5432', '--dport', '80,443'], env);
    expect(c.values['influx-url']).toBe('http://flag:8086');
    expect(c.values.workers).toBe(4);
    expect(c.values.source).toBe('tcplife');
    expect(c.values.once).toBe(true);
    expect(c.values.dport).toEqual(['5432', '80', '443']);
    expect(c.values.listen).toEqual({ host: '127.0.0.1', port: 7070 });
    expect(c.values['flush-interval']).toBe(1000);
    expect(c.sources).toMatchObject({ 'influx-url': 'flag', workers: 'env', source: 'file', listen: 'default' });
  });

  test('secrets come from files named by flag, env or config key, and are masked', () => {
    const secret = tmpFile('token', 's3cr3t\n');
    expect(loadConfig(SPECS, ['--influx-token-file', secret]).values['influx-token']).toBe('s3cr3t');
    expect(loadConfig(SPECS, [], { TCPLAT_INFLUX_TOKEN_FILE: secret }).values['influx-token']).toBe('s3cr3t');
    const cfg = tmpFile('c.json', JSON.stringify({ 'influx-token-file': secret }));
    const c = loadConfig(SPECS, ['--config', cfg]);
    expect(c.values['influx-token']).toBe('s3cr3t');
    expect(JSON.stringify(describeConfig(SPECS, c.values))).not.toContain('s3cr3t');
    expect(() => loadConfig(SPECS, ['--influx-token-file', '/nonexistent/x'])).toThrow(/--influx-token-file: cannot read secret file/);
  });

  test.each([
    [['--bogus', '1'], /unknown flag --bogus/],
    [['--workers', 'many'], /--workers: expected an integer/],
    [['--workers', '99'], /--workers: must be at most 16/],
    [['--listen', 'nowhere'], /--listen: expected HOST:PORT/],
    [['--flush-interval', '10'], /--flush-interval: invalid duration "10"/],
    [['--source', 'bcc'], /--source: must be one of probe, tcplife/],
    [['--influx-url'], /--influx-url needs a value/],
    [['stray'], /unexpected argument "stray"/],
  ])('bad flag %j names the key', (argv, msg) => {
    expect(() => loadConfig(SPECS, argv as string[], {})).toThrow(msg);
    expect(() => loadConfig(SPECS, argv as string[], {})).toThrow(ConfigError);
  });

  test('bad env and file values name their source', () => {
    expect(() => loadConfig(SPECS, [], { TCPLAT_WORKERS: 'x' })).toThrow(/environment variable TCPLAT_WORKERS/);
    const f = tmpFile('c.yaml', 'workers: 0\n');
    expect(() => loadConfig(SPECS, ['--config', f])).toThrow(new RegExp(`config key workers in ${f}: must be at least 1`));
    const g = tmpFile('c.yaml', 'wrokers: 2\n');
    expect(() => loadConfig(SPECS, ['--config', g])).toThrow(/unknown key "wrokers"/);
    const h = tmpFile('c.yaml', 'a: [unclosed\n');
    expect(() => loadConfig(SPECS, ['--config', h])).toThrow(/not valid YAML/);
    expect(() => loadConfig(SPECS, ['--config', '/nope.yaml'])).toThrow(/cannot read it: ENOENT/);
  });

  test('extra file sections are passed through for the command to validate', () => {
    const f = tmpFile('c.yaml', 'services:\n  - name: api\n    comm: node\n');
    const c = loadConfig(SPECS, ['--config', f], {}, ['services']);
    expect(c.file.services).toEqual([{ name: 'api', comm: 'node' }]);
  });

  test('--help is reported, and the help text lists every flag with its env var', () => {
    expect(loadConfig(SPECS, ['--help']).help).toBe(true);
    const text = formatHelp('agent', 'Ships events.', SPECS);
    for (const s of SPECS) {
      expect(text).toContain(`--${s.name}`);
      expect(text).toContain(envName(s.name));
    }
    expect(text).toContain('TCPLAT_INFLUX_TOKEN_FILE');
  });
});

describe('influxTargetFromConfig', () => {
  const load = (argv: string[]) => influxTargetFromConfig(loadConfig(INFLUX_OPTIONS, argv, {}).values);
  test('v1 from --influx-db, v2 from org/bucket/token', () => {
    expect(load(['--influx-db', 'tcplat'])).toEqual({ version: 1, url: 'http://127.0.0.1:8086', db: 'tcplat', rp: undefined, user: undefined, password: undefined });
    const t = load(['--influx-url', 'http://x:8086', '--influx-org', 'o', '--influx-bucket', 'b', '--influx-token', 'T0K']);
    expect(t).toEqual({ version: 2, url: 'http://x:8086', org: 'o', bucket: 'b', token: 'T0K' });
    expect(describeTarget(t)).not.toContain('T0K');
  });
  test.each([
    [[], /no InfluxDB database/],
    [['--influx-db', 'a', '--influx-org', 'o'], /not both/],
    [['--influx-org', 'o', '--influx-bucket', 'b'], /needs --influx-token/],
    [['--influx-db', 'a', '--influx-url', 'ftp://x'], /--influx-url: expected an http/],
    [['--influx-db', 'a', '--influx-password', 'p'], /without --influx-user/],
  ])('%j is a clear error', (argv, msg) => expect(() => load(argv as string[])).toThrow(msg));
});

describe('the token and loopback rule of both services', () => {
  test('tokens: trimmed, non-empty, at least 16 characters; lists of them for the renderer', () => {
    expect(parseTokens('api-token', undefined)).toEqual([]);
    expect(parseTokens('api-token', '  0123456789abcdef\n')).toEqual(['0123456789abcdef']);
    expect(() => parseTokens('api-token', '')).toThrow(/--api-token: the token is empty/);
    expect(() => parseTokens('api-token', ' \t ')).toThrow(/--api-token: the token is empty/);
    expect(() => parseTokens('api-token', 'x')).toThrow(/--api-token: every token needs at least 16 characters, got one of 1/);
    // 16 characters of which 2 are spaces: 14 after trimming.
    expect(() => parseTokens('api-token', ' 0123456789abcd ')).toThrow(/got one of 14/);
    expect(parseTokens('auth-token', 'aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb', { list: true })).toEqual(['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb']);
    expect(() => parseTokens('auth-token', 'aaaaaaaaaaaaaaaa,,bbbbbbbbbbbbbbbb', { list: true })).toThrow(/empty token/);
    expect(() => parseTokens('auth-token', 'aaaaaaaaaaaaaaaa,short', { list: true })).toThrow(/at least 16/);
  });

  test('loopback addresses are 127.0.0.0/8, ::1 and their v4-mapped form, nothing else', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect([a, isLoopbackAddress(a)]).toEqual([a, true]);
    for (const a of ['0.0.0.0', '::', '10.77.0.1', '::ffff:10.0.0.1', 'fe80::1', 'localhost', '127.0.0.1.nip.io', '']) expect([a, isLoopbackAddress(a)]).toEqual([a, false]);
  });

  test('an IP literal is decided at config time; a name is left to the resolver', () => {
    expect(() => checkExposureIfLiteral({ host: '0.0.0.0', port: 1 }, false, 'api-token')).toThrow(/0.0.0.0:1 is not a loopback address, and the service refuses to start unauthenticated there: give --api-token \(or --api-token-file \/ TCPLAT_API_TOKEN\)/);
    expect(() => checkExposureIfLiteral({ host: '0.0.0.0', port: 1 }, true, 'api-token')).not.toThrow();
    expect(() => checkExposureIfLiteral({ host: '127.0.0.2', port: 1 }, false, 'api-token')).not.toThrow();
    expect(() => checkExposureIfLiteral({ host: 'localhost', port: 1 }, false, 'api-token')).not.toThrow();
  });

  test('a name is judged by what it resolves to (this machine: localhost is loopback)', async () => {
    const real = await requireTokenBeyondLoopback({ host: 'localhost', port: 1 }, false, 'api-token');
    expect(real.length).toBeGreaterThan(0);
    expect(real.every(isLoopbackAddress)).toBe(true);
    await expect(requireTokenBeyondLoopback({ host: 'no-such-host.invalid', port: 1 }, false, 'api-token')).rejects.toThrow(/cannot resolve "no-such-host.invalid"/);
  });

  // A stand-in resolver, named so: the real case (a hosts file mapping localhost elsewhere, in a mount
  // namespace) runs in tests/services-hardening.test.ts.
  test('with a fake resolver mapping localhost to 10.77.0.1 and ::1, a token is required', async () => {
    const fakeLookup = async () => ['::1', '10.77.0.1'];
    await expect(requireTokenBeyondLoopback({ host: 'localhost', port: 7070 }, false, 'auth-token', fakeLookup)).rejects.toThrow(
      /--listen localhost:7070 resolves to 10.77.0.1, which is not loopback, and the service refuses to start unauthenticated there: give --auth-token/,
    );
    await expect(requireTokenBeyondLoopback({ host: 'localhost', port: 7070 }, true, 'auth-token', fakeLookup)).resolves.toEqual(['::1', '10.77.0.1']);
  });
});
