/**
 * Parsers for the text output of BCC (Python) and libbpf-tools `tcplife`, `tcpstates` and `tcpconnlat`.
 *
 * Columns are found by the header line, never by position: the tools differ between builds and flags
 * (BCC `-T` HH:MM:SS, `-t` relative seconds, `-w` wide with an IP column, `-s` CSV; libbpf-tools prints
 * `TIME(s)` with HH:MM:SS values and other widths). A repeated header (the tool restarted) re-reads the
 * columns. The only free-text column is COMM: when a row has more fields than the header, the extra ones
 * belong to COMM (a thread name with spaces or commas).
 *
 * What each tool becomes:
 * - tcplife: a session (lifespan, tx/rx KB), never a connect latency;
 * - tcpstates: only transitions out of SYN_SENT, i.e. active opens: `SYN_SENT -> ESTABLISHED` is a
 *   connect with result ok and latency = MS (time spent in SYN_SENT); `SYN_SENT -> CLOSE` is a failed
 *   attempt with result `error` (tcpstates does not say why). pid/comm come from the `CLOSE -> SYN_SENT`
 *   row of the same socket when seen (the later transition runs in softirq context: its pid is whoever
 *   was on the CPU);
 * - tcpconnlat: successful connects only (the tool reports nothing else), latency = LAT(ms).
 *
 * Time of a row: a relative TIME(s) column (seconds since the tool's first event) is anchored at the
 * wall-clock time the first such row arrived; an HH:MM:SS column is today's local date at that time (the
 * day before if that is in the future); without a time column, the time the row arrived. A connect's
 * timestamp is that time minus its latency (the SYN time, as the probe reports it).
 */
import type { ConnectEvent, Family } from '@tcplat/core';
import type { Clock } from '../clock';
import type { SessionEvent } from '../types';

export type TextTool = 'tcplife' | 'tcpstates' | 'tcpconnlat';

export type TextParseResult =
  | { kind: 'event'; event: ConnectEvent | SessionEvent }
  | { kind: 'header'; columns: string[] }
  /** Not an event, not an error: a preamble line or a tcpstates transition other than out of SYN_SENT. */
  | { kind: 'skip'; reason: string }
  | { kind: 'error'; reason: string; message: string };

type Col = 'time' | 'timeRel' | 'skaddr' | 'pid' | 'comm' | 'ip' | 'laddr' | 'lport' | 'raddr' | 'rport' | 'txKb' | 'rxKb' | 'ms' | 'old' | 'arrow' | 'new' | 'lat';

const COLUMN_NAMES: Record<string, Col> = {
  TIME: 'time',
  'TIME(s)': 'timeRel',
  SKADDR: 'skaddr',
  PID: 'pid',
  'C-PID': 'pid',
  COMM: 'comm',
  'C-COMM': 'comm',
  IP: 'ip',
  LADDR: 'laddr',
  SADDR: 'laddr',
  LPORT: 'lport',
  RADDR: 'raddr',
  DADDR: 'raddr',
  RPORT: 'rport',
  DPORT: 'rport',
  TX_KB: 'txKb',
  RX_KB: 'rxKb',
  MS: 'ms',
  OLDSTATE: 'old',
  '->': 'arrow',
  NEWSTATE: 'new',
  'LAT(ms)': 'lat',
};

const REQUIRED: Record<TextTool, Col[]> = {
  tcplife: ['pid', 'comm', 'laddr', 'lport', 'raddr', 'rport', 'txKb', 'rxKb', 'ms'],
  tcpstates: ['pid', 'comm', 'laddr', 'lport', 'raddr', 'rport', 'old', 'new', 'ms'],
  tcpconnlat: ['pid', 'comm', 'laddr', 'raddr', 'rport', 'lat'],
};

interface Layout {
  csv: boolean;
  cols: Col[];
  index: Partial<Record<Col, number>>;
}

const PREAMBLE = /^(Tracing|Attaching|Hit Ctrl-C|Ctrl-C|Press Ctrl-C|Warning|WARNING)\b/;
const CLOCK = /^(\d{1,2}):(\d{2}):(\d{2})$/;
const INT = /^\d+$/;
const DECIMAL = /^\d+(\.\d+)?$/;
const MS_PER_DAY = 86_400_000;

function tokenize(line: string, csv: boolean): string[] {
  return csv ? line.trim().split(',') : line.trim().split(/\s+/);
}

/** Recognise a header line: known column names only, with PID and COMM among them. */
function readHeader(line: string): { layout: Layout; tool: TextTool | null } | null {
  const csv = line.includes(',') && !/\s{2,}/.test(line.trim());
  const tokens = tokenize(line, csv);
  if (!tokens.includes('PID') && !tokens.includes('C-PID')) return null;
  const cols: Col[] = [];
  const index: Layout['index'] = {};
  for (const t of tokens) {
    const c = COLUMN_NAMES[t];
    if (c === undefined) return { layout: { csv, cols: [], index: {} }, tool: null };
    // libbpf-tools labels its HH:MM:SS column TIME(s); which kind it is shows in the values.
    index[c] = cols.length;
    cols.push(c);
  }
  const tool = (Object.keys(REQUIRED) as TextTool[]).find((t) => REQUIRED[t].every((c) => index[c] !== undefined)) ?? null;
  return { layout: { csv, cols, index }, tool };
}

function looksLikeHeader(line: string): boolean {
  // Data rows start with a number (pid, time or socket address); a header starts with a column name.
  return /^[A-Z][A-Za-z_()-]*[\s,]/.test(line.trim());
}

function normaliseAddr(addr: string): { addr: string; family: Family } | null {
  if (addr.startsWith('::ffff:') && addr.slice(7).includes('.')) return { addr: addr.slice(7), family: 'ipv4' };
  if (addr.includes(':')) return /^[0-9a-fA-F:.]+$/.test(addr) ? { addr, family: 'ipv6' } : null;
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(addr) ? { addr, family: 'ipv4' } : null;
}

export class TextParser {
  private layout: Layout | null = null;
  private headerSeen = false;
  private relAnchorNs: bigint | null = null;
  /** tcpstates: the CLOSE -> SYN_SENT row of each socket, for the connecting task's pid and comm. */
  private readonly synSent = new Map<string, { pid: number; comm: string }>();
  private static readonly SYN_SENT_MAX = 65_536;

  constructor(
    readonly tool: TextTool,
    private readonly clock: Clock,
  ) {}

  /** The header currently in use, for status output. */
  get columns(): string[] {
    return this.layout?.cols ?? [];
  }

  parse(rawLine: string): TextParseResult {
    const line = rawLine.replace(/\r$/, '');
    if (line.trim() === '') return { kind: 'skip', reason: 'empty' };
    if (looksLikeHeader(line)) {
      const h = readHeader(line);
      if (h && h.tool === this.tool) {
        this.layout = h.layout;
        this.headerSeen = true;
        this.relAnchorNs = null;
        return { kind: 'header', columns: h.layout.cols };
      }
      if (!this.headerSeen && PREAMBLE.test(line.trim())) return { kind: 'skip', reason: 'preamble' };
      this.layout = null;
      this.headerSeen = true;
      const what = h?.tool ? `the header of ${h.tool}` : 'an unknown header';
      return {
        kind: 'error',
        reason: 'unknown_format',
        message: `--source ${this.tool}: the tool printed ${what}: ${JSON.stringify(line.trim().slice(0, 200))}; expected the header line of ${this.tool} (BCC or libbpf-tools, with -T, -t, -w or -s): its rows are dropped until a known header appears`,
      };
    }
    if (!this.layout) {
      if (!this.headerSeen && PREAMBLE.test(line.trim())) return { kind: 'skip', reason: 'preamble' };
      if (!this.headerSeen) {
        this.headerSeen = true;
        return {
          kind: 'error',
          reason: 'unknown_format',
          message: `--source ${this.tool}: the first line is not a ${this.tool} header: ${JSON.stringify(line.trim().slice(0, 200))}; rows are dropped until a known header appears`,
        };
      }
      return { kind: 'error', reason: 'unknown_format', message: '' };
    }
    return this.row(line, this.layout);
  }

  private row(line: string, layout: Layout): TextParseResult {
    let tokens = tokenize(line, layout.csv);
    const want = layout.cols.length;
    const ci = layout.index.comm!;
    if (this.tool === 'tcpconnlat' && !layout.csv && layout.index.timeRel === 0 && layout.index.pid === 1 && /^\d+\.\d{3}\d+$/.test(tokens[0])) {
      // BCC tcpconnlat -t prints "%-9.3f" with no separator: from 10000 s on, time and pid touch. Three
      // decimals are all it prints, so more digits are the pid's (whatever else the row holds: a COMM
      // with spaces then makes up the column the join took away).
      const m = /^(\d+\.\d{3})(\d+)$/.exec(tokens[0])!;
      tokens = [m[1], m[2], ...tokens.slice(1)];
    }
    if (tokens.length > want) {
      const extra = tokens.length - want;
      tokens = [...tokens.slice(0, ci), tokens.slice(ci, ci + extra + 1).join(layout.csv ? ',' : ' '), ...tokens.slice(ci + extra + 1)];
    }
    if (tokens.length !== want) return this.bad(`expected ${want} columns, got ${tokens.length}`, line);
    const get = (c: Col): string | undefined => {
      const i = layout.index[c];
      return i === undefined ? undefined : tokens[i];
    };
    const int = (c: Col, max: number): number | null => {
      const v = get(c);
      if (v === undefined) return 0;
      if (!INT.test(v)) return null;
      const n = Number(v);
      return n <= max ? n : null;
    };
    const pid = int('pid', 4294967295);
    const lport = int('lport', 65535);
    const rport = int('rport', 65535);
    if (pid === null) return this.bad(`PID is not a number: ${JSON.stringify(get('pid'))}`, line);
    if (lport === null || rport === null) return this.bad('port is not a number within 0..65535', line);
    const l = normaliseAddr(get('laddr') ?? '');
    const r = normaliseAddr(get('raddr') ?? '');
    if (!l || !r) return this.bad(`not an IP address: ${JSON.stringify(l ? get('raddr') : get('laddr'))}`, line);
    const ip = get('ip');
    const family: Family = ip === '6' && l.family === 'ipv6' ? 'ipv6' : r.family;
    const comm = get('comm') ?? '';
    const endNs = this.rowTime(get('time'), get('timeRel'));
    if (endNs === null) return this.bad(`unreadable time ${JSON.stringify(get('timeRel') ?? get('time'))}`, line);

    if (this.tool === 'tcplife') {
      const nums = (['txKb', 'rxKb', 'ms'] as const).map((c) => get(c) ?? '');
      if (!nums.every((v) => DECIMAL.test(v))) return this.bad('TX_KB, RX_KB and MS must be numbers', line);
      const ev: SessionEvent = {
        type: 'session',
        tsNs: endNs,
        lifespanMs: Number(nums[2]),
        txKb: Number(nums[0]),
        rxKb: Number(nums[1]),
        pid,
        comm,
        family,
        saddr: l.addr,
        sport: lport,
        daddr: r.addr,
        dport: rport,
      };
      return { kind: 'event', event: ev };
    }

    let latencyMs: number;
    let result: ConnectEvent['result'] = 'ok';
    let taskPid = pid;
    let taskComm = comm;
    if (this.tool === 'tcpstates') {
      const oldState = get('old') ?? '';
      const newState = get('new') ?? '';
      const sk = get('skaddr') ?? `${l.addr}|${r.addr}|${rport}`;
      if (oldState === 'CLOSE' && newState === 'SYN_SENT') {
        if (this.synSent.size >= TextParser.SYN_SENT_MAX) this.synSent.delete(this.synSent.keys().next().value as string);
        this.synSent.set(sk, { pid, comm });
        return { kind: 'skip', reason: 'syn_sent' };
      }
      if (oldState !== 'SYN_SENT') return { kind: 'skip', reason: 'other_state' };
      if (newState !== 'ESTABLISHED' && newState !== 'CLOSE') return { kind: 'skip', reason: 'other_state' };
      const task = this.synSent.get(sk);
      // No CLOSE -> SYN_SENT row for this socket: the tool started mid-handshake (or the row was lost).
      // Its MS would be the time since the tool started tracing it, and its PID/COMM whoever was on the
      // CPU in softirq (swapper/N): not a connect we can report. Skipped and counted.
      if (!task) return { kind: 'skip', reason: 'ghost_row' };
      this.synSent.delete(sk);
      taskPid = task.pid;
      taskComm = task.comm;
      result = newState === 'ESTABLISHED' ? 'ok' : 'error';
      const ms = get('ms') ?? '';
      if (!DECIMAL.test(ms)) return this.bad(`MS is not a number: ${JSON.stringify(ms)}`, line);
      latencyMs = Number(ms);
    } else {
      const lat = get('lat') ?? '';
      if (!DECIMAL.test(lat)) return this.bad(`LAT(ms) is not a number: ${JSON.stringify(lat)}`, line);
      latencyMs = Number(lat);
    }
    const latencyNs = Math.round(latencyMs * 1e6);
    const ev: ConnectEvent = {
      type: 'connect',
      tsNs: endNs - BigInt(latencyNs),
      latencyNs,
      result,
      errno: 0,
      synRetrans: 0,
      pid: taskPid,
      tid: taskPid,
      comm: taskComm,
      cgroupId: '0',
      family,
      saddr: l.addr,
      sport: lport,
      daddr: r.addr,
      dport: rport,
    };
    return { kind: 'event', event: ev };
  }

  private bad(why: string, line: string): TextParseResult {
    return { kind: 'error', reason: 'row', message: `${this.tool} row: ${why}: ${JSON.stringify(line.slice(0, 200))}` };
  }

  private rowTime(time: string | undefined, timeRel: string | undefined): bigint | null {
    const now = this.clock();
    let clockValue: string | undefined;
    let relValue: string | undefined;
    for (const v of [time, timeRel]) {
      if (v === undefined) continue;
      if (CLOCK.test(v)) clockValue = v;
      else if (DECIMAL.test(v)) relValue = v;
      else return null;
    }
    if (relValue !== undefined) {
      const relNs = BigInt(Math.round(Number(relValue) * 1e9));
      if (this.relAnchorNs === null) this.relAnchorNs = (clockValue ? this.clockTime(clockValue, now) : now) - relNs;
      return this.relAnchorNs + relNs;
    }
    if (clockValue !== undefined) return this.clockTime(clockValue, now);
    return now;
  }

  /** HH:MM:SS (local time, as strftime prints it) on today's date, or yesterday's if that is in the future. */
  private clockTime(v: string, nowNs: bigint): bigint {
    const m = CLOCK.exec(v)!;
    const nowMs = Number(nowNs / 1_000_000n);
    const d = new Date(nowMs);
    let t = new Date(d.getFullYear(), d.getMonth(), d.getDate(), Number(m[1]), Number(m[2]), Number(m[3])).getTime();
    if (t > nowMs + 5 * 60_000) t -= MS_PER_DAY;
    return BigInt(t) * 1_000_000n;
  }
}
