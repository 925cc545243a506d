/**
 * Durable spool: every batch of line protocol is on disk before it counts as accepted, and stays there
 * until InfluxDB has taken it.
 *
 * Layout of the spool directory:
 *   seg-<16 digits>.spool   append-only segments, written by one agent run each (a restart starts a new one)
 *   ack                     "<segment> <offset>": everything before it was written (advisory: if it is lost
 *                           or stale, those batches are sent again, which is harmless because every point
 *                           has a fixed timestamp and InfluxDB overwrites identical points)
 *   run-id                  a counter, +1 per agent start (see the aggregator)
 *   dead-letter.lp          batches InfluxDB refused (4xx), with its message, for a human to look at
 *
 * Record: a 24-byte header (magic "TLS1", payload length, line count, CRC-32 of the payload, creation
 * time in ms as a float64, all little-endian) and the payload: the batch's line protocol, gzip-compressed
 * (the writer sends it as is). On start every segment is read back and checked; a torn or corrupt record
 * (bad magic, short, CRC mismatch) ends that segment's replay and is counted and logged.
 *
 * fsync policy: fdatasync after every appended batch (a batch is one flush interval or 5,000 lines), and
 * the directory is fsynced when a segment is created or deleted. So an accepted batch survives a crash of
 * the agent or of the machine.
 *
 * Size cap: when the segments would exceed `maxBytes`, the oldest segment is deleted, whether sent or not;
 * the records, lines and bytes dropped that way are counted and logged.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import type { Logger } from '../types';
import { crc32 } from './crc32';

export const HEADER_BYTES = 24;
const MAGIC = 0x31534c54; // "TLS1" little-endian

export interface SpoolRecord {
  segment: number;
  offset: number;
  length: number;
  lines: number;
  createdMs: number;
  /** Kept in memory while small enough, else read back from disk. */
  payload?: Buffer;
}

interface Segment {
  seq: number;
  file: string;
  bytes: number;
  /** Records not yet acknowledged. */
  pending: number;
}

export interface SpoolOptions {
  maxBytes: number;
  /** Default: maxBytes / 16, between 1 MiB and 64 MiB. */
  segmentBytes?: number;
  /** Payloads kept in memory (bytes) so the writer need not read them back. */
  memoryBytes?: number;
  /** gzip level for payloads (1 = fastest). */
  gzipLevel?: number;
  log: Logger;
}

export interface SpoolStats {
  records: number;
  lines: number;
  bytes: number;
  segments: number;
  appendedRecords: number;
  appendedLines: number;
  appendedBytes: number;
  replayedRecords: number;
  replayedLines: number;
  droppedRecords: number;
  droppedLines: number;
  droppedBytes: number;
  corruptRecords: number;
  oldestMs: number | null;
}

const SEG_RE = /^seg-(\d{16})\.spool$/;

function segName(seq: number): string {
  return `seg-${String(seq).padStart(16, '0')}.spool`;
}

function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* some filesystems refuse directory fsync; the data files are still synced */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export class Spool {
  private readonly queue: SpoolRecord[] = [];
  private head = 0;
  private readonly segments = new Map<number, Segment>();
  private active: Segment | null = null;
  private activeFd: number | null = null;
  private readonly segmentBytes: number;
  private readonly memoryBytes: number;
  private memoryUsed = 0;
  private pendingLines = 0;
  private totalBytes = 0;
  private nextSeq = 1;
  readonly runId: number;
  readonly stats = {
    appendedRecords: 0,
    appendedLines: 0,
    appendedBytes: 0,
    replayedRecords: 0,
    replayedLines: 0,
    droppedRecords: 0,
    droppedLines: 0,
    droppedBytes: 0,
    corruptRecords: 0,
    fsyncs: 0,
    fsyncMsTotal: 0,
  };

  constructor(
    readonly dir: string,
    private readonly opts: SpoolOptions,
  ) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (e) {
      throw new Error(`--spool-dir ${dir}: cannot create or write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a writable directory`);
    }
    this.segmentBytes = opts.segmentBytes ?? Math.min(64 << 20, Math.max(1 << 20, Math.floor(opts.maxBytes / 16)));
    this.memoryBytes = opts.memoryBytes ?? 8 << 20;
    this.runId = this.bumpRunId();
    this.replay();
  }

  private bumpRunId(): number {
    const f = path.join(this.dir, 'run-id');
    let prev = 0;
    try {
      const n = Number(fs.readFileSync(f, 'utf8').trim());
      if (Number.isSafeInteger(n) && n >= 0) prev = n;
    } catch {
      /* first start */
    }
    const next = prev + 1;
    const tmp = f + '.tmp';
    const fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, `${next}\n`);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, f);
    fsyncDir(this.dir);
    return next;
  }

  private readAck(): { segment: number; offset: number } {
    try {
      const [s, o] = fs.readFileSync(path.join(this.dir, 'ack'), 'utf8').trim().split(/\s+/).map(Number);
      if (Number.isSafeInteger(s) && Number.isSafeInteger(o)) return { segment: s, offset: o };
    } catch {
      /* none yet */
    }
    return { segment: 0, offset: 0 };
  }

  /** Read back every segment left by earlier runs, in order, checking each record. */
  private replay(): void {
    const ack = this.readAck();
    const seqs = fs
      .readdirSync(this.dir)
      .map((f) => SEG_RE.exec(f))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    for (const seq of seqs) {
      const file = path.join(this.dir, segName(seq));
      const buf = fs.readFileSync(file);
      const seg: Segment = { seq, file, bytes: buf.length, pending: 0 };
      let off = 0;
      while (off < buf.length) {
        const why = this.checkRecord(buf, off, seq);
        if (typeof why === 'string') {
          this.stats.corruptRecords++;
          this.opts.log.error({ segment: file, offset: off, reason: why }, `spool: corrupt record in ${file} at byte ${off} (${why}); the rest of this segment is skipped`);
          break;
        }
        const rec = why;
        const acked = seq < ack.segment || (seq === ack.segment && off < ack.offset);
        if (!acked) {
          this.queue.push(rec);
          seg.pending++;
          this.pendingLines += rec.lines;
          this.stats.replayedRecords++;
          this.stats.replayedLines += rec.lines;
        }
        off += HEADER_BYTES + rec.length;
      }
      this.nextSeq = seq + 1;
      if (seg.pending === 0) {
        fs.rmSync(file, { force: true });
        continue;
      }
      this.segments.set(seq, seg);
      this.totalBytes += seg.bytes;
    }
    if (this.stats.replayedRecords > 0) {
      this.opts.log.info(
        { records: this.stats.replayedRecords, lines: this.stats.replayedLines, bytes: this.totalBytes },
        `spool: replaying ${this.stats.replayedRecords} batches (${this.stats.replayedLines} lines) left by an earlier run`,
      );
    }
  }

  private checkRecord(buf: Buffer, off: number, seq: number): SpoolRecord | string {
    if (buf.length - off < HEADER_BYTES) return 'truncated header';
    if (buf.readUInt32LE(off) !== MAGIC) return 'bad magic';
    const length = buf.readUInt32LE(off + 4);
    const lines = buf.readUInt32LE(off + 8);
    const crc = buf.readUInt32LE(off + 12);
    const createdMs = buf.readDoubleLE(off + 16);
    if (off + HEADER_BYTES + length > buf.length) return 'truncated payload';
    if (crc32(buf.subarray(off + HEADER_BYTES, off + HEADER_BYTES + length)) !== crc) return 'checksum mismatch';
    return { segment: seq, offset: off, length, lines, createdMs };
  }

  private openSegment(): void {
    if (this.activeFd !== null) fs.closeSync(this.activeFd);
    const seq = this.nextSeq++;
    const file = path.join(this.dir, segName(seq));
    this.activeFd = fs.openSync(file, 'a', 0o600);
    this.active = { seq, file, bytes: 0, pending: 0 };
    this.segments.set(seq, this.active);
    fsyncDir(this.dir);
  }

  /** Compress, append and fdatasync one batch. When this returns, the batch is accepted. */
  append(text: string, lines: number): SpoolRecord {
    const payload = zlib.gzipSync(text, { level: this.opts.gzipLevel ?? 1 });
    return this.appendCompressed(payload, lines);
  }

  appendCompressed(payload: Buffer, lines: number): SpoolRecord {
    const recBytes = HEADER_BYTES + payload.length;
    if (!this.active || this.active.bytes + recBytes > this.segmentBytes) this.openSegment();
    this.enforceCap(recBytes);
    const seg = this.active!;
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    const createdMs = Date.now();
    header.writeUInt32LE(MAGIC, 0);
    header.writeUInt32LE(payload.length, 4);
    header.writeUInt32LE(lines, 8);
    header.writeUInt32LE(crc32(payload), 12);
    header.writeDoubleLE(createdMs, 16);
    const fd = this.activeFd!;
    fs.writeSync(fd, header);
    fs.writeSync(fd, payload);
    const t0 = process.hrtime.bigint();
    fs.fdatasyncSync(fd);
    this.stats.fsyncs++;
    this.stats.fsyncMsTotal += Number(process.hrtime.bigint() - t0) / 1e6;
    const rec: SpoolRecord = { segment: seg.seq, offset: seg.bytes, length: payload.length, lines, createdMs };
    if (this.memoryUsed + payload.length <= this.memoryBytes) {
      rec.payload = payload;
      this.memoryUsed += payload.length;
    }
    seg.bytes += recBytes;
    seg.pending++;
    this.totalBytes += recBytes;
    this.pendingLines += lines;
    this.queue.push(rec);
    this.stats.appendedRecords++;
    this.stats.appendedLines += lines;
    this.stats.appendedBytes += recBytes;
    return rec;
  }

  /** Drop the oldest segments (sent or not) until `incoming` more bytes fit under the cap. */
  private enforceCap(incoming: number): void {
    while (this.totalBytes + incoming > this.opts.maxBytes) {
      const oldest = [...this.segments.values()].sort((a, b) => a.seq - b.seq).find((s) => s !== this.active);
      if (!oldest) break;
      let records = 0;
      let lines = 0;
      for (let i = this.head; i < this.queue.length; i++) {
        const r = this.queue[i];
        if (r.segment !== oldest.seq || r.length < 0) continue;
        records++;
        lines += r.lines;
        this.forget(r);
      }
      this.stats.droppedRecords += records;
      this.stats.droppedLines += lines;
      this.stats.droppedBytes += oldest.bytes;
      this.removeSegment(oldest);
      this.compact();
      this.opts.log.warn(
        { segment: oldest.file, records, lines, bytes: oldest.bytes, maxBytes: this.opts.maxBytes },
        `spool full (cap ${this.opts.maxBytes} bytes): dropped the oldest segment with ${records} unsent batches (${lines} lines); InfluxDB has been unreachable or too slow for too long`,
      );
    }
  }

  /** Mark a record as gone from the queue (dropped or acked). */
  private forget(r: SpoolRecord): void {
    if (r.payload) this.memoryUsed -= r.payload.length;
    r.payload = undefined;
    this.pendingLines -= r.lines;
    r.length = -1; // tombstone: skipped by peek()
  }

  private removeSegment(seg: Segment): void {
    this.segments.delete(seg.seq);
    this.totalBytes -= seg.bytes;
    fs.rmSync(seg.file, { force: true });
    fsyncDir(this.dir);
  }

  private compact(): void {
    while (this.head < this.queue.length && this.queue[this.head].length < 0) this.head++;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }

  /** The oldest batch not yet written. */
  peek(): SpoolRecord | undefined {
    this.compact();
    return this.head < this.queue.length ? this.queue[this.head] : undefined;
  }

  /** A record's gzip payload (from memory, else from its segment). */
  read(rec: SpoolRecord): Buffer {
    if (rec.payload) return rec.payload;
    const seg = this.segments.get(rec.segment);
    if (!seg) throw new Error(`spool: segment ${rec.segment} is gone (dropped by the size cap)`);
    const fd = fs.openSync(seg.file, 'r');
    try {
      const buf = Buffer.allocUnsafe(rec.length);
      fs.readSync(fd, buf, 0, rec.length, rec.offset + HEADER_BYTES);
      return buf;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** InfluxDB has the batch: forget it, delete its segment when nothing in it is pending. */
  ack(rec: SpoolRecord): void {
    if (rec.length < 0) return; // dropped by the cap meanwhile
    const seg = this.segments.get(rec.segment);
    const end = rec.offset + HEADER_BYTES + rec.length;
    this.forget(rec);
    this.compact();
    if (!seg) return;
    seg.pending--;
    try {
      fs.writeFileSync(path.join(this.dir, 'ack'), `${rec.segment} ${end}\n`);
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'spool: cannot record progress in the ack file; some batches may be sent twice after a restart (harmless)');
    }
    if (seg.pending === 0 && seg !== this.active) this.removeSegment(seg);
  }

  get pendingRecords(): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (this.queue[i].length >= 0) n++;
    return n;
  }

  snapshot(): SpoolStats {
    const oldest = this.peek();
    return {
      records: this.pendingRecords,
      lines: this.pendingLines,
      bytes: this.totalBytes,
      segments: this.segments.size,
      appendedRecords: this.stats.appendedRecords,
      appendedLines: this.stats.appendedLines,
      appendedBytes: this.stats.appendedBytes,
      replayedRecords: this.stats.replayedRecords,
      replayedLines: this.stats.replayedLines,
      droppedRecords: this.stats.droppedRecords,
      droppedLines: this.stats.droppedLines,
      droppedBytes: this.stats.droppedBytes,
      corruptRecords: this.stats.corruptRecords,
      oldestMs: oldest ? oldest.createdMs : null,
    };
  }

  get bytes(): number {
    return this.totalBytes;
  }

  get lines(): number {
    return this.pendingLines;
  }

  close(): void {
    if (this.activeFd !== null) {
      fs.closeSync(this.activeFd);
      this.activeFd = null;
    }
    // An empty active segment is not worth keeping.
    if (this.active && this.active.pending === 0) this.removeSegment(this.active);
    this.active = null;
  }
}
