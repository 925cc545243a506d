// @ts-check
'use strict';
/**
 * One client pool of `tcplat demo churn`, in its own process so the agent tells the pools apart by pid
 * (a `services` rule per pool). It waits for "go" on stdin, then sends --rate requests/s for --duration to
 * 127.0.0.1:--port, each a line answered by a line, and prints one JSON line with what it did:
 *   reuse: a pool of at most --size keep-alive connections (opened as concurrent requests need them), each replaced after --max-life (±20 %, like HikariCP's
 *          maxLifetime), requests taken by a free connection;
 *   churn: a new connection per request, closed by the client once the answer is in.
 * Usage: node demo-churn-client.js reuse|churn PORT RATE DURATION_MS SIZE MAX_LIFE_MS
 */
const net = require('node:net');

const [mode, portS, rateS, durationS, sizeS, maxLifeS] = process.argv.slice(2);
const port = Number(portS);
const rate = Number(rateS);
const durationMs = Number(durationS);
const size = Number(sizeS);
const maxLifeMs = Number(maxLifeS);

const stats = { mode, requests: 0, answered: 0, failed: 0, connections: 0 };

/** A connection that answers one request at a time. */
class Conn {
  constructor() {
    this.sock = net.connect({ host: '127.0.0.1', port });
    this.sock.setNoDelay(true);
    stats.connections++;
    this.ready = new Promise((resolve, reject) => {
      this.sock.once('connect', resolve);
      this.sock.once('error', reject);
    });
    this.sock.on('error', () => {});
    this.busy = false;
    this.born = Date.now();
    this.life = maxLifeMs * (0.8 + 0.4 * Math.random());
    /** @type {((ok: boolean) => void) | null} */
    this.waiting = null;
    let buf = '';
    this.sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\n')) {
        buf = '';
        const w = this.waiting;
        this.waiting = null;
        w?.(true);
      }
    });
    this.sock.on('close', () => {
      const w = this.waiting;
      this.waiting = null;
      w?.(false);
    });
  }

  /** @returns {Promise<boolean>} */
  async request() {
    this.busy = true;
    try {
      await this.ready;
      const answered = new Promise((resolve) => (this.waiting = resolve));
      this.sock.write('req\n');
      return /** @type {boolean} */ (await answered);
    } catch {
      return false;
    } finally {
      this.busy = false;
    }
  }

  close() {
    this.sock.end();
  }
}

/** @type {Conn[]} */
let pool = [];

async function one() {
  stats.requests++;
  let ok;
  if (mode === 'churn') {
    const c = new Conn();
    ok = await c.request();
    c.close();
  } else {
    // Replace connections past their lifetime (when idle), keep --size of them.
    pool = pool.filter((c) => {
      if (c.sock.destroyed) return false;
      if (!c.busy && Date.now() - c.born > c.life) {
        c.close();
        return false;
      }
      return true;
    });
    let c = pool.find((x) => !x.busy);
    if (!c && pool.length < size) pool.push((c = new Conn()));
    // All busy: wait for one, like a pool's acquire (a timeout of 2 s counts as a failure).
    const until = Date.now() + 2000;
    while (!c && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 2));
      c = pool.find((x) => !x.busy);
    }
    if (!c) {
      stats.failed++;
      return;
    }
    ok = await c.request();
  }
  if (ok) stats.answered++;
  else stats.failed++;
}

function run() {
  const t0 = Date.now();
  const inflight = new Set();
  let sent = 0;
  // Requests on a schedule (not back to back): the same rate for both pools, whatever their latency.
  const timer = setInterval(() => {
    const due = Math.floor(((Date.now() - t0) * rate) / 1000);
    while (sent < due) {
      sent++;
      const p = one().finally(() => inflight.delete(p));
      inflight.add(p);
    }
    if (Date.now() - t0 >= durationMs) {
      clearInterval(timer);
      Promise.all(inflight).then(() => {
        for (const c of pool) c.close();
        // Let the FINs go out before reporting (the close events are what the demo is about).
        setTimeout(() => {
          process.stdout.write(JSON.stringify({ ...stats, seconds: (Date.now() - t0) / 1000 }) + '\n');
          process.exit(0);
        }, 300);
      });
    }
  }, 5);
}

process.stdin.once('data', () => run());
process.stdout.write('ready\n');
