export * from './schema';
export * from './buckets';
export * from './histogram';
export * from './lineprotocol';
export * from './duration';
export * from './escape';
export * from './event';
export * from './influx';
