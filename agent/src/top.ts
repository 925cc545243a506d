/**
 * `tcplat top`: a live terminal view of connect latency from the agent's /api/stream (per-second summaries).
 * One row per service -> destination: connects/s, p50, p99, max, SYN retransmits and failures by result,
 * and the TLS handshakes of the same service -> destination (handshakes/s, TLS p50/p99, failed handshakes;
 * the summaries' `tls` rows), over a sliding window (default 10 s), refreshed every second. Below it, when the agent runs with
 * --probe-close, the churn group (issue 15): new connections/s, mean open connections, lifespan p50/p99 and
 * the share that lived under a second, per service -> destination.
 *
 * Plain ANSI, no full-screen library: on a terminal it redraws in place and keys change the sort order;
 * in a pipe or over a dumb SSH session it prints one table per refresh; `--once` prints one table and exits.
 */
import { BUCKET_COUNT, formatHelp, Histogram, lifespanQuantile, loadConfig, meanOpenConnections, newConnectionsPerS, SESSION_BUCKET_COUNT, shortLivedShare, type OptionSpec } from '@tcplat/core';

export const TOP_OPTIONS: readonly OptionSpec[] = [
  { name: 'agent', type: 'string', arg: 'URL', default: 'http://127.0.0.1:7070', help: "the agent's HTTP API" },
  { name: 'api-token', type: 'string', arg: 'TOKEN', secret: true, help: "the agent's bearer token (when it listens beyond loopback)" },
  { name: 'window', type: 'duration', default: '10s', help: 'rates and percentiles cover this sliding window' },
  { name: 'interval', type: 'duration', default: '1s', help: 'refresh period; with --once, how long to listen before printing (at least 2.5 s)' },
  { name: 'sort', type: 'enum', values: ['rate', 'p50', 'p99', 'max', 'fail', 'retrans', 'tls', 'name'], default: 'rate', help: 'sort rows by this column (descending; tls: TLS handshake p99; name: ascending)' },
  { name: 'limit', type: 'int', min: 1, max: 10000, default: 40, help: 'most rows shown' },
  { name: 'once', type: 'bool', default: false, help: 'print one table after --interval and exit (for scripts and pipes)' },
];

/** One per-second summary row from the agent (see agent/src/stream.ts). */
export interface SummaryRow {
  service: string;
  dst: string;
  result: string;
  count: number;
  sum_ms?: number;
  min_ms?: number;
  max_ms: number;
  syn_retrans?: number;
  /** Sparse bucket counts: bucket index -> count. */
  buckets?: Record<string, number>;
}

/** Connections of one service -> destination that closed in one second (agent/src/stream.ts, --probe-close). */
export interface SessionSummaryRow {
  service: string;
  dst: string;
  count: number;
  sum_ms: number;
  min_ms: number;
  max_ms: number;
  retrans?: number;
  resets?: number;
  /** Sparse lifespan bucket counts: index in SESSION_BUCKET_BOUNDS_MS order -> count. */
  buckets: Record<string, number>;
}

export interface Summary {
  ts_ms: number;
  series: SummaryRow[];
  /** Absent from agents without close events support; [] when no connection closed in the second. */
  sessions?: SessionSummaryRow[];
  /** TLS handshakes per service, destination and result (ok, failed); absent from agents before issue 16. */
  tls?: SummaryRow[];
}

/** The TLS column group of a row: handshakes of the same service -> destination over the window. */
export interface TlsColumns {
  /** Handshakes per second (ok and failed). */
  rate: number;
  /** Of successful handshakes (of the failed ones when none succeeded), ms. */
  p50: number;
  p99: number;
  /** Failed handshakes in the window. */
  fail: number;
}

/**
 * The churn columns of one service -> destination over the window. New connections/s is the `ok` connects
 * (the contract of issue 15); the lifespan columns describe the connections that CLOSED in the window; mean
 * open is Little's law over them (sum of lifespans / window): the mean, exact when the window is long
 * against the lifespans.
 */
export interface ChurnRow {
  service: string;
  dst: string;
  newPerS: number;
  closedPerS: number;
  meanOpen: number;
  lifeP50: number;
  lifeP99: number;
  /** Share (0..1) of the closed connections that lived under a second; NaN when none closed. */
  underOneS: number;
  resets: number;
}



export interface TopRow {
  service: string;
  dst: string;
  rate: number;
  p50: number;
  p99: number;
  max: number;
  retrans: number;
  failures: Record<string, number>;
  fail: number;
  /** TLS handshakes of this service -> destination in the window; absent when there were none. */
  tls?: TlsColumns;
}

/** The histogram a summary row carries (sparse buckets, count, sum, min, max). */
function rowHistogram(r: SummaryRow): Histogram {
  const h = new Histogram();
  if (r.buckets) {
    for (const [i, n] of Object.entries(r.buckets)) {
      const idx = Number(i);
      if (idx >= 0 && idx < BUCKET_COUNT) h.buckets[idx] += n;
    }
    h.count = r.count;
    h.sumMs = r.sum_ms ?? 0;
    h.minMs = r.min_ms ?? Infinity;
    h.maxMs = r.max_ms;
  }
  return h;
}

/** TLS columns per `service\u0000dst` from the summaries' `tls` rows, rates over `span` seconds. */
export function tlsColumns(frames: readonly (readonly SummaryRow[])[], span: number): Map<string, TlsColumns> {
  const byKey = new Map<string, { ok: Histogram; failed: Histogram }>();
  for (const rows of frames) {
    for (const r of rows) {
      const key = `${r.service}\u0000${r.dst}`;
      let a = byKey.get(key);
      if (!a) byKey.set(key, (a = { ok: new Histogram(), failed: new Histogram() }));
      (r.result === 'ok' ? a.ok : a.failed).merge(rowHistogram(r));
    }
  }
  const out = new Map<string, TlsColumns>();
  for (const [key, a] of byKey) {
    const h = a.ok.count > 0 ? a.ok : a.failed;
    out.set(key, { rate: (a.ok.count + a.failed.count) / span, p50: h.quantile(0.5), p99: h.quantile(0.99), fail: a.failed.count });
  }
  return out;
}

/** Aggregates summaries over a sliding window into rows per service -> destination. */
export class TopModel {
  private frames: { ts: number; rows: SummaryRow[]; tls: SummaryRow[]; sessions: SessionSummaryRow[] }[] = [];
  /** Whether the agent has sent any closed connection since top started (else the churn group is a hint). */
  sawSessions = false;

  constructor(private readonly windowMs: number) {}

  add(s: Summary): void {
    const sessions = Array.isArray(s.sessions) ? s.sessions : [];
    if (sessions.length > 0) this.sawSessions = true;
    this.frames.push({ ts: s.ts_ms, rows: s.series, tls: s.tls ?? [], sessions });
    const cut = s.ts_ms - this.windowMs;
    while (this.frames.length > 0 && this.frames[0].ts <= cut) this.frames.shift();
  }

  /** Seconds the rates divide by: the window, or less while it is still filling. */
  private span(): number {
    return Math.max(1, Math.min(this.windowMs / 1000, this.frames.length));
  }

  rows(): TopRow[] {
    const byKey = new Map<string, { service: string; dst: string; ok: Histogram; all: Histogram; retrans: number; failures: Record<string, number> }>();
    for (const f of this.frames) {
      for (const r of f.rows) {
        const key = `${r.service}\u0000${r.dst}`;
        let a = byKey.get(key);
        if (!a) {
          a = { service: r.service, dst: r.dst, ok: new Histogram(), all: new Histogram(), retrans: 0, failures: {} };
          byKey.set(key, a);
        }
        const h = rowHistogram(r);
        if (r.result === 'ok') a.ok.merge(h);
        else a.failures[r.result] = (a.failures[r.result] ?? 0) + r.count;
        a.all.merge(h);
        a.retrans += r.syn_retrans ?? 0;
      }
    }
    const span = this.span();
    const tls = tlsColumns(
      this.frames.map((f) => f.tls),
      span,
    );
    // A destination with handshakes and no connect in the window (the connect fell just before it) still shows.
    for (const key of tls.keys()) {
      if (byKey.has(key)) continue;
      const [service, dst] = key.split('\u0000');
      byKey.set(key, { service, dst, ok: new Histogram(), all: new Histogram(), retrans: 0, failures: {} });
    }
    return [...byKey.values()].map((a) => {
      // Latency columns describe successful handshakes; when there are none, the failures' own times.
      const h = a.ok.count > 0 ? a.ok : a.all;
      const fail = Object.values(a.failures).reduce((x, y) => x + y, 0);
      return {
        service: a.service,
        dst: a.dst,
        rate: (a.ok.count + fail) / span,
        p50: h.quantile(0.5),
        p99: h.quantile(0.99),
        max: h.count > 0 ? h.maxMs : NaN,
        retrans: a.retrans,
        failures: a.failures,
        fail,
        tls: tls.get(`${a.service}\u0000${a.dst}`),
      };
    });
  }

  /** The churn group: one row per service -> destination that opened or closed connections in the window. */
  churnRows(): ChurnRow[] {
    interface Acc {
      service: string;
      dst: string;
      opened: number;
      closed: number;
      sumMs: number;
      minMs: number;
      maxMs: number;
      buckets: number[];
      resets: number;
    }
    const byKey = new Map<string, Acc>();
    const acc = (service: string, dst: string): Acc => {
      const key = `${service}\u0000${dst}`;
      let a = byKey.get(key);
      if (!a) byKey.set(key, (a = { service, dst, opened: 0, closed: 0, sumMs: 0, minMs: Infinity, maxMs: -Infinity, buckets: new Array<number>(SESSION_BUCKET_COUNT).fill(0), resets: 0 }));
      return a;
    };
    for (const f of this.frames) {
      for (const r of f.rows) if (r.result === 'ok') acc(r.service, r.dst).opened += r.count;
      for (const s of f.sessions) {
        const a = acc(s.service, s.dst);
        a.closed += s.count;
        a.sumMs += s.sum_ms;
        a.minMs = Math.min(a.minMs, s.min_ms);
        a.maxMs = Math.max(a.maxMs, s.max_ms);
        a.resets += s.resets ?? 0;
        for (const [i, n] of Object.entries(s.buckets ?? {})) {
          const idx = Number(i);
          if (idx >= 0 && idx < SESSION_BUCKET_COUNT) a.buckets[idx] += n;
        }
      }
    }
    const span = this.span();
    // The formulas of pkg/core churn.ts, shared with the datasource and the renderer.
    return [...byKey.values()].map((a) => ({
      service: a.service,
      dst: a.dst,
      newPerS: newConnectionsPerS(a.opened, span),
      closedPerS: a.closed / span,
      meanOpen: meanOpenConnections(a.sumMs, span),
      lifeP50: lifespanQuantile(a.buckets, 0.5, a.minMs, a.maxMs),
      lifeP99: lifespanQuantile(a.buckets, 0.99, a.minMs, a.maxMs),
      underOneS: shortLivedShare(a.buckets, a.closed),
      resets: a.resets,
    }));
  }
}

export function sortRows(rows: TopRow[], by: string): TopRow[] {
  const key: Record<string, (r: TopRow) => number> = {
    rate: (r) => r.rate,
    p50: (r) => r.p50,
    p99: (r) => r.p99,
    max: (r) => r.max,
    fail: (r) => r.fail,
    retrans: (r) => r.retrans,
    tls: (r) => r.tls?.p99 ?? NaN,
  };
  if (by === 'name') return [...rows].sort((a, b) => a.service.localeCompare(b.service) || a.dst.localeCompare(b.dst));
  const k = key[by] ?? key.rate;
  const v = (r: TopRow) => (Number.isFinite(k(r)) ? k(r) : -1);
  return [...rows].sort((a, b) => v(b) - v(a) || a.service.localeCompare(b.service) || a.dst.localeCompare(b.dst));
}

function ms(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 1000) return `${(x / 1000).toFixed(2)}s`;
  if (x >= 10) return `${x.toFixed(0)}ms`;
  if (x >= 1) return `${x.toFixed(1)}ms`;
  return `${(x * 1000).toFixed(0)}us`;
}

function clip(s: string, n: number): string {
  // Service and destination names come from the monitored host: keep control characters off the terminal.
  // eslint-disable-next-line no-control-regex
  const clean = s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  return clean.length > n ? clean.slice(0, n - 1) + '~' : clean;
}

/**
 * One line when the agent's cardinality budget folds series (from /api/status `series`), else null: the
 * table shows every destination (it reads events before the budget), InfluxDB gets `other` for some.
 */
export function budgetWarning(status: unknown): string | null {
  const ms = (status as { series?: { measurements?: Record<string, { budget: number; live: number; folded_points?: Record<string, number>; top?: Record<string, { value: string; series: number }[]> }> } })?.series?.measurements;
  if (!ms) return null;
  const parts: string[] = [];
  let culprit: { k: string; value: string; series: number } | null = null;
  for (const [m, st] of Object.entries(ms)) {
    const folded = Object.values(st.folded_points ?? {}).reduce((a, b) => a + b, 0);
    if (folded === 0 || st.live < st.budget) continue;
    parts.push(`${m} ${st.live}/${st.budget} (${folded.toLocaleString('en')} points folded)`);
    for (const [k, vs] of Object.entries(st.top ?? {})) if (vs[0] && vs[0].series > (culprit?.series ?? 1)) culprit = { k, ...vs[0] };
  }
  if (parts.length === 0) return null;
  return `! series budget full, new series written as 'other': ${parts.join(', ')}${culprit ? `; top ${culprit.k}=${clip(culprit.value, 40)} (${culprit.series} series)` : ''}; see /api/status`;
}

/** The TLS column group (header when `r` is null): handshakes/s, TLS p50, p99, failed handshakes; '-' without any. */
function tlsGroup(r: TopRow | null): string {
  const c = r === null ? ['TLS/S', 'TLS-P50', 'TLS-P99', 'TLS-FAIL'] : r.tls ? [r.tls.rate.toFixed(1), ms(r.tls.p50), ms(r.tls.p99), String(r.tls.fail)] : ['-', '-', '-', '-'];
  return `  ${c[0].padStart(7)}  ${c[1].padStart(7)}  ${c[2].padStart(7)}  ${c[3].padStart(8)}`;
}

/** The table as plain text lines (no escapes). */
function life(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 3_600_000) return `${(x / 3_600_000).toFixed(1)}h`;
  if (x >= 60_000) return `${(x / 60_000).toFixed(1)}m`;
  return ms(x);
}

/** Where the agent sends no close events (run without --probe-close): what the churn group would show and how to get it. */
export const CHURN_HINT = 'churn: no closed connections from the agent yet; run it with --probe-close for new conns/s, mean open connections, lifespan p50/p99 and the share under 1 s';

/** The churn column group (issue 15), below the connect table: plain text lines. */
export function renderChurn(rows: ChurnRow[], opts: { limit: number; windowS: number; saw: boolean }): string[] {
  if (!opts.saw) return [CHURN_HINT];
  const lines = [`churn over ${opts.windowS}s: new = ok connects/s; lifespans of the connections that closed; open = mean open (Little's law over those)`];
  const wS = Math.min(28, Math.max(7, ...rows.map((r) => r.service.length)));
  const wD = Math.min(36, Math.max(11, ...rows.map((r) => r.dst.length)));
  const fmt = (c: string[]) => `${c[0].padEnd(wS)}  ${c[1].padEnd(wD)}  ${c[2].padStart(8)}  ${c[3].padStart(8)}  ${c[4].padStart(8)}  ${c[5].padStart(9)}  ${c[6].padStart(9)}  ${c[7].padStart(5)}  ${c[8].padStart(6)}`;
  lines.push(fmt(['SERVICE', 'DESTINATION', 'NEW/S', 'CLOSED/S', 'OPEN~', 'LIFE-P50', 'LIFE-P99', '<1S', 'RESETS']));
  const sorted = [...rows].sort((a, b) => b.newPerS - a.newPerS || b.closedPerS - a.closedPerS || a.service.localeCompare(b.service) || a.dst.localeCompare(b.dst));
  for (const r of sorted.slice(0, opts.limit)) {
    const share = Number.isFinite(r.underOneS) ? `${Math.round(r.underOneS * 100)}%` : '-';
    lines.push(fmt([clip(r.service, wS), clip(r.dst, wD), r.newPerS.toFixed(1), r.closedPerS.toFixed(1), r.meanOpen.toFixed(1), life(r.lifeP50), life(r.lifeP99), share, String(r.resets)]));
  }
  if (rows.length === 0) lines.push('(no connections opened or closed in the window yet)');
  return lines;
}

export function renderTable(rows: TopRow[], opts: { sort: string; limit: number; windowS: number; agent: string; status?: string; warning?: string | null; churn?: { rows: ChurnRow[]; saw: boolean } }): string[] {
  const cols = ['SERVICE', 'DESTINATION', 'CONN/S', 'P50', 'P99', 'MAX', 'SYN-RETX', 'FAILURES'];
  const lines: string[] = [];
  const total = rows.reduce((a, r) => a + r.rate, 0);
  const handshakes = rows.reduce((a, r) => a + (r.tls?.rate ?? 0), 0);
  lines.push(
    `tcplat top  ${opts.agent}  window ${opts.windowS}s  sort ${opts.sort}  ${rows.length} series  ${total.toFixed(1)} connects/s  ${handshakes.toFixed(1)} TLS handshakes/s${opts.status ? '  ' + opts.status : ''}`,
  );
  if (opts.warning) lines.push(opts.warning);
  // Columns as wide as their longest name, within bounds.
  const wS = Math.min(28, Math.max(7, ...rows.map((r) => r.service.length)));
  const wD = Math.min(36, Math.max(11, ...rows.map((r) => r.dst.length)));
  // Column groups (TLS) go between the connect columns and the free-width failures.
  const fmt = (c: string[], groups: string) =>
    `${c[0].padEnd(wS)}  ${c[1].padEnd(wD)}  ${c[2].padStart(8)}  ${c[3].padStart(7)}  ${c[4].padStart(7)}  ${c[5].padStart(7)}  ${c[6].padStart(8)}${groups}  ${c[7]}`;
  lines.push(fmt(cols, tlsGroup(null)));
  for (const r of sortRows(rows, opts.sort).slice(0, opts.limit)) {
    const failures = Object.entries(r.failures)
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}:${n}`)
      .join(' ');
    lines.push(fmt([clip(r.service, wS), clip(r.dst, wD), r.rate.toFixed(1), ms(r.p50), ms(r.p99), ms(r.max), String(r.retrans), failures || '-'], tlsGroup(r)));
  }
  if (rows.length === 0) lines.push('(no connects in the window yet)');
  if (opts.churn) lines.push('', ...renderChurn(opts.churn.rows, { limit: opts.limit, windowS: opts.windowS, saw: opts.churn.saw }));
  return lines;
}

/** Read server-sent events from the agent; calls onSummary for each summary frame. */
async function stream(url: string, token: string | undefined, signal: AbortSignal, onSummary: (s: Summary) => void): Promise<void> {
  const res = await fetch(`${url.replace(/\/+$/, '')}/api/stream?events=false`, {
    headers: { Accept: 'text/event-stream', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    signal,
  });
  if (res.status === 401 || res.status === 403) throw new Error(`the agent at ${url} refused the request (HTTP ${res.status}): give its token with --api-token-file FILE or TCPLAT_API_TOKEN`);
  if (!res.ok || !res.body) throw new Error(`the agent at ${url} answered HTTP ${res.status} on /api/stream`);
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (event === 'summary' && data) {
        try {
          onSummary(JSON.parse(data) as Summary);
        } catch {
          /* a torn frame: the next one comes in a second */
        }
      }
    }
  }
  throw new Error(`the agent at ${url} closed the stream`);
}

export async function main(argv: string[]): Promise<number> {
  let cfg;
  try {
    cfg = loadConfig(TOP_OPTIONS, argv);
  } catch (e) {
    process.stderr.write(`tcplat top: ${(e as Error).message}\n`);
    return 2;
  }
  if (cfg.help) {
    process.stdout.write(
      formatHelp(
        'top',
        "Live view of TCP connect latency from a running agent (its /api/stream): one row per service -> destination\nwith connects/s, p50, p99, max, SYN retransmits and failures by result, and the TLS handshakes of the same\nservice -> destination (TLS/S, TLS-P50, TLS-P99 of successful handshakes, TLS-FAIL: failed handshakes; '-' when none).\nBelow it, the churn group when the agent runs with --probe-close: new (ok) connects/s, closed/s, mean open\nconnections, lifespan p50/p99 of the connections that closed, their share under 1 s, and resets; without close\nevents, a hint says so.",
        TOP_OPTIONS,
        'Keys on a terminal: r rate, 5 p50, 9 p99, m max, f failures, s SYN retransmits, t TLS p99, n name, q quit.',
      ),
    );
    return 0;
  }
  const v = cfg.values as { agent: string; 'api-token'?: string; window: number; interval: number; sort: string; limit: number; once: boolean };
  const model = new TopModel(v.window);
  let sort = v.sort;
  let status = 'connecting';
  const ac = new AbortController();
  const tty = Boolean(process.stdout.isTTY) && !v.once;

  const draw = () => {
    const lines = renderTable(model.rows(), { sort, limit: v.limit, windowS: v.window / 1000, agent: v.agent, status: status === 'ok' ? '' : status, warning, churn: { rows: model.churnRows(), saw: model.sawSessions } });
    if (tty) process.stdout.write('\x1b[H\x1b[2J' + lines.join('\n') + '\n');
    else process.stdout.write(lines.join('\n') + '\n\n');
  };

  // The cardinality budget's state, every 5 s (a warning line when it folds series).
  let warning: string | null = null;
  const pollBudget = async () => {
    try {
      const res = await fetch(`${v.agent.replace(/\/+$/, '')}/api/status`, { headers: v['api-token'] ? { Authorization: `Bearer ${v['api-token']}` } : {}, signal: ac.signal });
      if (res.ok) warning = budgetWarning(await res.json());
    } catch {
      /* the stream reports an unreachable agent */
    }
  };
  void pollBudget();
  const budgetTimer = setInterval(() => void pollBudget(), 5000);
  budgetTimer.unref();
  ac.signal.addEventListener('abort', () => clearInterval(budgetTimer));

  let failure: Error | null = null;
  const reading = stream(v.agent, v['api-token'], ac.signal, (s) => {
    status = 'ok';
    model.add(s);
  }).catch((e: Error) => {
    if (!ac.signal.aborted) failure = e;
  });

  if (v.once) {
    // Summaries come once a second: listen long enough for at least two.
    await Promise.race([new Promise((r) => setTimeout(r, Math.max(v.interval, 2500))), reading]);
    ac.abort();
    if (failure) {
      process.stderr.write(`tcplat top: ${(failure as Error).message}\n`);
      return 1;
    }
    draw();
    return 0;
  }

  return await new Promise<number>((resolve) => {
    const stop = (code: number) => {
      clearInterval(timer);
      ac.abort();
      if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
      process.stdin.pause();
      resolve(code);
    };
    const timer = setInterval(() => {
      if (failure) {
        process.stderr.write(`tcplat top: ${failure.message}\n`);
        stop(1);
        return;
      }
      draw();
    }, v.interval);
    process.once('SIGINT', () => stop(0));
    process.once('SIGTERM', () => stop(0));
    if (tty && process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      const keys: Record<string, string> = { r: 'rate', '5': 'p50', '9': 'p99', m: 'max', f: 'fail', s: 'retrans', t: 'tls', n: 'name' };
      process.stdin.on('data', (d) => {
        const k = d.toString();
        if (k === 'q' || k === '\u0003') stop(0);
        else if (keys[k]) {
          sort = keys[k];
          draw();
        }
      });
    }
  });
}
