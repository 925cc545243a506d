import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, type ConnectEvent } from '@tcplat/core';
import { Metrics, StageCounters } from '../metrics';
import type { EnrichedConnect, SessionEvent } from '../types';
import { Cidr, parseIp } from './cidr';
import { containerFromCgroup, containerLabel } from './container';
import { Enricher } from './enricher';
import { ListeningPorts, ProcCache } from './proc';
import { matchDst, matchService, parseRules } from './rules';

const ID = 'a'.repeat(40) + '0123456789abcdef01234567';

describe('CIDR', () => {
  test('v4, v6, v4-mapped, bare addresses', () => {
    expect(Cidr.parse('10.0.0.0/8')!.contains(parseIp('10.255.1.2')!)).toBe(true);
    expect(Cidr.parse('10.0.0.0/8')!.contains(parseIp('11.0.0.1')!)).toBe(false);
    expect(Cidr.parse('0.0.0.0/0')!.contains(parseIp('8.8.8.8')!)).toBe(true);
    expect(Cidr.parse('fd00::/8')!.contains(parseIp('fd12:3456::1')!)).toBe(true);
    expect(Cidr.parse('fd00::/8')!.contains(parseIp('fe80::1')!)).toBe(false);
    expect(Cidr.parse('192.168.1.10')!.contains(parseIp('::ffff:192.168.1.10')!)).toBe(true);
    expect(Cidr.parse('::1')!.contains(parseIp('::1')!)).toBe(true);
    for (const bad of ['10.0.0.0/33', '300.1.1.1', 'fd00::/129', 'nope', '1:2:3:4:5:6:7:8:9', '1::2::3']) expect(Cidr.parse(bad)).toBeNull();
  });
});

describe('container ids from /proc/PID/cgroup', () => {
  test.each([
    ['docker (systemd)', `0::/system.slice/docker-${ID}.scope`, { id: ID, runtime: 'docker' }],
    ['docker (cgroupfs, v1)', `12:memory:/docker/${ID}\n11:cpu:/docker/${ID}`, { id: ID, runtime: 'docker' }],
    ['containerd CRI', `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_12ab_34cd_56ef_1234567890ab.slice/cri-containerd-${ID}.scope`, { id: ID, runtime: 'containerd', podUid: '1234abcd-12ab-34cd-56ef-1234567890ab' }],
    ['cri-o', `0::/kubepods.slice/kubepods-pod1234abcd_12ab_34cd_56ef_1234567890ab.slice/crio-${ID}.scope`, { id: ID, runtime: 'cri-o', podUid: '1234abcd-12ab-34cd-56ef-1234567890ab' }],
    ['podman', `0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope/container`, { id: ID, runtime: 'podman' }],
    ['kubernetes cgroupfs', `0::/kubepods/burstable/pod1234abcd-12ab-34cd-56ef-1234567890ab/${ID}`, { id: ID, runtime: 'kubernetes', podUid: '1234abcd-12ab-34cd-56ef-1234567890ab' }],
    ['host process', '0::/system.slice/ssh.service', {}],
  ])('%s', (_name, text, want) => {
    expect(containerFromCgroup(text)).toEqual(want);
  });
  test('label: id, else pod uid', () => {
    expect(containerLabel({ id: ID })).toBe(ID);
    expect(containerLabel({ podUid: 'u' })).toBe('pod:u');
    expect(containerLabel({})).toBeUndefined();
  });
});

describe('mapping rules', () => {
  const rules = parseRules({
    services: [
      { name: 'rails', comm: 'ruby' },
      { name: 'nest', comm: ['node', 'node-main'], cmdline: 'dist/main' },
      { name: 'java', exe: '/opt/*/bin/java' },
      { name: 'batch', pid: 4242 },
      { name: 'web', cgroup: '/system.slice/web.service' },
      { name: 'pay', container: ID.slice(0, 12) },
    ],
    destinations: ['10.0.0.0/8:5432 -> postgres-primary', '[fd00::/8]:6379 -> redis', { cidr: '192.168.1.10', port: '*', name: 'nas' }, '127.0.0.1 -> loopback'],
  });
  test('services: first match, every given key must match', () => {
    expect(matchService(rules.services, { pid: 1, comm: 'ruby' })).toBe('rails');
    expect(matchService(rules.services, { pid: 1, comm: 'node', cmdline: 'node /app/dist/main.js' })).toBe('nest');
    expect(matchService(rules.services, { pid: 1, comm: 'node', cmdline: 'node other.js' })).toBeUndefined();
    expect(matchService(rules.services, { pid: 1, comm: 'java', exe: '/opt/billing/bin/java' })).toBe('java');
    expect(matchService(rules.services, { pid: 4242, comm: 'x' })).toBe('batch');
    expect(matchService(rules.services, { pid: 1, comm: 'x', cgroup: '/system.slice/web.service/child' })).toBe('web');
    expect(matchService(rules.services, { pid: 1, comm: 'x', cgroup: '/system.slice/web.services' })).toBeUndefined();
    expect(matchService(rules.services, { pid: 1, comm: 'x', containerId: ID })).toBe('pay');
    expect(rules.needsProc).toBe(true);
  });
  test('destinations by CIDR and port', () => {
    expect(matchDst(rules.destinations, '10.1.2.3', 5432)).toBe('postgres-primary');
    expect(matchDst(rules.destinations, '10.1.2.3', 5433)).toBeUndefined();
    expect(matchDst(rules.destinations, 'fd00::5', 6379)).toBe('redis');
    expect(matchDst(rules.destinations, '192.168.1.10', 22)).toBe('nas');
    expect(matchDst(rules.destinations, '127.0.0.1', 80)).toBe('loopback');
  });
  test.each([
    [{ services: [{ name: 'x' }] }, /services\[0\]: rule "x" has nothing to match on/],
    [{ services: [{ name: 'x', commm: 'y' }] }, /services\[0\]: unknown key "commm"/],
    [{ services: [{ name: 'x', cmdline: '(' }] }, /services\[0\].cmdline: not a valid regular expression/],
    [{ services: [{ name: 'x', thread: '[' }] }, /services\[0\].thread: not a valid regular expression/],
    [{ services: [{ comm: 'y' }] }, /services\[0\].name: expected a string/],
    [{ destinations: ['10.0.0.0/8 postgres'] }, /destinations\[0\]: expected "CIDR\[:PORT\] -> NAME"/],
    [{ destinations: ['10.0.0.0/40:5432 -> pg'] }, /destinations\[0\]: "10.0.0.0\/40" is not an address/],
    [{ destinations: ['10.0.0.0/8:70000 -> pg'] }, /destinations\[0\]: port "70000"/],
    [{ services: { name: 'x' } }, /services: expected a list/],
  ])('bad rules name the key: %j', (file, msg) => {
    expect(() => parseRules(file as Record<string, unknown>, 'c.yaml')).toThrow(ConfigError);
    expect(() => parseRules(file as Record<string, unknown>, 'c.yaml')).toThrow(msg);
  });
});

function connect(over: Partial<ConnectEvent> = {}): ConnectEvent {
  return {
    type: 'connect', tsNs: 1_764_100_000_000_000_000n, latencyNs: 1_000_000, result: 'ok', errno: 0, synRetrans: 0, pid: 100, tid: 100,
    comm: 'ruby', cgroupId: '1', family: 'ipv4', saddr: '127.0.0.1', sport: 40000, daddr: '10.0.0.7', dport: 5432, ...over,
  };
}

describe('Enricher', () => {
  let root: string;
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-proc-'));
    fs.mkdirSync(path.join(root, '100'));
    fs.writeFileSync(path.join(root, '100', 'cgroup'), `0::/system.slice/docker-${ID}.scope\n`);
    fs.writeFileSync(path.join(root, '100', 'cmdline'), 'node\0/app/dist/main.js\0');
    // pid 5 (a server) in a network namespace where 8080 listens; the agent's own namespace has nothing.
    const hdr = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
    for (const [dir, rows] of [['5', '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n'], ['self', '']]) {
      fs.mkdirSync(path.join(root, dir, 'net'), { recursive: true });
      fs.writeFileSync(path.join(root, dir, 'net', 'tcp'), hdr + rows);
      fs.writeFileSync(path.join(root, dir, 'net', 'tcp6'), hdr);
    }
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  function enricher(useProc: boolean, file: Record<string, unknown> = {}) {
    const stage = new StageCounters(new Metrics(), 'enrich');
    const e = new Enricher(
      { rules: parseRules(file), selfPids: new Set([999]), useProc, procCache: new ProcCache(root), listening: new ListeningPorts(root) },
      stage,
    );
    return { e, stage };
  }

  test('defaults: service = comm, dst = ip:port / [v6]:port; container from /proc when live', () => {
    const { e } = enricher(true);
    expect(e.enrich(connect())).toMatchObject({ service: 'ruby', dst: '10.0.0.7:5432', container: ID });
    expect(e.enrich(connect({ pid: 101, family: 'ipv6', daddr: 'fd00::1', dport: 443 }))).toMatchObject({ service: 'ruby', dst: '[fd00::1]:443' });
    expect(e.enrich(connect({ pid: 101 }))!.container).toBeUndefined();
  });

  test('rules and imports: no /proc for imports', () => {
    const file = { services: [{ name: 'nest', cmdline: 'dist/main' }], destinations: ['10.0.0.0/8:5432 -> pg'] };
    expect(enricher(true, file).e.enrich(connect())).toMatchObject({ service: 'nest', dst: 'pg' });
    const imp = enricher(false, file).e.enrich(connect());
    expect(imp).toMatchObject({ service: 'ruby', dst: 'pg' });
    expect(imp!.container).toBeUndefined();
  });

  test('comm is the process: the default service whatever the thread; thread: rules match the thread name, which stays a field', () => {
    const file = { services: [{ name: 'hikari', comm: 'java', thread: '^HikariPool-\\d+ ' }] };
    const { e } = enricher(false, file);
    const a = e.enrich(connect({ comm: 'python3', thread: 'pool-worker-3' }))!;
    const b = e.enrich(connect({ comm: 'python3', thread: 'pool-worker-4' }))!;
    expect([a.service, a.comm, b.service, b.comm]).toEqual(['python3', 'python3', 'python3', 'python3']);
    expect((a as EnrichedConnect).thread).toBe('pool-worker-3');
    // The same pid and comm, two threads: the rule sees each thread (not a service cached per process).
    expect(e.enrich(connect({ pid: 7, comm: 'java', thread: 'HikariPool-1 connection adder' }))!.service).toBe('hikari');
    expect(e.enrich(connect({ pid: 7, comm: 'java', thread: 'main' }))!.service).toBe('java');
    expect(e.enrich(connect({ pid: 7, comm: 'java' }))!.service).toBe('java');
  });

  test("the agent's own connections and inbound sessions are dropped and counted", () => {
    const { e, stage } = enricher(true);
    expect(e.enrich(connect({ pid: 999 }))).toBeNull();
    const session = (sport: number, dport: number): SessionEvent => ({
      type: 'session', tsNs: 1n, lifespanMs: 1, txKb: 0, rxKb: 0, pid: 5, comm: 'srv', family: 'ipv4', saddr: '127.0.0.1', sport, daddr: '127.0.0.1', dport,
    });
    // Local port 8080 (0x1F90) listens in pid 5's namespace (not the agent's): accepted, dropped.
    expect(e.enrich(session(8080, 50000))).toBeNull();
    expect(e.takeSessions()).toEqual([]);
    expect(e.enrich(session(50000, 8080))).toBeNull();
    expect(e.takeSessions()).toMatchObject([{ dst: '127.0.0.1:8080' }]);
    expect(stage.droppedCount('self')).toBe(1);
    expect(stage.droppedCount('inbound_session')).toBe(1);
    const imp = enricher(false).e;
    imp.enrich(session(5432, 40000)); // import: remote port ephemeral, local not
    expect(imp.takeSessions('all')).toEqual([]);
  });
});
