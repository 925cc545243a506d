import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '@tcplat/core';
import { buildAgent, probeLine } from '../../tests/agent-support';
import { Agent } from './agent';
import { agentConfig, AGENT_OPTIONS } from './options';
import { silentLogger } from './types';

// The spool's worker runs the compiled worker.js: build it (incremental; serialised across jest workers).
beforeAll(buildAgent, 120_000);

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('back-pressure: while batches wait for the spool, the source is not read, and nothing is lost', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-agent-'));
  dirs.push(dir);
  const capture = path.join(dir, 'capture.ndjson');
  const t0 = 1_764_100_000_000_000_000n;
  // 20k events, 1 ms apart: 20 s of event time, so raw points and histograms flush in many batches.
  fs.writeFileSync(capture, Array.from({ length: 20_000 }, (_, i) => probeLine({ tsNs: t0 + BigInt(i) * 1_000_000n, sport: 1000 + (i % 50_000) })).join('\n') + '\n');
  // InfluxDB unreachable: everything stays spooled, so the spool's content can be counted. Live mode (an
  // import flushes only at its end or every 100k events), the source kept open after the capture so it is not
  // restarted.
  const cfg = agentConfig(
    loadConfig(AGENT_OPTIONS, ['--source', 'ndjson', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'd', '--spool-dir', path.join(dir, 'spool'), '--flush-interval', '20ms'], {}),
  );
  // A 1-byte backlog: every batch on its way to the spool's worker pauses the source until it is stored.
  const agent = await Agent.create(cfg, { log: silentLogger, command: { shell: `cat ${capture}; exec sleep 600` }, selfPids: [], appendBacklogBytes: 1 });
  agent.start();
  await until(() => agent.source.state.lines === 20_000, 30_000, 'the whole capture to be read');
  agent.flush(true); // what shutdown does: the open windows too
  await until(() => agent.quiescent, 30_000, 'everything to be spooled');
  expect(agent.metrics.get('tcplat_source_pauses_total')).toBeGreaterThan(0);
  expect(agent.source.state.lines).toBe(20_000);
  const encoded = agent.metrics.get('tcplat_stage_emitted_total', { stage: 'encode' });
  expect(encoded).toBeGreaterThan(20_000); // raw points + histogram points
  expect(agent.spool.lines).toBe(encoded);
  await agent.shutdown(Date.now() + 200);
}, 60_000);

test("the probe's TLS coverage from its stats lines: handshakes and losses summed over probe runs, files of the current run, on:false when the uprobes did not load", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-agent-'));
  dirs.push(dir);
  // Stats lines as bpf/tcplat-probe prints them (captured from this build, counters changed), a tls line
  // between; then a restarted probe whose uprobes could not be loaded.
  const stats = (startedNs: string, tls: string) =>
    `{"type":"stats","ts_ns":1796677796445429269,"events":0,"dropped":0,"mode":"stream","started_ns":${startedNs},"drops":{"ringbuf_full":0,"storage_alloc":0,"inflight_full":0,"pending_full":0,"hist_full":0},"missed":{"state":0,"retransmit":0,"connect_exit":0}${tls}}`;
  const run1 = ',"tls":{"on":true,"ok":3,"failed":1,"unjoined":1,"drops":{"ringbuf_full":2},"not_reported":{"role_unknown":1},"files":{"attached":2,"not_openssl":13,"go_crypto_tls":4,"java":0,"attach_failed":1,"unreadable":0}}';
  const tlsLine =
    '{"type":"tls","ts_ns":1796677796445000000,"latency_ns":310468724,"result":"failed","pid":21360,"tid":21360,"comm":"python3","thread":"python3","cgroup_id":1,"lib":"openssl","calls":1,"family":"ipv4","saddr":"127.0.0.1","sport":57304,"daddr":"127.0.0.1","dport":43377}';
  const capture = path.join(dir, 'capture.ndjson');
  fs.writeFileSync(capture, [stats('1796677793435911779', run1), tlsLine, stats('1796677899000000000', ',"tls":{"on":false}')].join('\n') + '\n');
  const cfg = agentConfig(loadConfig(AGENT_OPTIONS, ['--source', 'ndjson', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'd', '--spool-dir', path.join(dir, 'spool')], {}));
  const agent = await Agent.create(cfg, { log: silentLogger, command: { shell: `cat ${capture}; exec sleep 600` }, selfPids: [] });
  agent.start();
  await until(() => agent.source.state.lines === 3, 30_000, 'the capture to be read');
  const m = agent.metrics;
  expect(m.get('tcplat_tls_handshakes_total', { result: 'failed' })).toBe(1);
  expect(m.get('tcplat_probe_tls_handshakes', { result: 'ok' })).toBe(3);
  expect(m.get('tcplat_probe_tls_handshakes', { result: 'unjoined' })).toBe(1);
  expect(m.get('tcplat_probe_tls_lost', { kind: 'drop', reason: 'ringbuf_full' })).toBe(2);
  expect(m.get('tcplat_probe_tls_lost', { kind: 'not_reported', reason: 'role_unknown' })).toBe(1);
  // The TLS counters are not connect losses.
  expect(m.get('tcplat_probe_kernel_lost', { kind: 'drop', reason: 'ringbuf_full' })).toBe(0);
  // The current run's uprobes did not load: off, no files, the earlier run's handshakes still counted.
  expect(m.get('tcplat_probe_tls_on')).toBe(0);
  const status = agent.status() as { source: { probe_tls: { on: boolean; files: Record<string, number>; handshakes: Record<string, number> } }; pipeline: { tls_handshakes: Record<string, number> } };
  expect(status.source.probe_tls).toMatchObject({ on: false, files: {}, handshakes: { ok: 3, failed: 1, unjoined: 1 } });
  expect(status.pipeline.tls_handshakes).toEqual({ ok: 0, failed: 1 });
  expect(m.get('tcplat_stage_dropped_total', { stage: 'parse', reason: 'type' })).toBe(0);
  await agent.shutdown(Date.now() + 200);
}, 60_000);
