/** The flags of `tcplat renderer` (also TCPLAT_<FLAG> and config-file keys) and their validation. */
import {
  checkExposureIfLiteral,
  checkHttpLimits,
  ConfigError,
  HTTP_OPTIONS,
  httpLimitsFromConfig,
  INFLUX_OPTIONS,
  influxTargetFromConfig,
  MIN_TOKEN_LENGTH,
  parseTokens,
  type ConfigValues,
  type HttpLimits,
  type InfluxTarget,
  type OptionSpec,
  type RollupWindowName,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
} from '@tcplat/core';
import { validKid } from './auth';
import { DEFAULT_LIMITS, type Limits } from './params';

export const RENDERER_OPTIONS: readonly OptionSpec[] = [
  ...INFLUX_OPTIONS,
  { name: 'listen', type: 'hostport', arg: 'HOST:PORT', help: 'address to serve on; unless it resolves only to loopback addresses it needs --auth-token', default: '127.0.0.1:7071' },
  ...HTTP_OPTIONS,
  { name: 'workers', type: 'int', arg: 'N', help: 'long-lived Python Matplotlib workers', default: 2, min: 1, max: 32 },
  { name: 'queue', type: 'int', arg: 'N', help: 'renders that may wait for a free worker; beyond that, 429 with Retry-After', default: 16, min: 0, max: 10_000 },
  { name: 'cache-mb', type: 'int', arg: 'N', help: 'LRU cache of rendered images, MiB (0: no cache)', default: 64, min: 0, max: 65_536 },
  { name: 'python', type: 'string', arg: 'PATH', help: 'Python with matplotlib and numpy (Debian: python3-matplotlib)', default: '/usr/bin/python3' },
  { name: 'render-timeout', type: 'duration', arg: 'DURATION', help: 'longest a worker may draw one chart; then it is replaced', default: '20s' },
  { name: 'query-timeout', type: 'duration', arg: 'DURATION', help: 'longest InfluxDB may take to answer one query', default: '15s' },
  { name: 'worker-max-renders', type: 'int', arg: 'N', help: 'replace a worker after this many charts (0: never)', default: 5000, min: 0 },
  { name: 'worker-max-rss', type: 'int', arg: 'MB', help: 'replace a worker, when idle, whose resident memory is above this many MiB (0: never)', default: 300, min: 0 },
  { name: 'max-range', type: 'duration', arg: 'DURATION', help: 'longest time range of one chart', default: '31d' },
  { name: 'max-width', type: 'int', arg: 'PX', help: 'widest image', default: DEFAULT_LIMITS.maxWidth, min: 200, max: 10_000 },
  { name: 'max-height', type: 'int', arg: 'PX', help: 'tallest image', default: DEFAULT_LIMITS.maxHeight, min: 150, max: 10_000 },
  { name: 'max-bins', type: 'int', arg: 'N', help: 'most time bins in one chart', default: DEFAULT_LIMITS.maxBins, min: 10, max: 10_000 },
  { name: 'rollups', type: 'string', arg: 'LEVELS', help: `rollup levels to read for long ranges, comma-separated (${ROLLUP_WINDOWS.map((w) => w.name).join(', ')}), or none: read only the 10 s data`, default: ROLLUP_WINDOWS.map((w) => w.name).join(',') },
  { name: 'rollup-rp', type: 'string', arg: 'RP', help: 'InfluxDB 1.x retention policy of the rollups, in the --influx-db database', default: ROLLUP_RP },
  { name: 'rollup-bucket', type: 'string', arg: 'BUCKET', help: `InfluxDB 2.x bucket of the rollups (default: --influx-bucket + ${ROLLUP_BUCKET_SUFFIX})` },
  {
    name: 'no-fleet-rollups',
    type: 'bool',
    help: 'never read the fleet rollups (made by tcplat rollup, summed over hosts) for charts over every host: read one series per host',
    default: false,
  },
  { name: 'min-bin', type: 'duration', arg: 'DURATION', help: "narrowest time bin: the agent's flush window", default: '10s' },
  { name: 'auth-token', type: 'string', arg: 'TOKENS', help: `bearer tokens (comma-separated, each at least ${MIN_TOKEN_LENGTH} characters) required on every route but /healthz`, secret: true },
  { name: 'link-secret', type: 'string', arg: 'SECRET', help: 'HMAC key of signed links (default: derived from the first auth token)', secret: true },
  { name: 'link-ttl', type: 'duration', arg: 'DURATION', help: 'default lifetime of links minted by POST /links', default: '7d' },
  { name: 'link-max-ttl', type: 'duration', arg: 'DURATION', help: 'longest lifetime a link may ask for', default: '90d' },
  { name: 'public-url', type: 'string', arg: 'URL', help: 'base URL put in minted and alert links, the one their readers can open (default on loopback: the listen address; beyond it POST /links refuses until it is set)' },
  { name: 'alert-link-keys', type: 'string', arg: 'KIDS', help: 'key ids (comma-separated) whose alert-link grants open GET /alert/heatmap.png; drop one to revoke its links (empty: alert links off)', default: '' },
  { name: 'alert-link-ttl', type: 'duration', arg: 'DURATION', help: 'how long after the end of its window an alert link still opens', default: '7d' },
  { name: 'alert-relay-token', type: 'string', arg: 'TOKEN', help: `bearer token Grafana's webhook contact point sends to POST /alert/relay (its authorization_credentials; at least ${MIN_TOKEN_LENGTH} characters; opens nothing else). Unset: the relay is off`, secret: true },
  { name: 'alert-relay-to', type: 'string', arg: 'URL', help: 'chat incoming-webhook URL the relay forwards each notification to, as {"text": ...} (Slack, Mattermost, Rocket.Chat); a secret: prefer TCPLAT_ALERT_RELAY_TO_FILE', secret: true },
  { name: 'alert-relay-smtp', type: 'string', arg: 'URL', help: 'SMTP server the relay mails each notification through, as plain text: smtp://[user:pass@]host[:port] (STARTTLS when offered) or smtps://...; a secret: prefer TCPLAT_ALERT_RELAY_SMTP_FILE', secret: true },
  { name: 'alert-relay-mail-from', type: 'string', arg: 'ADDRESS', help: 'sender address of the relay\'s mails' },
  { name: 'alert-relay-mail-to', type: 'string', arg: 'ADDRESSES', help: 'recipients (comma-separated) of the relay\'s mails' },
  { name: 'alert-relay-kid', type: 'string', arg: 'KID', help: 'key id the relay signs alert links with (default: the last of --alert-link-keys, the newest)' },
  { name: 'alert-link-grants', type: 'bool', help: 'also open grant links (kid + grant, the same for every alert, so a reader can edit the service or window: see deploy/README.md); off: only per-alert links signed by the relay open', default: false },
  { name: 'log-level', type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], help: 'log level', default: 'info' },
];

/** The renderer's only body is POST /links (16 KiB, its own limit); nothing else needs more. */
export const RENDERER_BODY_LIMIT = 64 * 1024;

/** Where the rollups are and which levels may be read. */
export interface RollupConfig {
  levels: RollupWindowName[];
  /** 1.x: retention policy (same database). */
  rp: string;
  /** 2.x: bucket. */
  bucket?: string;
  /** Read the fleet rollups for charts over every host (not with --no-fleet-rollups or --rollups none). */
  fleet: boolean;
}

export interface RendererConfig {
  influx: InfluxTarget;
  rollups: RollupConfig;
  listen: { host: string; port: number };
  http: HttpLimits;
  workers: number;
  queue: number;
  cacheBytes: number;
  python: string;
  renderTimeoutMs: number;
  queryTimeoutMs: number;
  workerMaxRenders: number;
  workerMaxRssBytes: number;
  limits: Limits;
  authTokens: string[];
  linkSecret?: string;
  linkTtlMs: number;
  linkMaxTtlMs: number;
  publicUrl?: string;
  alertLinkKeys: string[];
  alertLinkTtlMs: number;
  alertLinkGrants: boolean;
  /** The relay (POST /alert/relay), when --alert-relay-token is set. */
  alertRelay?: { token: string; to?: string; mail?: { url: string; from: string; to: string[] }; kid: string };
  logLevel: string;
}

export function rendererConfig(v: ConfigValues): RendererConfig {
  const influx = influxTargetFromConfig(v);
  const listen = v.listen as { host: string; port: number };
  const authTokens = parseTokens('auth-token', v['auth-token'] as string | undefined, { list: true });
  // A listen name (not an IP literal) is resolved and checked by the server before it listens.
  checkExposureIfLiteral(listen, authTokens.length > 0, 'auth-token');
  const http = httpLimitsFromConfig(v, RENDERER_BODY_LIMIT);
  const httpError = checkHttpLimits(http);
  if (httpError) throw new ConfigError(httpError);
  const linkSecret = v['link-secret'] as string | undefined;
  if (linkSecret !== undefined && linkSecret.length < 16) throw new ConfigError('--link-secret: needs at least 16 characters');
  const publicUrl = v['public-url'] as string | undefined;
  if (publicUrl !== undefined && !/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(publicUrl)) throw new ConfigError(`--public-url: expected an http(s) base URL, got ${JSON.stringify(publicUrl)}`);
  const alertLinkKeys = String(v['alert-link-keys'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const k of alertLinkKeys) if (!validKid(k)) throw new ConfigError(`--alert-link-keys: ${JSON.stringify(k)} is not a key id (letters, digits, . _ -; at most 64)`);
  if (alertLinkKeys.length > 0 && authTokens.length === 0 && linkSecret === undefined) throw new ConfigError('--alert-link-keys needs --link-secret (or --auth-token, from which the link secret is derived)');
  let alertRelay: RendererConfig['alertRelay'];
  const relayToken = v['alert-relay-token'] as string | undefined;
  if (relayToken !== undefined && relayToken.trim() !== '') {
    const [token] = parseTokens('alert-relay-token', relayToken, { list: false });
    const to = String(v['alert-relay-to'] ?? '').trim();
    if (to !== '' && !/^https?:\/\/[^\s]+$/.test(to)) throw new ConfigError('--alert-relay-to: expected the http(s) URL of a chat incoming webhook');
    const smtp = String(v['alert-relay-smtp'] ?? '').trim();
    let mail: { url: string; from: string; to: string[] } | undefined;
    if (smtp !== '') {
      if (!/^smtps?:\/\/[^\s/]+\/?$/.test(smtp)) throw new ConfigError('--alert-relay-smtp: expected smtp://[user:pass@]host[:port] or smtps://...');
      const from = String(v['alert-relay-mail-from'] ?? '').trim();
      const rcpt = String(v['alert-relay-mail-to'] ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
      const addr = /^[^\s@<>,]+@[^\s@<>,]+$/;
      if (!addr.test(from)) throw new ConfigError('--alert-relay-smtp needs --alert-relay-mail-from ADDRESS (the sender)');
      if (rcpt.length === 0 || !rcpt.every((r) => addr.test(r))) throw new ConfigError('--alert-relay-smtp needs --alert-relay-mail-to ADDRESSES (comma-separated recipients)');
      mail = { url: smtp, from, to: rcpt };
    }
    if (to === '' && !mail) throw new ConfigError('--alert-relay-token needs somewhere to send: --alert-relay-to URL (a chat incoming webhook) and/or --alert-relay-smtp URL with --alert-relay-mail-from and --alert-relay-mail-to (TCPLAT_ALERT_RELAY_TO_FILE / TCPLAT_ALERT_RELAY_SMTP_FILE keep them out of argv)');
    if (alertLinkKeys.length === 0) throw new ConfigError('--alert-relay-token needs --alert-link-keys (the key id the relay signs alert links with)');
    const kid = (v['alert-relay-kid'] as string | undefined) ?? alertLinkKeys[alertLinkKeys.length - 1];
    if (!alertLinkKeys.includes(kid)) throw new ConfigError(`--alert-relay-kid ${JSON.stringify(kid)} is not in --alert-link-keys: the renderer would refuse the links it signs`);
    alertRelay = { token, ...(to !== '' ? { to } : {}), ...(mail ? { mail } : {}), kid };
  }
  const linkTtlMs = v['link-ttl'] as number;
  const linkMaxTtlMs = v['link-max-ttl'] as number;
  if (linkTtlMs > linkMaxTtlMs) throw new ConfigError('--link-ttl is longer than --link-max-ttl');
  const minBinMs = v['min-bin'] as number;
  if (!(minBinMs >= 1000 && Number.isInteger(minBinMs))) throw new ConfigError('--min-bin: at least 1s, in whole milliseconds');
  const maxRangeMs = v['max-range'] as number;
  if (!(maxRangeMs >= 60_000)) throw new ConfigError('--max-range: at least 1m');
  return {
    influx,
    rollups: rollupConfig(v, influx),
    listen,
    http,
    workers: v.workers as number,
    queue: v.queue as number,
    cacheBytes: (v['cache-mb'] as number) * 1024 * 1024,
    python: v.python as string,
    renderTimeoutMs: v['render-timeout'] as number,
    queryTimeoutMs: v['query-timeout'] as number,
    workerMaxRenders: v['worker-max-renders'] as number,
    workerMaxRssBytes: (v['worker-max-rss'] as number) * 1024 * 1024,
    limits: {
      maxRangeMs,
      maxWidth: v['max-width'] as number,
      maxHeight: v['max-height'] as number,
      maxBins: v['max-bins'] as number,
      minBinMs,
      maxListValues: DEFAULT_LIMITS.maxListValues,
      rollupLevels: rollupConfig(v, influx).levels,
    },
    authTokens,
    linkSecret,
    linkTtlMs,
    linkMaxTtlMs,
    publicUrl: publicUrl?.replace(/\/+$/, ''),
    alertLinkKeys,
    alertLinkTtlMs: v['alert-link-ttl'] as number,
    alertLinkGrants: v['alert-link-grants'] === true,
    alertRelay,
    logLevel: v['log-level'] as string,
  };
}

function rollupConfig(v: ConfigValues, influx: InfluxTarget): RollupConfig {
  const names = ROLLUP_WINDOWS.map((w) => w.name) as string[];
  const raw = String(v.rollups ?? '').trim();
  const levels: RollupWindowName[] = [];
  if (raw !== 'none') {
    for (const x of raw.split(',').map((s) => s.trim())) {
      if (!names.includes(x)) throw new ConfigError(`--rollups: ${JSON.stringify(x)} is not a rollup level; give some of ${names.join(', ')} (comma-separated) or none`);
      if (!levels.includes(x as RollupWindowName)) levels.push(x as RollupWindowName);
    }
  }
  const rp = String(v['rollup-rp'] ?? ROLLUP_RP);
  const bucket = v['rollup-bucket'] as string | undefined;
  // eslint-disable-next-line no-control-regex
  for (const [flag, val] of [['rollup-rp', rp], ['rollup-bucket', bucket]] as const) if (val !== undefined && (val === '' || /[\x00-\x1f\x7f]/.test(val))) throw new ConfigError(`--${flag}: expected a name, got ${JSON.stringify(val)}`);
  if (bucket !== undefined && influx.version === 1) throw new ConfigError('--rollup-bucket is for InfluxDB 2.x; with --influx-db the rollups are in --rollup-rp');
  return { levels, rp, bucket, fleet: levels.length > 0 && v['no-fleet-rollups'] !== true };
}
