/**
 * Runs the agent: logger, pipeline, HTTP API, signals. SIGTERM/SIGINT: stop the source, flush what is in
 * memory to the spool, give InfluxDB until the deadline (5 s) to take it, close; the rest stays spooled.
 */
import fs from 'node:fs';
import { LogController } from 'fastify';
import { ConfigError, describeConfig, describeTarget, requireTokenBeyondLoopback } from '@tcplat/core';
import { Agent } from './agent';
import { agentFastify, attachAgent } from './app';
import { AGENT_OPTIONS, type AgentConfig } from './options';
import type { Logger } from './types';

export const SHUTDOWN_DEADLINE_MS = 5000;

export async function runAgent(config: AgentConfig, values: Record<string, unknown>): Promise<number> {
  // Decided on what the listen name resolves to (a hosts file may map localhost anywhere), before anything starts.
  await requireTokenBeyondLoopback(config.listen, config.apiToken !== undefined, 'api-token');
  const app = agentFastify({
    logger: { level: config.logLevel, base: { component: 'tcplat-agent' }, redact: ['req.headers.authorization'], stream: process.stderr },
    // One line per request would drown the pipeline's own logs (status polls, Prometheus scrapes).
    logController: new LogController({ disableRequestLogging: true }),
    http: config.http,
  });
  const log = app.log as unknown as Logger;
  log.info({ config: describeConfig(AGENT_OPTIONS, values), influx: describeTarget(config.target) }, 'tcplat agent');
  let agent: Agent;
  try {
    agent = await Agent.create(config, { log });
  } catch (e) {
    log.error({}, (e as Error).message);
    await app.close();
    // A spool held by another process or not writable: the message says it all, no stack trace.
    if (e instanceof ConfigError) throw e;
    return 1;
  }
  await attachAgent(app, { agent, token: config.apiToken, stream: config.stream, http: config.http });

  let stopResolve!: () => void;
  const stopSignal = new Promise<void>((r) => (stopResolve = r));
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal: sig }, 'second signal: exiting now; unsent batches stay in the spool');
      process.exit(130);
    }
    log.info({ signal: sig }, 'stopping: source first, then a final flush');
    stopResolve();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (e) {
    log.error({ listen: config.listen }, `cannot listen on ${config.listen.host}:${config.listen.port}: ${(e as Error).message} (use --listen HOST:PORT)`);
    await agent.spool.close();
    if (config.spoolDirTemporary) fs.rmSync(config.spoolDir, { recursive: true, force: true });
    await app.close();
    return 1;
  }

  let code = 0;
  try {
    if (config.once) {
      code = await agent.runOnce(stopSignal);
    } else {
      agent.start();
      await stopSignal;
      const { drained } = await agent.shutdown(Date.now() + SHUTDOWN_DEADLINE_MS);
      log.info({ drained, spooledLines: agent.spool.lines }, 'stopped');
    }
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await app.close();
  }
  return code;
}
