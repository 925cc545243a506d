import type { ConnectEvent, Family } from '@tcplat/core';

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

/** What parsers emit: the probe's connect events (also built from tcpstates/tcpconnlat rows) and sessions. */
export type SourceEvent = ConnectEvent | SessionEvent;

/** Labels the enricher adds. */
export interface Enrichment {
  service: string;
  dst: string;
  container?: string;
}

export type EnrichedConnect = ConnectEvent & Enrichment;
export type EnrichedSession = SessionEvent & Enrichment;
export type EnrichedEvent = EnrichedConnect | EnrichedSession;

/** Minimal logger (pino-compatible subset): structured object first, message second. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };
