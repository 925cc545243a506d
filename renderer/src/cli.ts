/** `tcplat renderer`: bin/tcplat dispatches here. */
import { ConfigError, formatHelp, loadConfig } from '@tcplat/core';
import { RENDERER_OPTIONS, rendererConfig } from './config';
import { RenderError } from './pool';
import { runUntilSignal } from './server';

const SUMMARY = `Serve PNG heatmaps and percentile charts of TCP connect latency (tcp_connect_hist) for Grafana panels
and alert notifications: GET /render/heatmap.png, GET /render/percentiles.png, POST /links, /healthz, /metrics.
The query dialect follows the credentials: --influx-db selects InfluxDB 1.x (InfluxQL), --influx-org,
--influx-bucket and --influx-token select 2.x (Flux).`;

const FOOTER = `Bound to loopback (the default) the renderer may run without tokens. Bound to a name or address that is
not loopback (the name is resolved: a hosts file may map localhost elsewhere) it
refuses to start unless --auth-token is set; then every route but /healthz needs the token
(Authorization: Bearer T or ?token=T) or a signed link minted by POST /links.`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    const loaded = loadConfig(RENDERER_OPTIONS, argv);
    if (loaded.help) {
      process.stdout.write(formatHelp('renderer', SUMMARY, RENDERER_OPTIONS, FOOTER));
      return 0;
    }
    values = loaded.values;
    rendererConfig(values); // validate before anything starts
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tcplat renderer: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  try {
    return await runUntilSignal(values);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tcplat renderer: ${e.message}\n`);
      return 2;
    }
    if (e instanceof RenderError && e.reason === 'start') {
      process.stderr.write(`tcplat renderer: ${e.message}\nThe workers need Debian's python3-matplotlib and python3-numpy (sudo scripts/setup), or give --python PATH.\n`);
      return 1;
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      process.stderr.write(`tcplat renderer: cannot listen: ${(e as Error).message} (choose another --listen)\n`);
      return 1;
    }
    throw e;
  }
}
