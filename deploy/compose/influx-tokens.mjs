#!/usr/bin/env node
/**
 * One-shot init step of docker-compose.yml (service `influxdb-tokens`): from the InfluxDB 2.x operator
 * token, create the rollup bucket (`<bucket>_rollups`, long retention) when missing, then make one scoped
 * token per service and write each to its own file, so the operator token stays with InfluxDB and this step:
 *
 *   agent     `write`: write the bucket; read it and read+write the rollup bucket (the agent makes the
 *             rollups from the database: it reads the 10 s data and writes the sums)
 *   grafana   `read`: read the bucket and the rollup bucket (Flux queries of both datasources)
 *   renderer  `read`: read the bucket and the rollup bucket (Flux queries)
 *
 * Idempotent: a token file whose token is still an active authorization with exactly the wanted
 * permissions is kept; otherwise a new token is created, written, and the older tcplat tokens of that
 * service (same description) are deleted. Plain Node 20 (fetch), the InfluxDB 2.x HTTP API only.
 *
 * Environment:
 *   INFLUX_URL                   e.g. http://influxdb:8086
 *   INFLUX_ORG, INFLUX_BUCKET    the setup's organization and bucket
 *   INFLUX_ROLLUP_BUCKET         the rollup bucket (default INFLUX_BUCKET + "_rollups", as the agent's default)
 *   INFLUX_ROLLUP_RETENTION      its retention when created: Nh, Nd or Nw, 0 = forever (default 400d)
 *   INFLUX_OPERATOR_TOKEN_FILE   file holding the operator token (or INFLUX_OPERATOR_TOKEN)
 *   TCPLAT_TOKENS                comma-separated NAME=read|write:PATH[:UID], e.g.
 *                                agent=write:/tokens/agent/influx-token:0,grafana=read:/tokens/grafana/influx-token:472
 * The token files are written mode 0400, owned by UID when given (the service's user in its image).
 */
import fs from 'node:fs';
import path from 'node:path';

function die(msg) {
  console.error(`influx-tokens: error: ${msg}`);
  process.exit(1);
}
const say = (msg) => console.error(`influx-tokens: ${msg}`);

const env = process.env;
const url = (env.INFLUX_URL ?? '').replace(/\/+$/, '');
const org = env.INFLUX_ORG ?? '';
const bucket = env.INFLUX_BUCKET ?? '';
if (!url || !org || !bucket) die('set INFLUX_URL, INFLUX_ORG and INFLUX_BUCKET');
const rollupBucket = env.INFLUX_ROLLUP_BUCKET || `${bucket}_rollups`;
const rollupRetention = (() => {
  const v = (env.INFLUX_ROLLUP_RETENTION ?? '400d').trim();
  if (v === '0') return 0;
  const m = /^(\d+)([hdw])$/.exec(v);
  if (!m) die(`bad INFLUX_ROLLUP_RETENTION ${JSON.stringify(v)}: want Nh, Nd or Nw (e.g. 400d), or 0 for forever`);
  return Number(m[1]) * { h: 3600, d: 86400, w: 604800 }[m[2]];
})();
let operator = env.INFLUX_OPERATOR_TOKEN ?? '';
if (env.INFLUX_OPERATOR_TOKEN_FILE) {
  try {
    operator = fs.readFileSync(env.INFLUX_OPERATOR_TOKEN_FILE, 'utf8').trim();
  } catch (e) {
    die(`cannot read INFLUX_OPERATOR_TOKEN_FILE ${env.INFLUX_OPERATOR_TOKEN_FILE}: ${e.message}`);
  }
}
if (!operator) die('no operator token: set INFLUX_OPERATOR_TOKEN_FILE (or INFLUX_OPERATOR_TOKEN)');

const wanted = (env.TCPLAT_TOKENS ?? '')
  .split(',')
  .filter(Boolean)
  .map((spec) => {
    const m = /^([a-z][a-z0-9-]*)=(read|write):([^:]+)(?::(\d+))?$/.exec(spec.trim());
    if (!m) die(`bad TCPLAT_TOKENS entry ${JSON.stringify(spec)}: want NAME=read|write:PATH[:UID]`);
    return { name: m[1], action: m[2], file: m[3], uid: m[4] === undefined ? undefined : Number(m[4]) };
  });
if (wanted.length === 0) die('TCPLAT_TOKENS names no token');

async function api(method, p, body, { missingOk = false } = {}) {
  let res;
  try {
    res = await fetch(`${url}${p}`, {
      method,
      headers: { Authorization: `Token ${operator}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch (e) {
    die(`cannot reach InfluxDB at ${url}: ${e.message}`);
  }
  const text = await res.text();
  if (missingOk && res.status === 404) return undefined;
  if (!res.ok) die(`${method} ${p}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : undefined;
}

const orgs = await api('GET', `/api/v2/orgs?${new URLSearchParams({ org })}`);
const orgID = orgs.orgs?.[0]?.id;
if (!orgID) die(`InfluxDB has no organization ${JSON.stringify(org)}`);
const buckets = await api('GET', `/api/v2/buckets?${new URLSearchParams({ orgID, name: bucket })}`);
const bucketID = buckets.buckets?.[0]?.id;
if (!bucketID) die(`organization ${org} has no bucket ${JSON.stringify(bucket)}`);
// 2.x answers a name it does not know with 404.
let rollupID = (await api('GET', `/api/v2/buckets?${new URLSearchParams({ orgID, name: rollupBucket })}`, undefined, { missingOk: true }))?.buckets?.find((b) => b.name === rollupBucket)?.id;
if (rollupID) say(`rollup bucket ${rollupBucket} exists (${rollupID}); its retention is left as it is`);
else {
  const made = await api('POST', '/api/v2/buckets', {
    orgID,
    name: rollupBucket,
    description: `tcplat rollups of ${bucket} (1m, 10m, 1h sums of the histograms)`,
    retentionRules: rollupRetention > 0 ? [{ type: 'expire', everySeconds: rollupRetention }] : [],
  });
  rollupID = made.id;
  say(`created rollup bucket ${rollupBucket} (${rollupID}), retention ${rollupRetention > 0 ? `${rollupRetention / 86400} d` : 'forever'}`);
}

/** The permissions of each kind of token (see the top of this file). */
const scope = (action) => {
  const p = (a, id) => ({ action: a, resource: { type: 'buckets', id, orgID } });
  return action === 'write' ? [p('write', bucketID), p('read', bucketID), p('read', rollupID), p('write', rollupID)] : [p('read', bucketID), p('read', rollupID)];
};
const permKey = (perms) =>
  perms
    .map((x) => `${x.action}:${x.resource.type}:${x.resource.id ?? '*'}`)
    .sort()
    .join(',');
const auths = (await api('GET', `/api/v2/authorizations?${new URLSearchParams({ orgID })}`)).authorizations ?? [];

const sameScope = (a, action) => a.status === 'active' && permKey(a.permissions) === permKey(scope(action));

for (const w of wanted) {
  const description = `tcplat ${w.name}: ${w.action} ${bucket}`;
  let current = '';
  try {
    current = fs.readFileSync(w.file, 'utf8').trim();
  } catch {
    /* first run */
  }
  const kept = current && auths.find((a) => a.token === current && a.description === description && sameScope(a, w.action));
  if (kept) {
    say(`${w.name}: keeping its ${w.action} token for buckets ${bucket} and ${rollupBucket} (${kept.id})`);
    continue;
  }
  const created = await api('POST', '/api/v2/authorizations', {
    orgID,
    description,
    permissions: scope(w.action),
  });
  fs.mkdirSync(path.dirname(w.file), { recursive: true });
  const tmp = `${w.file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, created.token, { mode: 0o400 });
  if (w.uid !== undefined) fs.chownSync(tmp, w.uid, w.uid);
  fs.renameSync(tmp, w.file);
  for (const old of auths.filter((a) => a.description === description && a.id !== created.id)) await api('DELETE', `/api/v2/authorizations/${old.id}`);
  say(`${w.name}: new ${w.action} token for buckets ${bucket} and ${rollupBucket} (${created.id}) in ${w.file}`);
}
