export { buildApp, rendererPlugin, ROUTES } from './app';
export { RENDERER_OPTIONS, rendererConfig, type RendererConfig } from './config';
export { WorkerPool, PoolOverloadedError, RenderError, WORKER_SCRIPT } from './pool';
export { parseRenderParams, canonicalKey, ParamError, DEFAULT_LIMITS } from './params';
export { influxSource, type HistSource } from './data';
export { signLink, canonicalQueryString } from './auth';
export { main } from './cli';
