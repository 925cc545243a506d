export { Agent } from './agent';
export { buildApp, agentRoutes } from './app';
export { main } from './cli';
export { AGENT_OPTIONS, agentConfig, loadAgentConfig, type AgentConfig } from './options';
