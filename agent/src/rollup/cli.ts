/**
 * `tcplat rollup`: backfill and catch up the rollups of data already in InfluxDB (users upgrading have
 * history), with the engine the agent uses live. Walks the range in chunks aligned to the epoch with
 * progress on stderr; idempotent (a point written again overwrites itself), so a failed run is simply run
 * again (from the chunk it names). Creates the rollup retention policy (1.x) / bucket (2.x) when missing;
 * changes retention of existing data only when asked (--retention-raw, an explicit --retention-rollups).
 */
import {
  ConfigError,
  describeTarget,
  formatHelp,
  INFLUX_OPTIONS,
  influxTargetFromConfig,
  loadConfig,
  MEASUREMENT,
  parseTime,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  rollupMeasurement,
  type OptionSpec,
} from '@tcplat/core';
import { chunks, COARSEST_WINDOW_MS, ensureRollupStore, firstPointMs, influxQLDuration, listHosts, rollupRange, rollupStore, setSourceRetention } from './engine';

export const ROLLUP_OPTIONS: readonly OptionSpec[] = [
  ...INFLUX_OPTIONS,
  { name: 'from', type: 'string', arg: 'TIME', help: 'start of the range: now-7d, epoch ms or an ISO 8601 date (default: the first tcp_connect_hist point)' },
  { name: 'to', type: 'string', arg: 'TIME', default: 'now', help: 'end of the range (exclusive; widened to whole windows)' },
  { name: 'host', type: 'string', arg: 'NAME', help: "only this host's series (default: every host; each host's series are rolled up on their own)" },
  { name: 'chunk', type: 'duration', arg: 'DURATION', default: '6h', help: "time walked per step (whole hours); each step is done host by host, so memory holds one host's series of one step" },
  { name: 'rollup-rp', type: 'string', arg: 'RP', default: ROLLUP_RP, help: 'InfluxDB 1.x retention policy of the rollups (in --influx-db)' },
  { name: 'rollup-bucket', type: 'string', arg: 'BUCKET', help: `InfluxDB 2.x bucket of the rollups (default: --influx-bucket + "${ROLLUP_BUCKET_SUFFIX}")` },
  {
    name: 'retention-rollups',
    type: 'string',
    arg: 'DURATION',
    default: '400d',
    help: 'retention of the rollup RP/bucket when it is created (hours, days or weeks; 0 = forever); given explicitly, also applied to an existing one',
  },
  {
    name: 'retention-raw',
    type: 'string',
    arg: 'DURATION',
    help: "set the retention of the 10 s and raw data (1.x: --influx-rp or the database's default RP; 2.x: --influx-bucket), e.g. 14d. Never changed unless given",
  },
  { name: 'no-setup', type: 'bool', default: false, help: 'do not create the rollup RP/bucket (it must exist)' },
];

export const ROLLUP_SUMMARY = [
  `Computes the rollups of ${MEASUREMENT.connectHist} (exact sums over ${ROLLUP_WINDOWS.map((w) => w.name).join(', ')} windows:`,
  `${ROLLUP_WINDOWS.map((w) => rollupMeasurement(MEASUREMENT.connectHist, w.name)).join(', ')}) from the data already in InfluxDB,`,
  'the way the agent keeps them up to date live. Use it once after upgrading (history written before rollups',
  'existed), after importing old captures with an agent run with --no-rollup, or to repair a range. Running it again',
  'gives the same rollups. Progress (chunk, points written, rate, ETA) goes to stderr; on failure it exits 1 naming',
  'the chunk, and running the same command again (or from that chunk) finishes the job.',
].join('\n');

export const ROLLUP_FOOTER = [
  'examples:',
  '  tcplat rollup --influx-url http://127.0.0.1:8086 --influx-db tcplat',
  '  tcplat rollup --influx-db tcplat --from now-2d --host web-1',
  '  tcplat rollup --influx-db tcplat --retention-raw 14d --retention-rollups 400d',
  '  tcplat rollup --influx-org tcplat --influx-bucket tcplat --influx-token "$TOKEN"',
].join('\n');

function fmtTime(ms: number): string {
  return new Date(ms).toISOString().replace(':00.000Z', 'Z');
}

function fmtSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 90) return `${Math.round(s)}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}

export async function main(argv: string[], io: { stderr: NodeJS.WritableStream; stdout: NodeJS.WritableStream; now?: () => number } = process): Promise<number> {
  const err = (s: string) => io.stderr.write(s + '\n');
  const now = io.now ?? Date.now;
  let o: ReturnType<typeof parse>;
  try {
    const loaded = loadConfig(ROLLUP_OPTIONS, argv);
    if (loaded.help) {
      io.stdout.write(formatHelp('rollup', ROLLUP_SUMMARY, ROLLUP_OPTIONS, ROLLUP_FOOTER));
      return 0;
    }
    o = parse(loaded.values, loaded.sources, now());
  } catch (e) {
    if (e instanceof ConfigError) {
      err(`tcplat rollup: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const store = rollupStore(o.target, { rp: o.rollupRp, bucket: o.rollupBucket });
  const where = describeTarget(o.target);
  const rollupWhere = store.rollup.version === 1 ? `retention policy ${store.rollup.rp}` : `bucket ${store.rollup.bucket}`;
  try {
    if (!o.noSetup) err(`tcplat rollup: ${await ensureRollupStore(store, { retention: o.retentionRollups, alter: o.alterRollups })}`);
    if (o.retentionRaw !== undefined) err(`tcplat rollup: ${await setSourceRetention(o.target, o.retentionRaw)}`);
  } catch (e) {
    err(`tcplat rollup: cannot set up the rollup ${rollupWhere} on ${where}: ${(e as Error).message}`);
    return 1;
  }
  let from = o.fromMs;
  if (from === undefined) {
    let first: number | null;
    try {
      first = await firstPointMs(o.target, o.host);
    } catch (e) {
      err(`tcplat rollup: cannot read ${MEASUREMENT.connectHist} from ${where}: ${(e as Error).message}`);
      return 1;
    }
    if (first === null) {
      err(`tcplat rollup: no ${MEASUREMENT.connectHist} points${o.host !== undefined ? ` of host ${o.host}` : ''} in ${where}: nothing to roll up`);
      return 0;
    }
    from = first;
  }
  if (from >= o.toMs) {
    err(`tcplat rollup: nothing to do: the range starts (${fmtTime(from)}) at or after its end (${fmtTime(o.toMs)})`);
    return 0;
  }
  const steps = chunks(from, o.toMs, o.chunkMs);
  let hosts: string[];
  try {
    hosts = o.host !== undefined ? [o.host] : await listHosts(o.target, steps[0][0]);
  } catch (e) {
    err(`tcplat rollup: cannot list the hosts of ${MEASUREMENT.connectHist} in ${where}: ${(e as Error).message}`);
    return 1;
  }
  err(
    `tcplat rollup: ${where}: ${fmtTime(steps[0][0])} .. ${fmtTime(steps[steps.length - 1][1])} in ${steps.length} chunk(s) of ${o.chunkMs / 3_600_000}h, ${
      o.host !== undefined ? `host ${o.host}` : `${hosts.length} host(s)`
    }, into the ${rollupWhere}`,
  );
  const t0 = now();
  let points = 0;
  for (let i = 0; i < steps.length; i++) {
    const [a, b] = steps[i];
    const label = `chunk ${i + 1}/${steps.length} ${fmtTime(a)} .. ${fmtTime(b)}`;
    let host = '';
    try {
      // Host by host: each host's series are rolled up on their own, and one answer holds one host's.
      const byLevel = new Map<string, number>();
      let chunkPoints = 0;
      for (host of hosts) {
        const r = await rollupRange({ store, fromMs: a, toMs: b, host });
        chunkPoints += r.points;
        for (const l of r.levels) byLevel.set(l.window, (byLevel.get(l.window) ?? 0) + l.points);
      }
      points += chunkPoints;
      const elapsed = (now() - t0) / 1000;
      const rate = elapsed > 0 ? points / elapsed : 0;
      const eta = ((steps.length - i - 1) * elapsed) / (i + 1);
      err(`${label}: ${chunkPoints} points (${ROLLUP_WINDOWS.map((w) => `${w.name} ${byLevel.get(w.name) ?? 0}`).join(', ')}); ${points} in all, ${Math.round(rate)} points/s, ETA ${fmtSeconds(eta)}`);
    } catch (e) {
      err(`tcplat rollup: ${label}${hosts.length > 1 ? ` (host ${host})` : ''} failed: ${(e as Error).message}`);
      err(`tcplat rollup: chunks before it are done; run the same command again, or with --from ${new Date(a).toISOString()} to start at this chunk`);
      return 1;
    }
  }
  err(`tcplat rollup: done: ${points} points in ${steps.length} chunk(s), ${fmtSeconds((now() - t0) / 1000)}`);
  return 0;
}

function parse(v: Record<string, unknown>, sources: Record<string, string>, nowMs: number) {
  const target = influxTargetFromConfig(v);
  const time = (flag: string): number | undefined => {
    const x = v[flag];
    if (x === undefined) return undefined;
    try {
      return parseTime(String(x), nowMs);
    } catch (e) {
      throw new ConfigError(`--${flag}: ${(e as Error).message}`);
    }
  };
  const fromMs = time('from');
  const toMs = time('to')!;
  if (fromMs !== undefined && fromMs >= toMs) throw new ConfigError(`--from (${new Date(fromMs).toISOString()}) must be before --to (${new Date(toMs).toISOString()})`);
  const chunkMs = v.chunk as number;
  if (!(chunkMs >= COARSEST_WINDOW_MS) || chunkMs % COARSEST_WINDOW_MS !== 0) throw new ConfigError(`--chunk: a whole number of hours (the coarsest rollup window), got ${chunkMs} ms`);
  const retention = (flag: string): string | undefined => {
    const x = v[flag];
    if (x === undefined) return undefined;
    try {
      influxQLDuration(String(x));
    } catch (e) {
      throw new ConfigError(`--${flag}: ${(e as Error).message}`);
    }
    return String(x);
  };
  const host = v.host === undefined ? undefined : String(v.host);
  if (host === '') throw new ConfigError('--host: empty; leave it out to roll up every host');
  return {
    target,
    fromMs,
    toMs,
    chunkMs,
    host,
    rollupRp: String(v['rollup-rp']),
    rollupBucket: v['rollup-bucket'] === undefined ? undefined : String(v['rollup-bucket']),
    retentionRollups: retention('retention-rollups')!,
    alterRollups: sources['retention-rollups'] !== 'default',
    retentionRaw: retention('retention-raw'),
    noSetup: v['no-setup'] === true,
  };
}
