import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodePoint, Histogram, histPoint, MEASUREMENT, Metrics, SESSION_BUCKET_FIELDS, sessionHistPoint } from '@tcplat/core';
import { silentLogger } from '../types';
import { rollupStore } from './engine';
import { contiguous, DEFAULT_CATCH_UP_MS, histWindows, RollupJob, STATE_FILE } from './job';

const M = 60_000;

describe('rollup job: dirty windows and the state file (the real databases are in tests/rollup*.test.ts)', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-rollup-job-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  // Nothing listens on port 1 (and fetch refuses it outright): every run fails like an unreachable InfluxDB.
  const job = (now: () => number) =>
    new RollupJob({ store: rollupStore({ version: 1, url: 'http://127.0.0.1:1', db: 'x' }), host: 'h', intervalMs: 3_600_000, dir, log: silentLogger, metrics: new Metrics(), now });
  const saved = () => JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')).rolledUpToMs as number;

  test('the windows of a batch are its tcp_connect_hist lines (any tag values), not its raw lines', () => {
    const h = new Histogram();
    h.add(1);
    const hist = (ms: number, host: string) => encodePoint(histPoint({ host, service: 'a b', dst: 'x,y', result: 'ok' }, h, BigInt(ms) * 1_000_000n + 1_000_003n));
    const raw = 'tcp_connect,host=h latency_ms=1,syn_retrans=0i,pid=1i,sport=2i 1000000000000000000';
    const text = [raw, hist(5 * M + 10_000, 'h 1'), raw, hist(7 * M + 50_000, 'h=2'), hist(5 * M, 'h')].join('\n') + '\n';
    expect([...histWindows(text)].sort()).toEqual([5 * M, 7 * M]);
    expect([...histWindows(hist(9 * M, 'h'))]).toEqual([9 * M]);
    expect([...histWindows(raw)]).toEqual([]);
  });

  test('tls_handshake_hist and tcp_session_hist lines make their windows dirty too (their raw lines do not)', () => {
    const h = new Histogram();
    h.add(1);
    const tls = encodePoint(histPoint({ host: 'h', service: 's', dst: 'd', result: 'ok' }, h, BigInt(3 * M + 20_000) * 1_000_000n, 0, MEASUREMENT.tlsHist));
    const session = encodePoint(
      sessionHistPoint({ host: 'h', service: 's', dst: 'd' }, { count: 1, sumMs: 5, minMs: 5, maxMs: 5, buckets: new Array<number>(SESSION_BUCKET_FIELDS.length).fill(0), retrans: 0, resetsIn: 0, resetsOut: 0 }, BigInt(11 * M) * 1_000_000n + 4n),
    );
    const rawSession = 'tcp_session,host=h lifespan_ms=5 1000000000000000000';
    expect([...histWindows([rawSession, session, tls].join('\n'))].sort((a, b) => a - b)).toEqual([3 * M, 11 * M]);
    expect([...histWindows(session)]).toEqual([11 * M]);
  });

  test('adjacent windows form one range', () => {
    expect(contiguous([0, M, 2 * M, 5 * M, 6 * M, 9 * M])).toEqual([
      [0, 3 * M],
      [5 * M, 7 * M],
      [9 * M, 10 * M],
    ]);
  });

  test('without a state file the last 2 h are dirty at start; with one, everything from its mark', async () => {
    const now = 1000 * 60 * M;
    const j = job(() => now);
    j.start();
    expect(j.dirtyWindows).toBe(DEFAULT_CATCH_UP_MS / M + 10);
    await j.stop();
    fs.writeFileSync(path.join(dir, STATE_FILE), JSON.stringify({ rolledUpToMs: now - 5 * 60 * M }));
    const k = job(() => now);
    k.start();
    expect(k.dirtyWindows).toBe(5 * 60 + 10);
    expect(k.status()).toMatchObject({ rolled_up_to: new Date(now - 5 * 60 * M).toISOString() });
    await k.stop();
  });

  test('a delivery older than the saved mark lowers the mark on disk at once (before the batch is acknowledged); newer ones do not write', async () => {
    const now = 1000 * 60 * M;
    fs.writeFileSync(path.join(dir, STATE_FILE), JSON.stringify({ rolledUpToMs: now - 60 * M }));
    const j = job(() => now);
    j.start();
    j.deliveredWindows([now - 30 * M]);
    expect(saved()).toBe(now - 60 * M);
    j.deliveredWindows([now - 300 * M, now - 200 * M]);
    expect(saved()).toBe(now - 300 * M);
    await j.stop();
  });

  test('InfluxDB down: a run fails, is counted, and every window stays dirty; the lag grows; stop keeps the oldest on disk', async () => {
    let now = 1000 * 60 * M;
    const j = job(() => now);
    j.start();
    j.deliveredWindows([now - 180 * M]);
    const before = j.dirtyWindows;
    await j.run();
    expect(j.errors.value).toBe(1);
    expect(j.dirtyWindows).toBe(before);
    expect(j.status()).toMatchObject({ errors: 1, windows_rolled_up: 0, last_error: expect.stringMatching(/cannot reach InfluxDB 1\.x at http:\/\/127\.0\.0\.1:1/) });
    now += 10 * M;
    expect(j.lagSeconds()).toBe(190 * 60);
    await j.stop();
    expect(saved()).toBe(1000 * 60 * M - 180 * M);
  });
});
