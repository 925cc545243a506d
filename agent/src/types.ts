import type { CloseEvent, ConnectEvent, ConnectResult, Family, Histogram, TlsEvent } from '@tcplat/core';

/** A finished TCP session from tcplife: lifespan and bytes, never connect latency. */
export interface SessionEvent {
  type: 'session';
  /** When the session ended (the time the tool reports), Unix ns. */
  tsNs: bigint;
  lifespanMs: number;
  txKb: number;
  rxKb: number;
  pid: number;
  comm: string;
  family: Family;
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
}

/**
 * One `--mode hist` probe line: the exact histogram of one (cgroup, process, destination, result) over one
 * probe window. No per-attempt data (no thread, source port, timestamps of attempts).
 */
export interface HistEvent {
  type: 'hist';
  /** The probe window's start, Unix ns (its end less its length). */
  tsNs: bigint;
  /** When the probe closed the window. */
  endNs: bigint;
  pid: number;
  comm: string;
  cgroupId: string;
  family: Family;
  daddr: string;
  dport: number;
  result: ConnectResult;
  errno: number;
  synRetrans: number;
  hist: Histogram;
}

/** What parsers emit: the probe's connect events (also built from tcpstates/tcpconnlat rows), sessions, probe histograms, close and TLS events. */
export type SourceEvent = ConnectEvent | SessionEvent | HistEvent | CloseEvent | TlsEvent;

/** Labels the enricher adds. */
export interface Enrichment {
  service: string;
  dst: string;
  container?: string;
}

export type EnrichedConnect = ConnectEvent & Enrichment;
export type EnrichedSession = SessionEvent & Enrichment;
export type EnrichedHist = HistEvent & Enrichment;
/** The probe's close event of one established connection (tcp_session, tcp_session_hist). */
export type EnrichedClose = CloseEvent & Enrichment;
/** The probe's TLS handshake (tls_handshake, tls_handshake_hist); dst is TLS_DST_UNSEEN when its socket was not seen. */
export type EnrichedTls = TlsEvent & Enrichment;
export type EnrichedEvent = EnrichedConnect | EnrichedSession | EnrichedHist | EnrichedClose | EnrichedTls;

/** Minimal logger (pino-compatible subset): structured object first, message second. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };
