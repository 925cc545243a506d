/**
 * The spool's storage, synchronous: runs inside the spool's worker thread (worker.ts), never on the agent's
 * event loop. See spool.ts for the design; this file is what touches the disk.
 *
 * Layout of the spool directory:
 *   spool.db (+ spool.db-wal)  SQLite, WAL mode, synchronous=FULL, locking_mode=EXCLUSIVE
 *   owner.pid                  "<pid>\n" of the process holding the lock (for the error message only: the
 *                              lock itself is SQLite's exclusive lock, released by the kernel when the
 *                              holder dies, however it dies)
 *   dead-letter.lp             batches InfluxDB refused, written by the writer
 *
 * Tables: batches(id AUTOINCREMENT, created_ms, lines, payload = gzip'd line protocol) and meta(run_id).
 * AUTOINCREMENT ids never go back, even after every row was deleted, so an id can never be mistaken for an
 * acknowledged one (the bug of the segment log this replaced: an `ack` file that outlived its segments).
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import Database from 'better-sqlite3';

export const DB_FILE = 'spool.db';
export const OWNER_FILE = 'owner.pid';

/** Why a batch left the spool without being written. */
export type DropReason = 'cap' | 'pending_full' | 'unstored_at_close';

export interface DropCounts {
  records: number;
  lines: number;
  bytes: number;
}

export interface StoreStats {
  runId: number;
  /** Batches on disk, not yet acknowledged. */
  records: number;
  lines: number;
  /** Payload bytes on disk (what the cap applies to). */
  bytes: number;
  /** Batches the disk refused (full, I/O error), kept in memory and retried. */
  pendingRecords: number;
  pendingLines: number;
  pendingBytes: number;
  appendedRecords: number;
  appendedLines: number;
  appendedBytes: number;
  replayedRecords: number;
  replayedLines: number;
  ackedRecords: number;
  dropped: Record<DropReason, DropCounts>;
  /** Appends (or retries) the disk refused, by reason (disk_full, io_error, other). */
  storeFailures: Record<string, number>;
  oldestMs: number | null;
}

export interface StoredBatch {
  /** > 0: a row id; < 0: a batch held in memory because the disk refused it. */
  id: number;
  createdMs: number;
  lines: number;
  payload: Buffer;
}

export interface AppendResult {
  id: number;
  stored: boolean;
  /** Milliseconds of the SQLite transaction (insert + commit with fsync), when stored. */
  storeMs?: number;
  /** Batches that shared this one's transaction (one commit, one fsync), when more than one. */
  group?: number;
  /** Set when the store failed: the reason and SQLite's message. */
  failure?: { reason: string; message: string };
  drops: { reason: DropReason; records: number; lines: number; bytes: number }[];
}

export interface StoreOptions {
  maxBytes: number;
  /** Bound on the batches kept in memory while the disk refuses them. Default 64 MiB. */
  pendingMaxBytes?: number;
  gzipLevel?: number;
}

export class SpoolLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number | null,
  ) {
    super(
      `--spool-dir ${dir} is in use by ${pid ? `pid ${pid}` : 'another process'} (another agent or import): ` +
        'stop it, or give this one its own --spool-dir',
    );
  }
}

function failureReason(e: unknown): string {
  const code = String((e as { code?: string }).code ?? '');
  if (code === 'SQLITE_FULL' || code === 'ENOSPC') return 'disk_full';
  if (code.startsWith('SQLITE_IOERR') || code === 'EIO') return 'io_error';
  return 'other';
}

interface Pending {
  id: number;
  createdMs: number;
  lines: number;
  payload: Buffer;
}

export class SpoolStore {
  readonly runId: number;
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  private readonly del: Database.Statement;
  private readonly oldest: Database.Statement;
  private readonly oldestIdAfter: Database.Statement;
  private readonly byId: Database.Statement;
  private readonly setMeta: Database.Statement;
  private readonly pending: Pending[] = [];
  /** Memory ids of batches stored after the writer got them (so an ack by memory id finds the row). */
  private readonly storedAs = new Map<number, number>();
  /** Acknowledged rows whose delete the disk refused: skipped, deleted on the next retry. */
  private readonly ackedNotDeleted = new Set<number>();
  private nextMemId = -1;
  /**
   * Batches the writer holds (handed out by next(), not yet acked; several when it sends in parallel): the
   * cap and the memory bound never drop them, and next() hands out the oldest batch not among them.
   */
  private readonly claimed = new Set<number>();
  private closed = false;
  private runIdUnstored = false;
  private readonly s: StoreStats;

  constructor(
    readonly dir: string,
    private readonly opts: StoreOptions,
  ) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.accessSync(dir, fs.constants.W_OK);
    } catch (e) {
      throw new Error(`--spool-dir ${dir}: cannot create or write it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); give a writable directory`);
    }
    const file = path.join(dir, DB_FILE);
    const db = new Database(file, { timeout: 0 });
    try {
      // Exclusive before WAL: the lock is taken at the first write below and held until close; the WAL
      // index then lives in this process's memory (no -shm file), which is why no reader can share it.
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('journal_size_limit = 8388608');
      // Checkpoint at ~1 MiB of WAL (default 4 MiB): a small disk fills with WAL less.
      db.pragma('wal_autocheckpoint = 256');
      db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      db.close();
      if (String((e as { code?: string }).code).startsWith('SQLITE_BUSY')) throw new SpoolLockedError(dir, readOwner(dir));
      throw new Error(`--spool-dir ${dir}: cannot open ${file}: ${(e as Error).message} (if it is damaged, move it aside to start with an empty spool)`);
    }
    let runId: number;
    try {
      db.exec(`CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms INTEGER NOT NULL, lines INTEGER NOT NULL, payload BLOB NOT NULL);
               CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);`);
      runId = readRunId(db, dir) + 1;
      db.prepare("INSERT INTO meta (key, value) VALUES ('run_id', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(runId);
      db.exec('COMMIT');
    } catch (e) {
      if (db.inTransaction) db.exec('ROLLBACK');
      const hasTables = (db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name IN ('batches', 'meta')").get() as { n: number }).n === 2;
      if (failureReason(e) !== 'disk_full' || !hasTables) {
        db.close();
        throw new Error(`--spool-dir ${dir}: cannot set up ${file}: ${(e as Error).message}`);
      }
      // Disk full, but the spool is there: open it anyway (its batches can still be sent); the new run id
      // is stored as soon as the disk takes a write (retryPending).
      runId = readRunId(db, dir) + 1;
      this.runIdUnstored = true;
    }
    this.db = db;
    this.runId = runId;
    writeOwner(dir);
    this.insert = db.prepare('INSERT INTO batches (created_ms, lines, payload) VALUES (?, ?, ?)');
    this.del = db.prepare('DELETE FROM batches WHERE id = ?');
    this.setMeta = db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
    this.oldest = db.prepare('SELECT id, created_ms AS createdMs, lines, payload FROM batches ORDER BY id LIMIT 1');
    this.oldestIdAfter = db.prepare('SELECT id FROM batches WHERE id > ? ORDER BY id LIMIT 1');
    this.byId = db.prepare('SELECT id, created_ms AS createdMs, lines, payload FROM batches WHERE id = ?');
    const agg = db.prepare('SELECT count(*) AS n, coalesce(sum(lines), 0) AS lines, coalesce(sum(length(payload)), 0) AS bytes FROM batches').get() as {
      n: number;
      lines: number;
      bytes: number;
    };
    const zero = (): DropCounts => ({ records: 0, lines: 0, bytes: 0 });
    // Cap drops are counted in the same transaction as their delete, so a crash cannot lose the count.
    const meta = (k: string) => (db.prepare('SELECT value FROM meta WHERE key = ?').get(k) as { value: number } | undefined)?.value ?? 0;
    const capSoFar = { records: meta('cap_records'), lines: meta('cap_lines'), bytes: meta('cap_bytes') };
    this.s = {
      runId,
      records: agg.n,
      lines: agg.lines,
      bytes: agg.bytes,
      pendingRecords: 0,
      pendingLines: 0,
      pendingBytes: 0,
      appendedRecords: 0,
      appendedLines: 0,
      appendedBytes: 0,
      replayedRecords: agg.n,
      replayedLines: agg.lines,
      ackedRecords: 0,
      dropped: { cap: capSoFar, pending_full: zero(), unstored_at_close: zero() },
      storeFailures: {},
      oldestMs: null,
    };
  }

  stats(): StoreStats {
    let oldestMs: number | null = null;
    if (this.s.records > 0 && !this.closed) {
      const r = this.db.prepare('SELECT created_ms AS c FROM batches ORDER BY id LIMIT 1').get() as { c: number } | undefined;
      oldestMs = r ? r.c : null;
    } else if (this.pending.length > 0) oldestMs = this.pending[0].createdMs;
    return { ...this.s, oldestMs, dropped: structuredClone(this.s.dropped), storeFailures: { ...this.s.storeFailures } };
  }

  /** Compress and store one batch; when the disk refuses it, keep it in memory (bounded) and retry later. */
  append(text: string, lines: number, createdMs = Date.now()): AppendResult {
    return this.appendCompressed(this.compress(text), lines, createdMs);
  }

  /** A batch's payload as stored and sent: gzip'd line protocol. */
  compress(text: string): Buffer {
    return zlib.gzipSync(text, { level: this.opts.gzipLevel ?? 1 });
  }

  /**
   * Several batches that arrived together (one flush): one transaction, so one commit and one fsync for
   * all of them, instead of one each. Each is as durable as alone: none is answered before the commit.
   * When the disk refuses the transaction, each is stored (or held in memory) on its own, as append() does.
   */
  appendMany(items: { payload: Buffer; lines: number }[], createdMs = Date.now()): AppendResult[] {
    const payloads = items.map((it) => it.payload);
    if (items.length > 1 && this.pending.length === 0) {
      const r = this.storeGroup(payloads, items.map((it) => it.lines), createdMs);
      if (r) return r;
    }
    return items.map((it, k) => this.appendCompressed(payloads[k], it.lines, createdMs));
  }

  private storeGroup(payloads: Buffer[], lines: number[], createdMs: number): AppendResult[] | null {
    const t0 = performance.now();
    const out: { id: number; dropped: DropCounts }[] = [];
    let bytes = this.s.bytes;
    const cap = { ...this.s.dropped.cap };
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        for (let k = 0; k < payloads.length; k++) {
          const dropped = this.capRows(payloads[k].length, bytes);
          if (dropped.records > 0) {
            cap.records += dropped.records;
            cap.lines += dropped.lines;
            cap.bytes += dropped.bytes;
            this.setMeta.run('cap_records', cap.records);
            this.setMeta.run('cap_lines', cap.lines);
            this.setMeta.run('cap_bytes', cap.bytes);
          }
          const id = Number(this.insert.run(createdMs, lines[k], payloads[k]).lastInsertRowid);
          bytes += payloads[k].length - dropped.bytes;
          out.push({ id, dropped });
        }
        this.db.exec('COMMIT');
      } catch (e) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw e;
      }
    } catch {
      return null; // counted (and the WAL checkpointed when full) by the one-by-one stores that follow
    }
    const ms = performance.now() - t0;
    return out.map(({ id, dropped }, k) => {
      const drops: AppendResult['drops'] = [];
      this.s.appendedRecords++;
      this.s.appendedLines += lines[k];
      this.s.appendedBytes += payloads[k].length;
      if (dropped.records > 0) {
        this.countDrop('cap', dropped, drops);
        this.s.records -= dropped.records;
        this.s.lines -= dropped.lines;
        this.s.bytes -= dropped.bytes;
      }
      this.s.records++;
      this.s.lines += lines[k];
      this.s.bytes += payloads[k].length;
      return { id, stored: true, storeMs: ms, group: payloads.length, drops };
    });
  }

  appendCompressed(payload: Buffer, lines: number, createdMs = Date.now()): AppendResult {
    this.s.appendedRecords++;
    this.s.appendedLines += lines;
    this.s.appendedBytes += payload.length;
    const drops: AppendResult['drops'] = [];
    if (this.pending.length === 0) {
      const r = this.store(payload, lines, createdMs, drops);
      if (r.ok) return { id: r.id, stored: true, storeMs: r.ms, drops };
      const id = this.keep(payload, lines, createdMs, drops);
      return { id, stored: false, failure: r.failure, drops };
    }
    // Older batches wait in memory: keep the order, store them first.
    const id = this.keep(payload, lines, createdMs, drops);
    const retried = this.retryPending(drops);
    const stored = this.storedAs.has(id);
    return { id: stored ? this.storedAs.get(id)! : id, stored, failure: retried.failure, drops };
  }

  /** One transaction: drop the oldest rows while the batch would not fit under the cap, insert it, commit (fsync). */
  private store(
    payload: Buffer,
    lines: number,
    createdMs: number,
    drops: AppendResult['drops'],
  ): { ok: true; id: number; ms: number } | { ok: false; failure: { reason: string; message: string } } {
    const t0 = performance.now();
    let dropped: DropCounts & { ids: number[] } = { records: 0, lines: 0, bytes: 0, ids: [] };
    let id = 0;
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        dropped = this.capRows(payload.length);
        if (dropped.records > 0) {
          const c = this.s.dropped.cap;
          this.setMeta.run('cap_records', c.records + dropped.records);
          this.setMeta.run('cap_lines', c.lines + dropped.lines);
          this.setMeta.run('cap_bytes', c.bytes + dropped.bytes);
        }
        id = Number(this.insert.run(createdMs, lines, payload).lastInsertRowid);
        this.db.exec('COMMIT');
      } catch (e) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw e;
      }
    } catch (e) {
      const reason = failureReason(e);
      this.s.storeFailures[reason] = (this.s.storeFailures[reason] ?? 0) + 1;
      if (reason === 'disk_full') {
        // A WAL that can no longer grow is only checkpointed after a commit that cannot happen: move its
        // pages into the database and truncate it now, so the retry has room.
        try {
          this.db.pragma('wal_checkpoint(TRUNCATE)');
        } catch {
          /* still full: the next retry tries again */
        }
      }
      return { ok: false, failure: { reason, message: (e as Error).message } };
    }
    const ms = performance.now() - t0;
    if (dropped.records > 0) {
      this.countDrop('cap', dropped, drops);
      this.s.records -= dropped.records;
      this.s.lines -= dropped.lines;
      this.s.bytes -= dropped.bytes;
    }
    this.s.records++;
    this.s.lines += lines;
    this.s.bytes += payload.length;
    return { ok: true, id, ms };
  }

  /** Inside a transaction: delete the oldest rows (never one the writer holds) until `incoming` fits. */
  private capRows(incoming: number, current = this.s.bytes): DropCounts & { ids: number[] } {
    const out = { records: 0, lines: 0, bytes: 0, ids: [] as number[] };
    let bytes = current;
    let after = 0;
    while (bytes + incoming > this.opts.maxBytes) {
      const r = this.db.prepare('SELECT id, lines, length(payload) AS n FROM batches WHERE id > ? ORDER BY id LIMIT 1').get(after) as
        | { id: number; lines: number; n: number }
        | undefined;
      if (!r) break;
      after = r.id;
      if (this.claimed.has(r.id) || this.ackedNotDeleted.has(r.id)) continue;
      this.del.run(r.id);
      out.records++;
      out.lines += r.lines;
      out.bytes += r.n;
      out.ids.push(r.id);
      bytes -= r.n;
    }
    return out;
  }

  private countDrop(reason: DropReason, d: DropCounts, drops: AppendResult['drops']): void {
    const c = this.s.dropped[reason];
    c.records += d.records;
    c.lines += d.lines;
    c.bytes += d.bytes;
    drops.push({ reason, records: d.records, lines: d.lines, bytes: d.bytes });
  }

  /** Hold a batch in memory; beyond the bound the oldest held batch (not in flight) is dropped, counted. */
  private keep(payload: Buffer, lines: number, createdMs: number, drops: AppendResult['drops']): number {
    const id = this.nextMemId--;
    this.pending.push({ id, createdMs, lines, payload });
    this.s.pendingRecords++;
    this.s.pendingLines += lines;
    this.s.pendingBytes += payload.length;
    const max = this.opts.pendingMaxBytes ?? 64 << 20;
    while (this.s.pendingBytes > max && this.pending.length > 1) {
      const i = this.pending.findIndex((p) => !this.claimed.has(p.id));
      if (i < 0) break; // every held batch is being sent
      const [p] = this.pending.splice(i, 1);
      this.forgetPending(p);
      this.countDrop('pending_full', { records: 1, lines: p.lines, bytes: p.payload.length }, drops);
    }
    return id;
  }

  private forgetPending(p: Pending): void {
    this.s.pendingRecords--;
    this.s.pendingLines -= p.lines;
    this.s.pendingBytes -= p.payload.length;
  }

  /** Store the batches held in memory, oldest first, until the disk refuses again. Also retries failed deletes. */
  retryPending(drops: AppendResult['drops'] = []): { stored: number; failure?: { reason: string; message: string } } {
    if (this.runIdUnstored) {
      try {
        this.setMeta.run('run_id', this.runId);
        this.runIdUnstored = false;
      } catch {
        /* still full */
      }
    }
    for (const id of [...this.ackedNotDeleted]) {
      try {
        this.del.run(id);
        this.ackedNotDeleted.delete(id);
      } catch {
        break;
      }
    }
    let stored = 0;
    while (this.pending.length > 0) {
      const p = this.pending[0];
      const r = this.store(p.payload, p.lines, p.createdMs, drops);
      if (!r.ok) return { stored, failure: r.failure };
      this.pending.shift();
      this.forgetPending(p);
      this.storedAs.set(p.id, r.id);
      if (this.claimed.delete(p.id)) this.claimed.add(r.id);
      stored++;
    }
    return { stored };
  }

  /** Every batch waiting, oldest first, decompressed (diagnostics and tests; not for big spools). */
  list(): { id: number; lines: number; text: string }[] {
    const rows = this.db.prepare('SELECT id, lines, payload FROM batches ORDER BY id').all() as StoredBatch[];
    return [...rows.filter((r) => !this.ackedNotDeleted.has(r.id)), ...this.pending].map((b) => ({ id: b.id, lines: b.lines, text: zlib.gunzipSync(b.payload).toString() }));
  }

  /** Something waits for the disk: batches held in memory, an unstored run id, or deletes it refused. */
  get needsRetry(): boolean {
    return this.pending.length > 0 || this.runIdUnstored || this.ackedNotDeleted.size > 0;
  }

  get pendingCount(): number {
    return this.pending.length;
  }

  /**
   * The oldest batch not yet acknowledged and not already handed out (on disk first, older; then held in
   * memory), claimed for the writer until ack() or release().
   */
  next(): StoredBatch | undefined {
    if (this.s.records > this.ackedNotDeleted.size) {
      let skip = 0;
      let r = this.oldest.get() as StoredBatch | undefined;
      if (r && (this.claimed.has(r.id) || this.ackedNotDeleted.has(r.id))) {
        // Skip by id only: the rows the writer holds are the oldest ones, their payloads need not be read.
        let id: number | undefined = r.id;
        while (id !== undefined && (this.claimed.has(id) || this.ackedNotDeleted.has(id)) && skip++ < this.claimed.size + this.ackedNotDeleted.size) {
          id = (this.oldestIdAfter.get(id) as { id: number } | undefined)?.id;
        }
        r = id === undefined || this.claimed.has(id) || this.ackedNotDeleted.has(id) ? undefined : (this.byId.get(id) as StoredBatch | undefined);
      }
      if (r) {
        this.claimed.add(r.id);
        return r;
      }
    }
    const p = this.pending.find((x) => !this.claimed.has(x.id));
    if (!p) return undefined;
    this.claimed.add(p.id);
    return { id: p.id, createdMs: p.createdMs, lines: p.lines, payload: p.payload };
  }

  /** The writer gives a batch back unsent (it stopped): next() may hand it out again. */
  release(id: number): void {
    this.claimed.delete(id);
    const row = this.storedAs.get(id);
    if (row !== undefined) this.claimed.delete(row);
  }

  /**
   * InfluxDB has the batch: delete it. Returns false when the delete could not be made yet.
   *
   * The delete is committed without waiting for its fsync (synchronous=NORMAL for this one transaction):
   * the next commit of an append syncs the WAL, this frame included. Until then a power loss (not a crash
   * of the agent: the WAL is in the kernel's page cache) can bring the row back, and the batch is sent
   * again: the same points with the same timestamps, which InfluxDB stores once. An fsync per ack would
   * put a disk flush between every two write requests.
   */
  ack(id: number): boolean {
    this.release(id);
    if (id < 0) {
      const i = this.pending.findIndex((p) => p.id === id);
      if (i >= 0) {
        const [p] = this.pending.splice(i, 1);
        this.forgetPending(p);
        this.s.ackedRecords++;
        return true;
      }
      const row = this.storedAs.get(id);
      if (row === undefined) return true; // dropped meanwhile
      this.storedAs.delete(id);
      id = row;
    }
    let changes = 0;
    let lines = 0;
    let bytes = 0;
    try {
      const r = this.db.prepare('SELECT lines, length(payload) AS n FROM batches WHERE id = ?').get(id) as { lines: number; n: number } | undefined;
      if (!r) return true; // dropped by the cap meanwhile
      lines = r.lines;
      bytes = r.n;
      this.db.pragma('synchronous = NORMAL');
      try {
        changes = this.del.run(id).changes;
      } finally {
        this.db.pragma('synchronous = FULL');
      }
    } catch {
      // The disk refused even the delete (a full WAL): skip the row from now on, delete it later. After a
      // crash before that, the batch is sent again: the same points with the same timestamps, which
      // InfluxDB stores once.
      if (!this.ackedNotDeleted.has(id)) {
        this.ackedNotDeleted.add(id);
        this.s.ackedRecords++;
      }
      return false;
    }
    if (changes > 0) {
      this.s.records--;
      this.s.lines -= lines;
      this.s.bytes -= bytes;
      this.s.ackedRecords++;
    }
    return true;
  }

  /**
   * Close: one last attempt to store what is held in memory; what still cannot be stored is counted as
   * dropped (`unstored_at_close`). Returns those counts.
   */
  close(): DropCounts {
    if (this.closed) return { records: 0, lines: 0, bytes: 0 };
    this.closed = true;
    this.retryPending();
    const lost = { records: 0, lines: 0, bytes: 0 };
    for (const p of this.pending.splice(0)) {
      this.forgetPending(p);
      lost.records++;
      lost.lines += p.lines;
      lost.bytes += p.payload.length;
    }
    if (lost.records > 0) this.countDrop('unstored_at_close', lost, []);
    try {
      this.db.close();
    } finally {
      try {
        fs.rmSync(path.join(this.dir, OWNER_FILE), { force: true });
      } catch {
        /* informative only */
      }
    }
    return lost;
  }
}

function readOwner(dir: string): number | null {
  try {
    const n = Number(fs.readFileSync(path.join(dir, OWNER_FILE), 'utf8').trim());
    return Number.isSafeInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function writeOwner(dir: string): void {
  try {
    fs.writeFileSync(path.join(dir, OWNER_FILE), `${process.pid}\n`, { mode: 0o644 });
  } catch {
    /* the message of a refused second process would lack the pid; the lock still holds */
  }
}

/** The last run's id: from meta, else the segment spool's run-id file when one is left (so histogram offsets stay new). */
function readRunId(db: Database.Database, dir: string): number {
  const row = db.prepare("SELECT value FROM meta WHERE key = 'run_id'").get() as { value: number } | undefined;
  return row ? row.value : legacyRunId(dir);
}

function legacyRunId(dir: string): number {
  try {
    const n = Number(fs.readFileSync(path.join(dir, 'run-id'), 'utf8').trim());
    return Number.isSafeInteger(n) && n >= 0 ? n : 0;
  } catch {
    return 0;
  }
}
