/** Start the renderer from a loaded config: listen, log the effective config, close cleanly on signals. */
import type { FastifyInstance } from 'fastify';
import { describeConfig, requireTokenBeyondLoopback, type ConfigValues } from '@tcplat/core';
import { buildApp } from './app';
import { RENDERER_OPTIONS, rendererConfig } from './config';

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  close(): Promise<void>;
}

export async function startServer(values: ConfigValues): Promise<RunningServer> {
  const config = rendererConfig(values);
  // Decided on what the listen name resolves to (a hosts file may map localhost anywhere), before workers start.
  await requireTokenBeyondLoopback(config.listen, config.authTokens.length > 0, 'auth-token');
  const app = await buildApp({ config, logger: true });
  const address = await app.listen({ host: config.listen.host, port: config.listen.port });
  app.log.info(
    { config: describeConfig(RENDERER_OPTIONS, values), auth: config.authTokens.length > 0 ? 'bearer tokens' : 'open (loopback only)' },
    `tcplat renderer serving on ${address}`,
  );
  return { app, url: address, close: () => app.close() };
}

/** Run until SIGINT/SIGTERM; in-flight renders get a grace period, then the workers are stopped. */
export async function runUntilSignal(values: ConfigValues, graceMs = 10_000): Promise<number> {
  const server = await startServer(values);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      server.app.log.info({ signal }, 'shutting down');
      const force = setTimeout(() => {
        server.app.log.warn({ graceMs }, 'grace period over: exiting with requests in flight');
        resolve(1);
      }, graceMs);
      force.unref();
      server.close().then(
        () => {
          clearTimeout(force);
          resolve(0);
        },
        (e) => {
          server.app.log.error({ err: e }, 'error while closing');
          resolve(1);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
