import { ConfigError } from '@tcplat/core';
import { loadAgentConfig } from '../options';
import { sourceCommand } from './commands';

const BASE = ['--influx-db', 'd'];

describe('the probe command', () => {
  test('--probe-mode hist runs the probe with --mode hist, its windows as long as --hist-window', () => {
    const { config } = loadAgentConfig([...BASE, '--probe-mode', 'hist', '--hist-window', '15s'], {});
    const c = sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: config!.probeMode, histIntervalMs: config!.histWindowMs }, () => true);
    expect(c.argv).toEqual(['/p', '--exclude-pid', '7', '--mode', 'hist', '--hist-interval', '15']);
    const stream = sourceCommand({ source: 'probe', probe: '/p', selfPid: 7 }, () => true);
    expect(stream.argv).toEqual(['/p', '--exclude-pid', '7', '--no-close']);
  });

  test('close events are off by default (--no-close); --probe-close turns them on, --probe-zero-windows too', () => {
    const run = (argv: string[]) => {
      const c = loadAgentConfig([...BASE, ...argv], {}).config!;
      return sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: c.probeMode, probeClose: c.probeClose, probeZeroWindows: c.probeZeroWindows }, () => true).argv;
    };
    expect(run([])).toEqual(['/p', '--exclude-pid', '7', '--no-close']);
    expect(run(['--probe-close=false'])).toEqual(['/p', '--exclude-pid', '7', '--no-close']);
    expect(run(['--probe-close'])).toEqual(['/p', '--exclude-pid', '7']);
    expect(run(['--probe-zero-windows'])).toEqual(['/p', '--exclude-pid', '7', '--zero-windows']);
    expect(loadAgentConfig([...BASE], { TCPLAT_PROBE_CLOSE: 'true' }).config!.probeClose).toBe(true);
  });

  test('TLS handshakes are on by default (the probe is not told --tls off); --probe-tls=off turns them off', () => {
    const run = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
      const c = loadAgentConfig([...BASE, ...argv], env).config!;
      return sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: c.probeMode, probeTls: c.probeTls }, () => true).argv;
    };
    expect(run([])).toEqual(['/p', '--exclude-pid', '7', '--no-close']);
    expect(run(['--probe-tls=off'])).toEqual(['/p', '--exclude-pid', '7', '--no-close', '--tls', 'off']);
    expect(run(['--probe-tls=false', '--probe-mode', 'hist'])).toEqual(['/p', '--exclude-pid', '7', '--mode', 'hist', '--hist-interval', '10', '--tls', 'off']);
    expect(run([], { TCPLAT_PROBE_TLS: 'off' })).toEqual(['/p', '--exclude-pid', '7', '--no-close', '--tls', 'off']);
    expect(() => loadAgentConfig([...BASE, '--probe-tls=maybe'], {})).toThrow(/probe-tls/);
  });

  test('hist mode is for the probe only: a clear error for text tools', () => {
    expect(() => loadAgentConfig([...BASE, '--source', 'tcplife', '--probe-mode', 'hist'], {})).toThrow(ConfigError);
    expect(() => loadAgentConfig([...BASE, '--source', 'tcplife', '--probe-mode', 'hist'], {})).toThrow(/--probe-mode hist: only for --source probe/);
    expect(loadAgentConfig([...BASE, '--source', 'ndjson', '--probe-mode', 'hist'], {}).config!.probeMode).toBe('hist');
  });
});
