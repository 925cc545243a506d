'use strict';
// What the Node.js scripts behind `tcplat up` and `tcplat demo` share.
const path = require('node:path');

const root = path.resolve(__dirname, '..');

/** pkg/core's build. @returns {any} */
function core() {
  try {
    return require(path.join(root, 'pkg/core/dist'));
  } catch {
    throw new Error('pkg/core is not built: run sudo scripts/setup (or npm run build) first');
  }
}

/**
 * Wait until `url` answers 2xx, at most `timeoutMs`; `failed()` names why waiting is pointless (a child
 * exited), which is thrown at once.
 * @param {string} url @param {number} timeoutMs @param {() => string | null} failed
 */
async function waitHttp(url, timeoutMs, failed) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const why = failed();
    if (why) throw new Error(why);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer within ${Math.round(timeoutMs / 1000)} s`);
}

module.exports = { root, core, waitHttp };
