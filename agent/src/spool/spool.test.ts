import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { silentLogger, type Logger } from '../types';
import { crc32, crc32Portable } from './crc32';
import { HEADER_BYTES, Spool } from './spool';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-spool-'));
  dirs.push(d);
  return d;
}
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

const text = (rec: Buffer) => zlib.gunzipSync(rec).toString();
const segs = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.spool'));

test('crc32 matches the portable table implementation and the known check value', () => {
  expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
  const b = Buffer.from('tcp_connect,host=a latency_ms=1 1\n'.repeat(100));
  expect(crc32(b)).toBe(crc32Portable(b));
});

test('append is durable: a new Spool on the same directory replays unacked batches in order', () => {
  const dir = tmp();
  const s = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  const r1 = s.append('a 1\nb 2\n', 2);
  s.append('c 3\n', 1);
  expect(s.snapshot()).toMatchObject({ records: 2, lines: 3 });
  s.ack(r1);
  expect(s.peek()!.lines).toBe(1);
  // Crash: no close(). The next run replays what was not acked.
  const s2 = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  expect(s2.runId).toBe(s.runId + 1);
  expect(s2.snapshot()).toMatchObject({ records: 1, lines: 1, replayedRecords: 1 });
  expect(text(s2.read(s2.peek()!))).toBe('c 3\n');
  s2.ack(s2.peek()!);
  s2.close();
  expect(segs(dir)).toEqual([]);
  const s3 = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  expect(s3.peek()).toBeUndefined();
  s3.close();
});

test('a lost ack file only means batches are sent again', () => {
  const dir = tmp();
  const s = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  const r = s.append('a 1\n', 1);
  s.append('b 1\n', 1);
  s.ack(r);
  fs.rmSync(path.join(dir, 'ack'));
  const s2 = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  expect(s2.snapshot().records).toBe(2);
  s2.close();
});

test('a torn or corrupt record ends replay of its segment, counted and logged', () => {
  const dir = tmp();
  const s = new Spool(dir, { maxBytes: 1 << 30, log: silentLogger });
  s.append('a 1\n', 1);
  s.append('b 2\n', 1);
  s.append('c 3\n', 1);
  const file = path.join(dir, segs(dir)[0]);
  const buf = fs.readFileSync(file);
  // Flip a payload byte of the second record; cut the third in half (torn write).
  const secondStart = HEADER_BYTES + buf.readUInt32LE(4);
  buf[secondStart + HEADER_BYTES + 3] ^= 0xff;
  fs.writeFileSync(file, buf.subarray(0, buf.length - 5));
  const errors: string[] = [];
  const log: Logger = { ...silentLogger, error: (_o, m) => errors.push(m ?? '') };
  const s2 = new Spool(dir, { maxBytes: 1 << 30, log });
  expect(s2.snapshot()).toMatchObject({ records: 1, corruptRecords: 1 });
  expect(errors[0]).toMatch(/corrupt record .* at byte \d+ \(checksum mismatch\)/);
  expect(text(s2.read(s2.peek()!))).toBe('a 1\n');
  s2.close();
});

test('size cap: the oldest segment goes first, counted and logged', () => {
  const dir = tmp();
  const warnings: string[] = [];
  const log: Logger = { ...silentLogger, warn: (_o, m) => warnings.push(m ?? '') };
  // Incompressible payloads of ~40 KiB; segments of 100 KiB; cap 300 KiB.
  const s = new Spool(dir, { maxBytes: 300 << 10, segmentBytes: 100 << 10, log, memoryBytes: 0 });
  const rnd = () => `m f="${Buffer.from(Array.from({ length: 30000 }, () => Math.floor(Math.random() * 256))).toString('base64')}"\n`;
  for (let i = 0; i < 20; i++) s.append(rnd(), 1);
  const st = s.snapshot();
  expect(st.bytes).toBeLessThanOrEqual(300 << 10);
  expect(st.droppedRecords).toBeGreaterThan(0);
  expect(st.droppedRecords + st.records).toBe(20);
  expect(st.droppedLines).toBe(st.droppedRecords);
  expect(warnings[0]).toMatch(/spool full .* dropped the oldest segment with \d+ unsent batches/);
  // What is left still reads back (from disk: memoryBytes 0).
  expect(text(s.read(s.peek()!))).toMatch(/^m f="/);
  s.close();
});

test('an unwritable spool directory is a clear error', () => {
  const file = path.join(tmp(), 'a-file');
  fs.writeFileSync(file, '');
  expect(() => new Spool(path.join(file, 'spool'), { maxBytes: 1 << 20, log: silentLogger })).toThrow(/--spool-dir .*a-file\/spool: cannot create or write it \(ENOTDIR\)/);
});
