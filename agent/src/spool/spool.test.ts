import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { silentLogger, type Logger } from '../types';
import { Spool } from './spool';
import { buildAgent } from '../../../tests/agent-support';

// The spool's worker runs the compiled worker.js: build it (incremental; serialised across jest workers).
beforeAll(buildAgent, 120_000);

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-spool-'));
  dirs.push(d);
  return d;
}
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const text = (b: Buffer) => zlib.gunzipSync(b).toString();
const open = (dir: string, log: Logger = silentLogger, maxBytes = 1 << 30) => Spool.open(dir, { maxBytes, log });

test('append is durable: the next open sees unacked batches in order, with a new run id', async () => {
  const dir = tmp();
  const s = await open(dir);
  const r1 = await s.append('a 1\nb 2\n', 2);
  await s.append('c 3\n', 1);
  expect(r1.stored).toBe(true);
  expect(s.snapshot()).toMatchObject({ records: 2, lines: 3 });
  const first = (await s.next())!;
  expect(text(first.payload)).toBe('a 1\nb 2\n');
  await s.ack(first);
  expect(s.lines).toBe(1);
  await s.close();
  const s2 = await open(dir);
  expect(s2.runId).toBe(s.runId + 1);
  expect(s2.snapshot()).toMatchObject({ records: 1, lines: 1, replayedRecords: 1, replayedLines: 1 });
  expect(text((await s2.next())!.payload)).toBe('c 3\n');
  await s2.close();
});

test('ids never go back: after a drained close, the next run\'s batches are not taken for acknowledged ones (issue 17)', async () => {
  const dir = tmp();
  const s = await open(dir);
  for (let i = 0; i < 3; i++) await s.append(`m v=${i}\n`, 1);
  let last = 0;
  for (let r = await s.next(); r; r = await s.next()) {
    last = r.id;
    await s.ack(r);
  }
  expect(s.empty).toBe(true);
  await s.close(); // drained: nothing left
  const s2 = await open(dir);
  const a = await s2.append('m v=10\n', 1);
  expect(a.id).toBeGreaterThan(last);
  await s2.close(); // not drained this time
  const s3 = await open(dir);
  expect(s3.snapshot()).toMatchObject({ records: 1, replayedRecords: 1 });
  expect(text((await s3.next())!.payload)).toBe('m v=10\n');
  await s3.close();
});

test('next() hands out each batch once until it is acked or released (a writer sends several at once)', async () => {
  const s = await open(tmp());
  for (let i = 0; i < 3; i++) await s.append(`m v=${i}\n`, 1);
  const a = (await s.next())!;
  const b = (await s.next())!;
  const c = (await s.next())!;
  expect([a, b, c].map((r) => text(r.payload))).toEqual(['m v=0\n', 'm v=1\n', 'm v=2\n']);
  expect(await s.next()).toBeUndefined(); // all three are out
  await s.release(b); // the writer stopped before sending it
  expect(text((await s.next())!.payload)).toBe('m v=1\n');
  await s.ack(a);
  await s.ack(c);
  expect(s.snapshot()).toMatchObject({ records: 1, lines: 1 });
  await s.close();
  const s2 = await open(s.dir); // claims are this run's only: the unacked batch is handed out again
  expect(text((await s2.next())!.payload)).toBe('m v=1\n');
  await s2.close();
});

test('appends that arrive together share one commit, each answered only after it, all in order', async () => {
  const s = await open(tmp());
  // ~1 MiB each, posted without waiting (as one flush does): the worker finds the later ones queued.
  const body = (i: number) => Array.from({ length: 20_000 }, (_, k) => `m,b=${i} v=${k}i ${k}`).join('\n') + '\n';
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => s.append(body(i), 20_000)));
  expect(results.every((r) => r.stored)).toBe(true);
  expect(results.map((r) => r.id)).toEqual([...results.map((r) => r.id)].sort((a, b) => a - b));
  expect(results.some((r) => (r.group ?? 1) > 1)).toBe(true);
  expect(s.snapshot()).toMatchObject({ records: 20, lines: 400_000 });
  await s.close();
  const s2 = await open(s.dir);
  for (let i = 0; i < 20; i++) {
    const r = (await s2.next())!;
    expect(text(r.payload).startsWith(`m,b=${i} v=0i 0\n`)).toBe(true);
    await s2.ack(r);
  }
  await s2.close();
});

test('one owner at a time: a second open of the same directory is refused, naming the pid', async () => {
  const dir = tmp();
  const s = await open(dir);
  await expect(open(dir)).rejects.toThrow(new RegExp(`--spool-dir .* is in use by pid ${process.pid} .*give this one its own --spool-dir`));
  await s.close();
  const again = await open(dir); // released at close
  await again.close();
});

test('size cap: the oldest batches go first (never the one being sent), counted by reason, logged once per burst', async () => {
  const dir = tmp();
  const warnings: string[] = [];
  const log: Logger = { ...silentLogger, warn: (_o, m) => warnings.push(m ?? '') };
  const s = await open(dir, log, 1 << 20);
  // Incompressible payloads of ~300 KiB: three fit under the 1 MiB cap.
  const rnd = (i: number) => `m i=${i},f="${Buffer.from(Array.from({ length: 225_000 }, () => Math.floor(Math.random() * 256))).toString('base64')}"\n`;
  await s.append(rnd(0), 1);
  const sending = (await s.next())!; // the writer holds batch 0
  for (let i = 1; i < 10; i++) await s.append(rnd(i), 1);
  const st = s.stats;
  expect(st.bytes).toBeLessThanOrEqual(1 << 20);
  expect(st.dropped.cap.records).toBeGreaterThan(0);
  expect(st.dropped.cap.records + st.records).toBe(10);
  expect(st.dropped.cap.lines).toBe(st.dropped.cap.records);
  // Batch 0 was in flight, so it was kept; the next one is the oldest survivor after it.
  await s.ack(sending);
  expect(text((await s.next())!.payload)).toMatch(new RegExp(`^m i=${10 - st.records + 1},`));
  expect(warnings.filter((w) => /spool full/.test(w))).toHaveLength(1);
  await s.close(); // ends the burst: one summary line with the counts
  expect(warnings.filter((w) => /spool cap: dropped \d+ batches/.test(w))).toHaveLength(1);
});

test('an unwritable spool directory is a clear error', async () => {
  const file = path.join(tmp(), 'a-file');
  fs.writeFileSync(file, '');
  await expect(open(path.join(file, 'spool'))).rejects.toThrow(/--spool-dir .*a-file\/spool: cannot create or write it \(ENOTDIR\)/);
});

test('a damaged spool.db is a clear error that says what to do, not a crash', async () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'spool.db'), Buffer.alloc(8192, 0x5a));
  await expect(open(dir)).rejects.toThrow(/--spool-dir .*: cannot open .*spool\.db: file is not a database \(if it is damaged, move it aside to start with an empty spool\)/);
});
