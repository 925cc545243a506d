// A process that owns a spool (agent/dist) and obeys JSON lines on stdin, answering one JSON line each on
// stdout: so a test can SIGKILL the spool's owner for real, at any moment. Used by the durability tests.
// argv: DIR MAX_BYTES
'use strict';
const readline = require('node:readline');
const { Spool } = require('../../agent/dist/spool/spool.js');

const [dir, maxBytes] = process.argv.slice(2);
const log = { debug() {}, info() {}, warn() {}, error() {} };
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

Spool.open(dir, { maxBytes: Number(maxBytes), retryMs: 50, pendingMaxBytes: 1 << 20, log }).then(
  (spool) => {
    out({ ready: true, runId: spool.runId, pid: process.pid });
    const rl = readline.createInterface({ input: process.stdin });
    // One command at a time, in order.
    let chain = Promise.resolve();
    rl.on('line', (line) => {
      const m = JSON.parse(line);
      chain = chain.then(async () => {
        try {
          let result;
          if (m.op === 'append') result = await spool.append(m.text, m.lines);
          else if (m.op === 'next') {
            const r = await spool.next();
            result = r ? { id: r.id, lines: r.lines, text: require('node:zlib').gunzipSync(r.payload).toString() } : null;
          } else if (m.op === 'ack') result = await spool.ack(m.id);
          else if (m.op === 'list') result = await spool.list();
          else if (m.op === 'close') {
            result = await spool.close();
            out({ result, stats: spool.stats });
            process.exit(0);
          }
          out({ result, stats: spool.stats });
        } catch (e) {
          out({ error: e.message, stats: spool.stats });
        }
      });
    });
  },
  (e) => {
    out({ openError: e.message });
    process.exit(2);
  },
);
