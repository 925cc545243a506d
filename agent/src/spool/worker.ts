/**
 * The spool's worker thread: owns the SQLite connection (store.ts), so compression, inserts and the fsync of
 * every commit never run on the agent's event loop. Requests come as messages {seq, op, ...}; every reply
 * carries the store's stats so the main thread can answer /metrics without asking.
 */
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { SpoolLockedError, SpoolStore, type StoreOptions } from './store';

export interface WorkerInit extends StoreOptions {
  dir: string;
  /** How often batches held in memory (disk refused them) are retried. */
  retryMs: number;
}

export type RequestBody = { op: 'append'; text: string; lines: number } | { op: 'next' } | { op: 'ack'; id: number } | { op: 'release'; id: number } | { op: 'list' } | { op: 'close' };
export type Request = RequestBody & { seq: number };

const port = parentPort!;
const init = workerData as WorkerInit;
let store: SpoolStore;
try {
  store = new SpoolStore(init.dir, init);
  port.postMessage({ type: 'ready', runId: store.runId, stats: store.stats() });
} catch (e) {
  port.postMessage({ type: 'open-error', message: (e as Error).message, locked: e instanceof SpoolLockedError, pid: e instanceof SpoolLockedError ? e.pid : null });
  process.exit(0);
}

let retryTimer: NodeJS.Timeout | null = null;
// Set before use: the open above exits the thread when it fails.
function scheduleRetry(): void {
  if (retryTimer || !store.needsRetry) return;
  retryTimer = setTimeout(() => {
    retryTimer = null;
    try {
      const before = store.pendingCount;
      const drops: Parameters<SpoolStore['retryPending']>[0] = [];
      const r = store.retryPending(drops);
      port.postMessage({ type: 'retry', stored: r.stored, left: store.pendingCount, before, failure: r.failure, drops, stats: store.stats() });
    } catch {
      /* an unexpected SQLite error: try again next time rather than let the thread die */
    }
    scheduleRetry();
  }, init.retryMs);
}

scheduleRetry();

/** Appends stored in one transaction at most (bounds how long the first of them waits). */
const GROUP_MAX = 8;

/**
 * The appends of one flush arrive together: take those queued behind this one (by the time it is
 * compressed) and store them in one transaction (one fsync). Stops at the first other request, which is
 * then handled, so order holds.
 */
function appendGroup(first: Request & { op: 'append' }): void {
  const group = [first];
  let other: Request | undefined;
  try {
    const items = [{ payload: store.compress(first.text), lines: first.lines }];
    while (group.length < GROUP_MAX) {
      const q = receiveMessageOnPort(port)?.message as Request | undefined;
      if (!q) break;
      if (q.op !== 'append') {
        other = q;
        break;
      }
      group.push(q);
      items.push({ payload: store.compress(q.text), lines: q.lines });
    }
    const results = store.appendMany(items);
    scheduleRetry();
    const stats = store.stats();
    group.forEach((m, k) => port.postMessage({ type: 'reply', seq: m.seq, result: results[k], stats }));
  } catch (e) {
    for (const m of group) port.postMessage({ type: 'reply', seq: m.seq, error: (e as Error).message, stats: store.stats() });
  }
  if (other) handle(other);
}

port.on('message', handle);

function handle(m: Request): void {
  if (m.op === 'append') return appendGroup(m);
  try {
    let result: unknown;
    switch (m.op) {
      case 'next': {
        const b = store.next();
        // Copy out of SQLite's buffer into a transferable one.
        result = b ? { ...b, payload: new Uint8Array(b.payload) } : undefined;
        break;
      }
      case 'ack':
        result = store.ack(m.id);
        break;
      case 'release':
        store.release(m.id);
        break;
      case 'list':
        result = store.list();
        break;
      case 'close':
        if (retryTimer) clearTimeout(retryTimer);
        result = store.close();
        port.postMessage({ type: 'reply', seq: m.seq, result, stats: store.stats() });
        port.close();
        return;
    }
    scheduleRetry();
    port.postMessage({ type: 'reply', seq: m.seq, result, stats: store.stats() });
  } catch (e) {
    port.postMessage({ type: 'reply', seq: m.seq, error: (e as Error).message, stats: store.stats() });
  }
}
