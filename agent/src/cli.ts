/** `tcplat agent`: bin/tcplat calls main(argv). */
import { ConfigError, formatHelp } from '@tcplat/core';
import { AGENT_FOOTER, AGENT_OPTIONS, AGENT_SUMMARY, loadAgentConfig } from './options';
import { runAgent } from './server';

export async function main(argv: string[]): Promise<number> {
  let loaded;
  try {
    loaded = loadAgentConfig(argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tcplat agent: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (!loaded.config) {
    process.stdout.write(formatHelp('agent', AGENT_SUMMARY, AGENT_OPTIONS, AGENT_FOOTER));
    return 0;
  }
  try {
    return await runAgent(loaded.config, loaded.loaded.values);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`tcplat agent: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}
