/** `tcplat renderer`: bin/tcplat dispatches here. */
import { ConfigError, formatHelp, loadConfig } from '@tcplat/core';
import { publicBase } from './app';
import { alertLinkPrefix, linkSecret, validKid } from './auth';
import { RENDERER_OPTIONS, rendererConfig } from './config';
import { RenderError } from './pool';
import { runUntilSignal } from './server';

const SUMMARY = `Serve PNG heatmaps and percentile charts of TCP connect latency (tcp_connect_hist) for Grafana panels
and alert notifications: GET /render/heatmap.png, GET /render/percentiles.png, POST /links, /healthz, /metrics.
The query dialect follows the credentials: --influx-db selects InfluxDB 1.x (InfluxQL), --influx-org,
--influx-bucket and --influx-token select 2.x (Flux). Long ranges read the coarsest rollup (--rollups, in
--rollup-rp or --rollup-bucket) that keeps one bin per 4 pixel columns; the subtitle says which, and
missing rollups fall back to the 10 s data with a note (tcplat rollup makes them).`;

const FOOTER = `tcplat renderer alert-link KID prints the link prefix Grafana's alert rules need (see --help there).

Bound to loopback (the default) the renderer may run without tokens. Bound to a name or address that is
not loopback (the name is resolved: a hosts file may map localhost elsewhere) it
refuses to start unless --auth-token is set; then every route but /healthz needs the token
(Authorization: Bearer T or ?token=T) or a signed link minted by POST /links.`;

const ALERT_LINK_USAGE = `usage: tcplat renderer alert-link KID [renderer flags]

Print the alert-link prefix of key id KID for Grafana's alert rules (the label tcplat_alert_link, e.g. the
environment variable TCPLAT_ALERT_LINK in compose): <public URL>/alert/heatmap.png?kid=KID&grant=G.
It takes the renderer's own flags or TCPLAT_* environment: the link secret (--link-secret, or derived from
--auth-token), --public-url and --alert-link-keys, which must list KID for the links to open.
The grant opens nothing but one service's heatmap over at most 24 h, from notifications; to revoke it,
remove KID from --alert-link-keys and give Grafana the prefix of a new key id.
`;

/** `tcplat renderer alert-link KID`: print the alert-link prefix for Grafana. */
export function alertLinkCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): { code: number; out: string; err: string } {
  const [kid, ...rest] = argv;
  if (!kid || kid === '--help' || kid === '-h') return { code: kid ? 0 : 2, out: kid ? ALERT_LINK_USAGE : '', err: kid ? '' : ALERT_LINK_USAGE };
  if (!validKid(kid)) return { code: 2, out: '', err: `tcplat renderer alert-link: ${JSON.stringify(kid)} is not a key id (letters, digits, . _ -; at most 64)\n` };
  try {
    const config = rendererConfig(loadConfig(RENDERER_OPTIONS, rest, env).values);
    const secret = linkSecret(config.authTokens, config.linkSecret);
    if (!secret) return { code: 2, out: '', err: 'tcplat renderer alert-link: no link secret: give --link-secret (or --auth-token), the same the renderer runs with\n' };
    const base = publicBase(config);
    if (!base) return { code: 2, out: '', err: 'tcplat renderer alert-link: give --public-url, the address recipients of alerts can open\n' };
    let warn = config.alertLinkKeys.includes(kid) ? '' : `tcplat renderer alert-link: warning: ${kid} is not in --alert-link-keys, so the renderer refuses these links until it is\n`;
    if (!config.alertLinkGrants) warn += 'tcplat renderer alert-link: warning: grant links are off (--alert-link-grants): a renderer started with these options refuses them; the alert relay (POST /alert/relay) signs a link per alert instead, see deploy/README.md\n';
    return { code: 0, out: `${alertLinkPrefix(base, secret, kid)}\n`, err: warn };
  } catch (e) {
    if (e instanceof ConfigError) return { code: 2, out: '', err: `tcplat renderer alert-link: ${e.message}\n` };
    throw e;
  }
}

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'alert-link') {
    const r = alertLinkCommand(argv.slice(1));
    process.stdout.write(r.out);
    process.stderr.write(r.err);
    return r.code;
  }
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
