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
  FLEET_ROLLUP_WINDOWS,
  fleetRollupMeasurement,
  formatHelp,
  INFLUX_OPTIONS,
  influxTargetFromConfig,
  loadConfig,
  MEASUREMENT,
  parseTime,
  FLEET_ROLLED_UP_MEASUREMENTS,
  ROLLED_UP_MEASUREMENTS,
  type HistMeasurement,
  ROLLUP_BUCKET_SUFFIX,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  rollupMeasurement,
  type OptionSpec,
} from '@tcplat/core';
import { chunks, COARSEST_WINDOW_MS, ensureRollupStore, firstPointMs, floorTo, influxQLDuration, listHosts, rollupFleetRange, rollupRange, rollupStore, setSourceRetention, type RollupStore } from './engine';

export const ROLLUP_OPTIONS: readonly OptionSpec[] = [
  ...INFLUX_OPTIONS,
  { name: 'from', type: 'string', arg: 'TIME', help: 'start of the range: now-7d, epoch ms or an ISO 8601 date (default: each measurement\'s first point)' },
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
  {
    name: 'fleet-only',
    type: 'bool',
    default: false,
    help: `only the fleet rollups (${FLEET_ROLLUP_WINDOWS.map((w) => fleetRollupMeasurement(MEASUREMENT.connectHist, w)).join(', ')}: summed over hosts, no host tag), from the per-host rollups already there (the agents make those live)`,
  },
  { name: 'no-fleet', type: 'bool', default: false, help: 'do not make the fleet rollups (the per-host ones only)' },
  {
    name: 'follow',
    type: 'duration',
    arg: 'DURATION',
    help: 'after the run, keep going: every DURATION redo it over the last --follow-lookback (e.g. 2m with --fleet-only keeps the fleet rollups current, late events included); stops on SIGTERM/SIGINT',
  },
  { name: 'follow-lookback', type: 'duration', arg: 'DURATION', default: '3h', help: 'with --follow: how far back each round re-sums (events later than this need a run with --from)' },
];

export const ROLLUP_SUMMARY = [
  `Computes the rollups of ${ROLLED_UP_MEASUREMENTS.join(', ')}, one after the other`,
  `(exact sums over ${ROLLUP_WINDOWS.map((w) => w.name).join(', ')} windows: ${ROLLUP_WINDOWS.map((w) => rollupMeasurement(MEASUREMENT.connectHist, w.name)).join(', ')} and the same`,
  'for the others) from the data already in InfluxDB, the way the agent keeps them up to date live.',
  'Use it once after upgrading (history written before rollups existed), after importing old captures with an',
  'agent run with --no-rollup, or to repair a range. Running it again',
  'gives the same rollups. Progress (measurement, chunk, points written, rate, ETA) goes to stderr; on failure it exits 1 naming',
  'the chunk, and running the same command again (or from that chunk) finishes the job.',
  `It also makes the fleet rollups of ${FLEET_ROLLED_UP_MEASUREMENTS.join(', ')} (${FLEET_ROLLUP_WINDOWS.map((w) => fleetRollupMeasurement(MEASUREMENT.connectHist, w)).join(', ')}): the per-host rollups summed over`,
  'every host, without the host tag, which charts over a whole service read instead of one series per host. No agent',
  'can make those (each would overwrite the others\' sums): run `tcplat rollup --fleet-only --follow 2m` once per',
  'InfluxDB (the compose file and the Kubernetes manifests do) to keep them current.',
].join('\n');

export const ROLLUP_FOOTER = [
  'examples:',
  '  tcplat rollup --influx-url http://127.0.0.1:8086 --influx-db tcplat',
  '  tcplat rollup --influx-db tcplat --from now-2d --host web-1',
  '  tcplat rollup --influx-db tcplat --retention-raw 14d --retention-rollups 400d',
  '  tcplat rollup --influx-org tcplat --influx-bucket tcplat --influx-token "$TOKEN"',
  '  tcplat rollup --influx-db tcplat --fleet-only --follow 2m',
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

interface MainIo {
  stderr: NodeJS.WritableStream;
  stdout: NodeJS.WritableStream;
  now?: () => number;
  /** Ends --follow (the CLI: SIGTERM/SIGINT). */
  signal?: AbortSignal;
}

export async function main(argv: string[], io: MainIo = process): Promise<number> {
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
  // Each rolled-up measurement in turn (--fleet-only: those with fleet rollups), its progress lines named.
  const measurements = o.fleetOnly ? FLEET_ROLLED_UP_MEASUREMENTS : ROLLED_UP_MEASUREMENTS;
  for (const m of measurements) {
    const code = await rollMeasurement(m, store, o, err, now);
    if (code !== 0) return code;
  }
  return o.followMs !== undefined ? follow(store, o, io, err, now) : 0;
}

/** The whole run for one measurement: its range, its hosts, chunk by chunk with progress. 0, or 1 on failure. */
async function rollMeasurement(m: HistMeasurement, store: RollupStore, o: ReturnType<typeof parse>, err: (s: string) => void, now: () => number): Promise<number> {
  const where = describeTarget(o.target);
  const rollupWhere = store.rollup.version === 1 ? `retention policy ${store.rollup.rp}` : `bucket ${store.rollup.bucket}`;
  // What the run reads: the 10 s data, or (--fleet-only) the per-host rollups the fleet ones are summed from.
  const input = o.fleetOnly ? { t: store.rollup, m: rollupMeasurement(m, FLEET_ROLLUP_WINDOWS[0]) } : { t: o.target, m };
  const inputWhere = describeTarget(input.t);
  let from = o.fromMs;
  if (from === undefined) {
    let first: number | null;
    try {
      first = await firstPointMs(input.t, o.host, input.m);
    } catch (e) {
      err(`tcplat rollup: cannot read ${input.m} from ${inputWhere}: ${(e as Error).message}`);
      return 1;
    }
    if (first === null) {
      err(`tcplat rollup: no ${input.m} points${o.host !== undefined ? ` of host ${o.host}` : ''} in ${inputWhere}: nothing to roll up`);
      return 0;
    }
    from = first;
  }
  if (from >= o.toMs) {
    err(`tcplat rollup: ${m}: nothing to do: the range starts (${fmtTime(from)}) at or after its end (${fmtTime(o.toMs)})`);
    return 0;
  }
  const steps = chunks(from, o.toMs, o.chunkMs);
  let hosts: string[];
  try {
    hosts = o.host !== undefined ? [o.host] : await listHosts(input.t, steps[0][0], input.m);
  } catch (e) {
    err(`tcplat rollup: cannot list the hosts of ${input.m} in ${inputWhere}: ${(e as Error).message}`);
    return 1;
  }
  err(
    `tcplat rollup: ${m} in ${where}: ${fmtTime(steps[0][0])} .. ${fmtTime(steps[steps.length - 1][1])} in ${steps.length} chunk(s) of ${o.chunkMs / 3_600_000}h, ${
      o.host !== undefined ? `host ${o.host}` : `${hosts.length} host(s)`
    }, into the ${rollupWhere}`,
  );
  const t0 = now();
  const roll = chunkRoller(store, o, hosts, m);
  let points = 0;
  for (let i = 0; i < steps.length; i++) {
    const [a, b] = steps[i];
    const label = `${m} chunk ${i + 1}/${steps.length} ${fmtTime(a)} .. ${fmtTime(b)}`;
    try {
      const r = await roll(a, b);
      points += r.points;
      const elapsed = (now() - t0) / 1000;
      const rate = elapsed > 0 ? points / elapsed : 0;
      const eta = ((steps.length - i - 1) * elapsed) / (i + 1);
      err(`${label}: ${r.points} points (${r.summary}); ${points} in all, ${Math.round(rate)} points/s, ETA ${fmtSeconds(eta)}`);
    } catch (e) {
      err(`tcplat rollup: ${label}${roll.host() && hosts.length > 1 ? ` (host ${roll.host()})` : ''} failed: ${(e as Error).message}`);
      err(`tcplat rollup: chunks before it are done; run the same command again, or with --from ${new Date(a).toISOString()} to start at this chunk`);
      return 1;
    }
  }
  err(`tcplat rollup: ${m} done: ${points} points in ${steps.length} chunk(s), ${fmtSeconds((now() - t0) / 1000)}`);
  return 0;
}

interface Parsed {
  target: RollupStore['source'];
  host?: string;
  fleetOnly: boolean;
  noFleet: boolean;
  followMs?: number;
  lookbackMs: number;
}

/**
 * One chunk's work: the per-host levels host by host (unless --fleet-only), then the fleet levels (unless
 * --no-fleet), which always sum every host's rollups, so they are exact after a --host run too.
 */
function chunkRoller(store: RollupStore, o: Parsed, hosts: string[], measurement: HistMeasurement) {
  // Only the measurements of FLEET_ROLLED_UP_MEASUREMENTS have fleet rollups.
  const noFleet = o.noFleet || !FLEET_ROLLED_UP_MEASUREMENTS.includes(measurement);
  let current = '';
  const fn = async (a: number, b: number): Promise<{ points: number; summary: string }> => {
    const byLevel = new Map<string, number>();
    let points = 0;
    if (!o.fleetOnly) {
      // Host by host: each host's series are rolled up on their own, and one answer holds one host's.
      for (const host of hosts) {
        current = host;
        const r = await rollupRange({ store, measurement, fromMs: a, toMs: b, host });
        points += r.points;
        for (const l of r.levels) byLevel.set(l.window, (byLevel.get(l.window) ?? 0) + l.points);
      }
    }
    current = '';
    if (!noFleet) {
      // The fleet sums read every host's rollups: host by host when the hosts are known (less memory).
      const r = await rollupFleetRange({ store, measurement, fromMs: a, toMs: b, hosts: o.host === undefined ? hosts : undefined });
      points += r.points;
      for (const l of r.levels) byLevel.set(`fleet ${l.window}`, l.points);
    }
    const names = [...(o.fleetOnly ? [] : ROLLUP_WINDOWS.map((w) => w.name)), ...(noFleet ? [] : FLEET_ROLLUP_WINDOWS.map((w) => `fleet ${w}`))];
    return { points, summary: names.map((n) => `${n} ${byLevel.get(n) ?? 0}`).join(', ') };
  };
  return Object.assign(fn, { host: () => current });
}

/**
 * --follow: every followMs, the same work over [now - lookback, now) (whole hours), hosts listed again each
 * round (new hosts join). A failed round is logged and the next one tries again (InfluxDB restarts, a
 * network blip): the service keeps running. Stops on SIGTERM/SIGINT (or io.signal).
 */
async function follow(store: RollupStore, o: Parsed, io: MainIo, err: (s: string) => void, now: () => number): Promise<number> {
  const ac = new AbortController();
  const stop = () => ac.abort();
  const signal = io.signal ?? ac.signal;
  if (!io.signal) {
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  }
  err(`tcplat rollup: following: every ${fmtSeconds(o.followMs! / 1000)}, the last ${fmtSeconds(o.lookbackMs / 1000)}${o.fleetOnly ? ' (fleet rollups only)' : ''}`);
  try {
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, o.followMs);
        signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
      });
      if (signal.aborted) break;
      const t0 = now();
      const to = t0;
      const from = floorTo(to - o.lookbackMs, COARSEST_WINDOW_MS);
      try {
        for (const m of o.fleetOnly ? FLEET_ROLLED_UP_MEASUREMENTS : ROLLED_UP_MEASUREMENTS) {
          const hosts = o.host !== undefined ? [o.host] : o.fleetOnly ? await listHosts(store.rollup, from, rollupMeasurement(m, FLEET_ROLLUP_WINDOWS[0])) : await listHosts(o.target, from, m);
          const r = await chunkRoller(store, o, hosts, m)(from, to);
          err(`tcplat rollup: follow ${m} ${fmtTime(from)} .. now: ${r.points} points (${r.summary}) in ${((now() - t0) / 1000).toFixed(1)}s`);
        }
      } catch (e) {
        err(`tcplat rollup: follow ${fmtTime(from)} .. now failed: ${(e as Error).message}; trying again in ${fmtSeconds(o.followMs! / 1000)}`);
      }
    }
  } finally {
    process.off('SIGTERM', stop);
    process.off('SIGINT', stop);
  }
  err('tcplat rollup: stopped following');
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
  const fleetOnly = v['fleet-only'] === true;
  const noFleet = v['no-fleet'] === true;
  if (fleetOnly && noFleet) throw new ConfigError('--fleet-only and --no-fleet: nothing left to do; give one of them');
  if (v.follow !== undefined && !((v.follow as number) >= 1000)) throw new ConfigError(`--follow: at least 1s, got ${v.follow as number} ms`);
  const lookbackMs = v['follow-lookback'] as number;
  if (!(lookbackMs >= COARSEST_WINDOW_MS)) throw new ConfigError(`--follow-lookback: at least the coarsest rollup window (1h), got ${lookbackMs} ms`);
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
    fleetOnly,
    noFleet,
    followMs: v.follow === undefined ? undefined : (v.follow as number),
    lookbackMs,
  };
}
