import { ConfigError } from '@tcplat/core';
import { loadAgentConfig } from '../options';
import { sourceCommand } from './commands';

const BASE = ['--influx-db', 'd'];

describe('the probe command', () => {
  test('--probe-mode hist runs the probe with --mode hist, its windows as long as --hist-window', () => {
    const { config } = loadAgentConfig([...BASE, '--probe-mode', 'hist', '--hist-window', '15s'], {});
    const c = sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: config!.probeMode, histIntervalMs: config!.histWindowMs }, () => true);
    expect(c.argv).toEqual(['/p', '--exclude-pid', '7', '--mode', 'hist', '--hist-interval', '15', '--tls', 'off']);
    const stream = sourceCommand({ source: 'probe', probe: '/p', selfPid: 7 }, () => true);
    expect(stream.argv).toEqual(['/p', '--exclude-pid', '7', '--tls', 'off']);
  });

  test('--probe-close=false runs the probe with --no-close; by default it reports close events', () => {
    const off = loadAgentConfig([...BASE, '--probe-close=false'], {}).config!;
    expect(sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: off.probeMode, probeClose: off.probeClose }, () => true).argv).toEqual(['/p', '--exclude-pid', '7', '--no-close', '--tls', 'off']);
    const zw = loadAgentConfig([...BASE, '--probe-zero-windows'], {}).config!;
    expect(sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: zw.probeMode, probeClose: zw.probeClose, probeZeroWindows: zw.probeZeroWindows }, () => true).argv).toEqual(['/p', '--exclude-pid', '7', '--zero-windows', '--tls', 'off']);
    const on = loadAgentConfig(BASE, {}).config!;
    expect(sourceCommand({ source: 'probe', probe: '/p', selfPid: 7, probeMode: on.probeMode, probeClose: on.probeClose }, () => true).argv).toEqual(['/p', '--exclude-pid', '7', '--tls', 'off']);
  });

  test('hist mode is for the probe only: a clear error for text tools', () => {
    expect(() => loadAgentConfig([...BASE, '--source', 'tcplife', '--probe-mode', 'hist'], {})).toThrow(ConfigError);
    expect(() => loadAgentConfig([...BASE, '--source', 'tcplife', '--probe-mode', 'hist'], {})).toThrow(/--probe-mode hist: only for --source probe/);
    expect(loadAgentConfig([...BASE, '--source', 'ndjson', '--probe-mode', 'hist'], {}).config!.probeMode).toBe('hist');
  });
});
