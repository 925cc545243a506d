/** The command each --source runs unless --source-cmd replaces it. */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '@tcplat/core';
import type { SourceCommand } from './supervisor';

export const SOURCES = ['probe', 'tcplife', 'tcpstates', 'tcpconnlat', 'ndjson'] as const;
export type SourceKind = (typeof SOURCES)[number];
export const PROBE_MODES = ['stream', 'hist'] as const;
export type ProbeMode = (typeof PROBE_MODES)[number];

/** Where the tools live: libbpf-tools (Debian's libbpf-tools package), then BCC (Python) installs. */
export const TOOL_PATHS: Record<'tcplife' | 'tcpstates' | 'tcpconnlat', string[]> = {
  tcplife: ['/usr/sbin/tcplife', '/usr/share/bcc/tools/tcplife', '/usr/sbin/tcplife-bpfcc'],
  tcpstates: ['/usr/sbin/tcpstates', '/usr/share/bcc/tools/tcpstates', '/usr/sbin/tcpstates-bpfcc'],
  tcpconnlat: ['/usr/sbin/tcpconnlat', '/usr/share/bcc/tools/tcpconnlat', '/usr/sbin/tcpconnlat-bpfcc'],
};

const STDBUF = '/usr/bin/stdbuf';

/** bpf/tcplat-probe of this checkout (agent/dist/sources or agent/src/sources -> repository root). */
export function defaultProbePath(): string {
  return path.resolve(__dirname, '..', '..', '..', 'bpf', 'tcplat-probe');
}

function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export interface CommandInput {
  source: SourceKind;
  sourceCmd?: string;
  probe?: string;
  /** The agent's pid, excluded in the kernel by the probe. */
  selfPid: number;
  /** More pids the probe excludes in the kernel. */
  excludePids?: readonly number[];
  /** hist: the probe aggregates in the kernel and prints one histogram line per key every histIntervalMs. */
  probeMode?: ProbeMode;
  /** Stream mode: true lets the probe report close events; otherwise it runs with --no-close. Default false. */
  probeClose?: boolean;
  /** Stream mode with close events: run the probe with --zero-windows. */
  probeZeroWindows?: boolean;
  /** false: run the probe with --tls off (no uprobes on OpenSSL, no tls lines). Default on. */
  probeTls?: boolean;
  histIntervalMs?: number;
}

export function sourceCommand(c: CommandInput, exists: (p: string) => boolean = executable): SourceCommand {
  if (c.sourceCmd !== undefined && c.sourceCmd.trim() !== '') return { shell: c.sourceCmd };
  switch (c.source) {
    case 'probe': {
      const probe = c.probe ?? defaultProbePath();
      if (!exists(probe)) {
        throw new ConfigError(`--probe ${probe}: not found or not executable; build it with 'make -C bpf', or give --probe PATH`);
      }
      const argv = [probe, ...[c.selfPid, ...(c.excludePids ?? [])].flatMap((p) => ['--exclude-pid', String(p)])];
      // Its windows as long as the agent's: each probe histogram then falls in one agent window.
      if (c.probeMode === 'hist') argv.push('--mode', 'hist', '--hist-interval', String((c.histIntervalMs ?? 10_000) / 1000));
      else if (c.probeClose !== true) argv.push('--no-close');
      else if (c.probeZeroWindows) argv.push('--zero-windows');
      // TLS handshakes (tls_handshake, tls_handshake_hist) are on by default: the probe's own default.
      if (c.probeTls === false) argv.push('--tls', 'off');
      return { argv };
    }
    case 'ndjson':
      return { stdin: true };
    default: {
      const found = TOOL_PATHS[c.source].find((p) => exists(p));
      if (!found) {
        throw new ConfigError(
          `--source ${c.source}: the tool is not installed (looked for ${TOOL_PATHS[c.source].join(', ')}); install libbpf-tools or bpfcc-tools, or give --source-cmd`,
        );
      }
      // libbpf-tools print with stdio, fully buffered into a pipe: without line buffering, rows would
      // arrive 4 KiB at a time (and the last ones never, if the tool is killed).
      return { argv: exists(STDBUF) ? [STDBUF, '-oL', found] : [found] };
    }
  }
}
