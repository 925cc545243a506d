/**
 * The cgroup_id -> path resolver against this machine's real cgroup v2 hierarchy (root: it makes cgroups).
 * Private cgroup namespaces are exercised for real (unshare) in tests/agent-attribution.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describeWith, missingRootEbpf } from '../../../tests/support/prereq';
import { CGROUP2_ROOT_INO, cgroup2Mounts, cgroup2PathOf, CgroupResolver } from './cgroup';
import { containerFromCgroup } from './container';

const HEX = '3f2a9c1b0d4e'.repeat(5) + 'abcd';

function missingCgroup2(): string | null {
  const m = missingRootEbpf();
  if (m) return m;
  const mounts = cgroup2Mounts(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
  return mounts.length > 0 ? null : 'no cgroup v2 hierarchy is mounted';
}

describe('mountinfo and /proc/PID/cgroup', () => {
  test('cgroup2 mounts with their roots, escapes decoded; hybrid hosts (v1 + unified) included', () => {
    // Lines as this machine (hybrid: v1 controllers + /sys/fs/cgroup/unified) and a private namespace print them.
    const text = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
      '60 50 0:38 /.. /host\\040cg rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n');
    expect(cgroup2Mounts(text)).toEqual([
      { root: '/', mountPoint: '/sys/fs/cgroup/unified' },
      { root: '/..', mountPoint: '/host cg' },
    ]);
    expect(cgroup2PathOf('4:memory:/x\n0::/system.slice/cron.service\n')).toBe('/system.slice/cron.service');
    expect(cgroup2PathOf('4:memory:/x\n')).toBeUndefined();
  });
});

describeWith(missingCgroup2(), 'CgroupResolver on the real cgroup v2 hierarchy', () => {
  const mount = cgroup2Mounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')).find((m) => fs.statSync(m.mountPoint).ino === CGROUP2_ROOT_INO)!.mountPoint;
  const top = `tcplat-cgtest-${process.pid}`;
  const made: string[] = [];
  function mk(rel: string): string {
    const abs = path.join(mount, rel);
    fs.mkdirSync(abs);
    made.push(abs);
    return String(fs.statSync(abs).ino);
  }
  afterAll(() => {
    // Deepest first; cgroup directories are removed with rmdir (their files are not regular files).
    for (const d of made.reverse()) if (fs.existsSync(d)) fs.rmdirSync(d);
  });

  test('an id resolves to its path, keeps resolving after the cgroup is removed, and a later cgroup is found by a new walk', () => {
    const topId = mk(top);
    const scope = `${top}/docker-${HEX}.scope`;
    const scopeId = mk(scope);
    // A clock that moves 1 s per reading: walks are never held back by the rate limit here.
    let now = 0;
    const r = new CgroupResolver({ minRewalkMs: 0, now: () => (now += 1000) });
    expect(r.state).toMatchObject({ mountPoint: mount, hostView: true, namespaceRoot: '/' });
    expect(r.resolve(scopeId)).toBe(`/${scope}`);
    expect(r.resolve(topId)).toBe(`/${top}`);
    expect(containerFromCgroup(`0::${r.resolve(scopeId)}`)).toEqual({ id: HEX, runtime: 'docker' });
    const walks = r.stats.walks;
    // The job's cgroup goes away (its scope is removed when it exits): the id still names it.
    fs.rmdirSync(path.join(mount, scope));
    expect(r.resolve(scopeId)).toBe(`/${scope}`);
    expect(r.stats.walks).toBe(walks);
    // A cgroup made after the walk: one new walk finds it.
    const laterId = mk(`${top}/cron-7.scope`);
    expect(r.resolve(laterId)).toBe(`/${top}/cron-7.scope`);
    expect(r.stats.walks).toBe(walks + 1);
  });

  test('an id that is gone before any walk saw it is unresolved, counted, and costs one walk only', () => {
    const goneId = mk(`${top}/gone.scope`);
    fs.rmdirSync(path.join(mount, `${top}/gone.scope`));
    made.pop();
    const r = new CgroupResolver({ minRewalkMs: 0 });
    const walks = r.stats.walks;
    for (let i = 0; i < 50; i++) expect(r.resolve(goneId)).toBeUndefined();
    expect(r.stats.walks - walks).toBeLessThanOrEqual(1);
    expect(r.stats.unresolved).toBe(50);
    expect(r.resolve('0')).toBeUndefined();
  });

  test('walks are bounded: past maxDirs the walk stops and says so', () => {
    mk(`${top}/a`);
    mk(`${top}/b`);
    const warnings: string[] = [];
    const log = { info() {}, debug() {}, error() {}, warn: (_o: object, m?: string) => warnings.push(m ?? '') };
    const r = new CgroupResolver({ minRewalkMs: 0, maxDirs: 2, log });
    expect(r.resolve('999999999')).toBeUndefined();
    expect(r.stats.truncatedWalks).toBe(1);
    expect(r.stats.dirsWalked).toBe(2);
    expect(warnings.some((w) => w.includes('stopped after 2 directories'))).toBe(true);
  });

  test('background walks: a cgroup that lived past one is resolved after it is gone, without a walk on the miss', () => {
    let now = 0;
    const r = new CgroupResolver({ minRewalkMs: 0, now: () => now });
    r.tick();
    const id = mk(`${top}/job-tick.scope`);
    now += 1000;
    r.tick(); // too soon: no walk
    const walks = r.stats.walks;
    now += 5000;
    r.tick();
    expect(r.stats.walks).toBe(walks + 1);
    fs.rmdirSync(path.join(mount, `${top}/job-tick.scope`));
    made.pop();
    expect(r.resolve(id)).toBe(`/${top}/job-tick.scope`);
    expect(r.stats.walks).toBe(walks + 1);
  });

  test('rate: a stream of new unknown ids walks at most once per minRewalkMs', () => {
    let now = 0;
    const r = new CgroupResolver({ minRewalkMs: 1000, now: () => now });
    const before = r.stats.walks;
    for (let i = 0; i < 100; i++) r.resolve(String(900_000_000 + i));
    expect(r.stats.walks - before).toBe(1);
    now += 1000;
    r.resolve('900000500');
    expect(r.stats.walks - before).toBe(2);
  });
});
