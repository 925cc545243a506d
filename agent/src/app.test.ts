import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Agent } from './agent';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app';
import { agentConfig } from './options';
import { loadConfig } from '@tcplat/core';
import { AGENT_OPTIONS } from './options';
import { silentLogger } from './types';
import { buildAgent } from '../../tests/agent-support';

// The spool's worker runs the compiled worker.js: build it (incremental; serialised across jest workers).
beforeAll(buildAgent, 120_000);

const dirs: string[] = [];

/**
 * app.inject() through real loopback HTTP: light-my-request (inject) loads the ESM-only `cookie` package,
 * which jest's CommonJS runtime cannot. Same answers, one listen per app.
 */
async function inject(app: FastifyInstance, opts: string | { url: string; headers?: Record<string, string> }) {
  const o = typeof opts === 'string' ? { url: opts } : opts;
  if (!app.server.listening) await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const res = await fetch(`http://127.0.0.1:${port}${o.url}`, { headers: o.headers });
  const body = await res.text();
  const headers: Record<string, string> = {};
  res.headers.forEach((v, k) => (headers[k] = v));
  return { statusCode: res.status, headers, body, json: () => JSON.parse(body) };
}
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

async function makeAgent(extra: string[] = []): Promise<Agent> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-app-'));
  dirs.push(dir);
  const cfg = agentConfig(loadConfig(AGENT_OPTIONS, ['--source', 'ndjson', '--influx-url', 'http://127.0.0.1:9', '--influx-db', 'd', '--spool-dir', dir, ...extra], {}));
  return Agent.create(cfg, { log: silentLogger, command: { shell: 'exit 0' }, selfPids: [] });
}

const LINE =
  '{"type":"connect","ts_ns":1764100000123456789,"latency_ns":1023456789,"result":"ok","errno":0,"syn_retrans":1,"pid":1234,"tid":1234,' +
  '"comm":"ruby","cgroup_id":5678,"family":"ipv4","saddr":"127.0.0.1","sport":43340,"daddr":"127.0.0.1","dport":5432}';

describe('HTTP API (app.inject)', () => {
  test('/healthz, /readyz with reasons, /metrics per stage and reason, /api/status', async () => {
    const agent = await makeAgent();
    const app = await buildApp({ agent });
    expect((await inject(app, '/healthz')).json()).toEqual({ status: 'ok' });
    const ready = await inject(app, '/readyz');
    expect(ready.statusCode).toBe(503);
    expect(ready.json().reasons).toEqual(['source not started']);

    agent.line(LINE);
    agent.line('{"type":"connect"');
    agent.line('');
    agent.line(JSON.stringify({ type: 'stats', ts_ns: 1764100001000000000, events: 1, dropped: 3 }));
    agent.flush(true);
    await agent.spool.settled();
    const metrics = (await inject(app, '/metrics')).body;
    expect(metrics).toContain('# TYPE tcplat_stage_received_total counter');
    expect(metrics).toContain('tcplat_stage_received_total{stage="parse"} 4');
    expect(metrics).toContain('tcplat_stage_emitted_total{stage="parse"} 1');
    expect(metrics).toContain('tcplat_stage_dropped_total{reason="json",stage="parse"} 1');
    expect(metrics).toContain('tcplat_stage_dropped_total{reason="empty",stage="parse"} 1');
    expect(metrics).toContain('tcplat_stage_emitted_total{stage="encode"} 2'); // one raw point, one histogram point
    expect(metrics).toContain('tcplat_stage_emitted_total{stage="spool"} 2');
    expect(metrics).toContain('tcplat_probe_kernel_dropped 3');
    expect(metrics).toMatch(/tcplat_lag_seconds \d/);
    const status = (await inject(app, '/api/status')).json();
    expect(status.pipeline.stages.parse).toEqual({ received: 4, emitted: 1, dropped: 3 });
    expect(status.spool).toMatchObject({ records: 1, lines: 2 });
    expect(status.source.kind).toBe('ndjson');
    expect(JSON.stringify(status)).not.toContain('password');
    await app.close();
    await agent.shutdown(Date.now() + 100);
  });

  test('with a token, everything but /healthz and /readyz needs Authorization: Bearer', async () => {
    const agent = await makeAgent(['--listen', '0.0.0.0:0', '--api-token', 'tok3n-tok3n-tok3n']);
    const app = await buildApp({ agent, token: agent.config.apiToken });
    expect((await inject(app, '/healthz')).statusCode).toBe(200);
    expect((await inject(app, '/readyz')).statusCode).toBe(503);
    const denied = await inject(app, '/api/status');
    expect(denied.statusCode).toBe(401);
    expect(denied.headers['www-authenticate']).toMatch(/^Bearer/);
    expect((await inject(app, { url: '/metrics', headers: { authorization: 'Bearer nope!' } })).statusCode).toBe(401);
    expect((await inject(app, { url: '/metrics', headers: { authorization: 'Bearer tok3n-tok3n-tok3n' } })).statusCode).toBe(200);
    expect((await inject(app, { url: '/api/stream', headers: { authorization: 'Basic '+Buffer.from('tok3n-tok3n-tok3n').toString('base64') } })).statusCode).toBe(401);
    await app.close();
    await agent.shutdown(Date.now() + 100);
  });

  test('/api/stream sends live events and per-second summaries', async () => {
    const agent = await makeAgent();
    const app = await buildApp({ agent });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const port = (app.server.address() as AddressInfo).port;
    const text = await new Promise<string>((resolve, reject) => {
      const req = http.get(`http://127.0.0.1:${port}/api/stream`, (res) => {
        expect(res.headers['content-type']).toBe('text/event-stream');
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          buf += c;
          if (buf.includes('event: summary')) {
            req.destroy();
            resolve(buf);
          }
        });
        setTimeout(() => agent.line(LINE), 50);
      });
      req.on('error', reject);
    });
    const connect = /event: connect\ndata: (.*)\n/.exec(text);
    expect(JSON.parse(connect![1])).toMatchObject({ ts_ns: '1764100000123456789', service: 'ruby', dst: '127.0.0.1:5432', result: 'ok', latency_ms: 1023.456789, syn_retrans: 1 });
    const summary = JSON.parse(/event: summary\ndata: (.*)\n/.exec(text)![1]);
    expect(summary.total).toBe(1);
    expect(summary.series[0]).toMatchObject({ service: 'ruby', count: 1, max_ms: 1023.456789 });
    expect((await inject(app, '/api/stream?events=maybe')).statusCode).toBe(400);
    await app.close();
    await agent.shutdown(Date.now() + 100);
  });
});
