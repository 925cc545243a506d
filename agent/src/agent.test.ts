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
