/** Wall-clock time in ns with sub-ms resolution: Date.now() once, then the monotonic clock. */
const HR0 = process.hrtime.bigint();
const WALL0 = BigInt(Date.now()) * 1_000_000n;

export type Clock = () => bigint;

export const wallNs: Clock = () => WALL0 + (process.hrtime.bigint() - HR0);
