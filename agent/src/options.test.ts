import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, formatHelp } from '@tcplat/core';
import { AGENT_OPTIONS, AGENT_SUMMARY, loadAgentConfig } from './options';
import { sourceCommand } from './sources/commands';

const BASE = ['--influx-db', 'tcplat'];

describe('agent options', () => {
  test('defaults and the documented flags', () => {
    const { config } = loadAgentConfig(BASE, {});
    expect(config).toMatchObject({
      source: 'probe',
      once: false,
      listen: { host: '127.0.0.1', port: 7070 },
      flushIntervalMs: 1000,
      histWindowMs: 10_000,
      rawRateLimit: 10_000,
      spoolMaxBytes: 1 << 30,
      target: { version: 1, url: 'http://127.0.0.1:8086', db: 'tcplat' },
    });
    const help = formatHelp('agent', AGENT_SUMMARY, AGENT_OPTIONS);
    for (const f of ['--source', '--source-cmd', '--probe', '--once', '--influx-url', '--influx-db', '--influx-rp', '--influx-user', '--influx-password', '--influx-org', '--influx-bucket', '--influx-token', '--spool-dir', '--listen', '--flush-interval', '--hist-window', '--host', '--config']) {
      expect(help).toContain(`  ${f}`);
    }
  });

  test('env and config file, with mapping rules', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-opt-'));
    const f = path.join(dir, 'agent.yaml');
    fs.writeFileSync(f, 'source: tcplife\nhist-window: 1m\nservices:\n  - {name: api, comm: node}\ndestinations:\n  - 10.0.0.0/8:5432 -> pg\n');
    const { config } = loadAgentConfig(['--config', f], { TCPLAT_INFLUX_ORG: 'o', TCPLAT_INFLUX_BUCKET: 'b', TCPLAT_INFLUX_TOKEN: 't', TCPLAT_ONCE: 'true' });
    expect(config).toMatchObject({ source: 'tcplife', histWindowMs: 60_000, once: true, target: { version: 2, org: 'o', bucket: 'b', token: 't' } });
    expect(config!.rules.services[0].name).toBe('api');
    expect(config!.rules.destinations[0].name).toBe('pg');
    fs.writeFileSync(f, 'destinations:\n  - 10.0.0.0/8:5432 pg\n');
    expect(() => loadAgentConfig(['--config', f, ...BASE], {})).toThrow(/destinations\[0\]: expected "CIDR\[:PORT\] -> NAME"/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test.each([
    [['--listen', '0.0.0.0:7070'], /not a loopback address, and the service refuses to start unauthenticated there: give --api-token/],
    [['--listen', '[::]:7070'], /not a loopback address, and the service refuses to start unauthenticated there: give --api-token/],
    [['--listen', '0.0.0.0:7070', '--api-token', 'x'], /--api-token: every token needs at least 16 characters, got one of 1/],
    [['--api-token', '   '], /--api-token: the token is empty/],
    [['--stream-max-clients', '0'], /--stream-max-clients: must be at least 1/],
    [['--request-timeout', '10ms'], /--request-timeout: at least 1s/],
    [['--hist-window', '500ms'], /--hist-window: must be a whole number of milliseconds, at least 1s/],
    [['--flush-interval', '1ms'], /--flush-interval: must be at least 10ms/],
    [['--source', 'tcptop'], /--source: must be one of probe, tcplife, tcpstates, tcpconnlat, ndjson/],
    [['--raw-rate-limit', '-1'], /--raw-rate-limit: must be at least 0/],
  ])('%j is refused with a message naming the key', (argv, msg) => {
    expect(() => loadAgentConfig([...BASE, ...(argv as string[])], {})).toThrow(msg);
  });

  test('tokens are trimmed; HTTP and /api/stream limits have defaults and flags', () => {
    const { config } = loadAgentConfig([...BASE, '--listen', '0.0.0.0:7070', '--api-token', '  0123456789abcdef \n'], {});
    expect(config!.apiToken).toBe('0123456789abcdef');
    expect(config!.http).toMatchObject({ requestTimeoutMs: 10_000, idleTimeoutMs: 60_000, maxConnections: 256 });
    expect(config!.stream).toEqual({ maxClients: 64, bufferBytes: 256 * 1024, stallMs: 10_000 });
    const c2 = loadAgentConfig([...BASE, '--stream-max-clients', '5', '--max-connections', '50'], { TCPLAT_REQUEST_TIMEOUT: '3s' }).config!;
    expect([c2.stream.maxClients, c2.http.maxConnections, c2.http.requestTimeoutMs]).toEqual([5, 50, 3000]);
  });

  test('no database is a clear error', () => {
    expect(() => loadAgentConfig([], {})).toThrow(ConfigError);
    expect(() => loadAgentConfig([], {})).toThrow(/no InfluxDB database/);
  });
});

describe('source commands', () => {
  test('the probe excludes the agent in the kernel; --source-cmd replaces any command', () => {
    expect(sourceCommand({ source: 'probe', probe: '/x/probe', selfPid: 42 }, () => true)).toEqual({ argv: ['/x/probe', '--exclude-pid', '42', '--no-close'] });
    expect(() => sourceCommand({ source: 'probe', probe: '/x/probe', selfPid: 42 }, () => false)).toThrow(/--probe \/x\/probe: not found .*make -C bpf/);
    expect(sourceCommand({ source: 'tcplife', sourceCmd: 'cat cap.txt', selfPid: 1 })).toEqual({ shell: 'cat cap.txt' });
    expect(sourceCommand({ source: 'tcpstates', selfPid: 1 }, (p) => p === '/usr/share/bcc/tools/tcpstates')).toEqual({ argv: ['/usr/share/bcc/tools/tcpstates'] });
    expect(sourceCommand({ source: 'tcplife', selfPid: 1 }, (p) => p === '/usr/sbin/tcplife' || p === '/usr/bin/stdbuf')).toEqual({ argv: ['/usr/bin/stdbuf', '-oL', '/usr/sbin/tcplife'] });
    expect(() => sourceCommand({ source: 'tcpconnlat', selfPid: 1 }, () => false)).toThrow(/tool is not installed .* give --source-cmd/);
    expect(sourceCommand({ source: 'ndjson', selfPid: 1 })).toEqual({ stdin: true });
  });

  test('--exclude-pid adds processes the probe leaves out in the kernel', () => {
    const { config } = loadAgentConfig([...BASE, '--exclude-pid', '7', '--exclude-pid', '8,9'], {});
    expect(config!.excludePids).toEqual([7, 8, 9]);
    expect(sourceCommand({ source: 'probe', probe: '/x/probe', selfPid: 42, excludePids: config!.excludePids }, () => true)).toEqual({
      argv: ['/x/probe', '--exclude-pid', '42', '--exclude-pid', '7', '--exclude-pid', '8', '--exclude-pid', '9', '--no-close'],
    });
    expect(() => loadAgentConfig([...BASE, '--exclude-pid', 'me'], {})).toThrow(/--exclude-pid: expected a process id, got "me"/);
  });
});

describe('cardinality budget options', () => {
  test('--max-series and --series-horizon: defaults, env, config file, and refusals naming the key', () => {
    expect(loadAgentConfig(BASE, {}).config).toMatchObject({ maxSeries: 2000, seriesHorizonMs: 3_600_000 });
    expect(loadAgentConfig(BASE, { TCPLAT_MAX_SERIES: '500', TCPLAT_SERIES_HORIZON: '15m' }).config).toMatchObject({ maxSeries: 500, seriesHorizonMs: 900_000 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-opt-'));
    const f = path.join(dir, 'agent.yaml');
    fs.writeFileSync(f, 'max-series: 0\n');
    expect(loadAgentConfig(['--config', f, ...BASE], {}).config!.maxSeries).toBe(0);
    fs.rmSync(dir, { recursive: true, force: true });
    expect(() => loadAgentConfig([...BASE, '--max-series', '-1'], {})).toThrow(/--max-series: must be at least 0/);
    expect(() => loadAgentConfig([...BASE, '--series-horizon', '10s'], {})).toThrow(/--series-horizon: at least 1m/);
    expect(formatHelp('agent', AGENT_SUMMARY, AGENT_OPTIONS)).toMatch(/--max-series N[\s\S]*folded into dst=other/);
  });
});
