#!/usr/bin/env node
/**
 * One-shot init step of docker-compose.yml (service `influxdb-tokens`): from the InfluxDB 2.x operator
 * token, make one scoped token per service and write each to its own file, so the operator token stays
 * with InfluxDB and this step:
 *
 *   agent     write-only on the bucket  (it only writes /api/v2/write)
 *   grafana   read-only on the bucket   (Flux queries of both datasources)
 *   renderer  read-only on the bucket   (Flux queries)
 *
 * Idempotent: a token file whose token is still an active authorization with exactly the wanted
 * permissions is kept; otherwise a new token is created, written, and the older tcplat tokens of that
 * service (same description) are deleted. Plain Node 20 (fetch), the InfluxDB 2.x HTTP API only.
 *
 * Environment:
 *   INFLUX_URL                   e.g. http://influxdb:8086
 *   INFLUX_ORG, INFLUX_BUCKET    the setup's organization and bucket
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

async function api(method, p, body) {
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
  if (!res.ok) die(`${method} ${p}: HTTP ${res.status}: ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : undefined;
}

const orgs = await api('GET', `/api/v2/orgs?${new URLSearchParams({ org })}`);
const orgID = orgs.orgs?.[0]?.id;
if (!orgID) die(`InfluxDB has no organization ${JSON.stringify(org)}`);
const buckets = await api('GET', `/api/v2/buckets?${new URLSearchParams({ orgID, name: bucket })}`);
const bucketID = buckets.buckets?.[0]?.id;
if (!bucketID) die(`organization ${org} has no bucket ${JSON.stringify(bucket)}`);
const auths = (await api('GET', `/api/v2/authorizations?${new URLSearchParams({ orgID })}`)).authorizations ?? [];

const sameScope = (a, action) =>
  a.status === 'active' &&
  a.permissions.length === 1 &&
  a.permissions[0].action === action &&
  a.permissions[0].resource.type === 'buckets' &&
  a.permissions[0].resource.id === bucketID;

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
    say(`${w.name}: keeping its ${w.action} token for bucket ${bucket} (${kept.id})`);
    continue;
  }
  const created = await api('POST', '/api/v2/authorizations', {
    orgID,
    description,
    permissions: [{ action: w.action, resource: { type: 'buckets', id: bucketID, orgID } }],
  });
  fs.mkdirSync(path.dirname(w.file), { recursive: true });
  const tmp = `${w.file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, created.token, { mode: 0o400 });
  if (w.uid !== undefined) fs.chownSync(tmp, w.uid, w.uid);
  fs.renameSync(tmp, w.file);
  for (const old of auths.filter((a) => a.description === description && a.id !== created.id)) await api('DELETE', `/api/v2/authorizations/${old.id}`);
  say(`${w.name}: new ${w.action} token for bucket ${bucket} (${created.id}) in ${w.file}`);
}
