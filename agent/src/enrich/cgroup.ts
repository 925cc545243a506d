/**
 * The probe's `cgroup_id` -> the cgroup v2 path it names (and so the container), with no /proc.
 *
 * Why: /proc/PID is gone by the time a short-lived client's failed connect is reported (psql, a cron job),
 * but the kernel stamped the event with the id of the cgroup the task ran in. On cgroup v2 that id is the
 * inode number of the cgroup's directory in the cgroup2 mount (kernfs node id; bpf_get_current_cgroup_id()
 * and name_to_handle_at() agree), so a walk of the mount by inode finds its path. The walk is cached:
 * cgroup ids are never reused while the kernel runs (64-bit kernfs ids only grow), so a resolved id stays
 * right even after its directory is gone. An unknown id triggers one new walk, at most once per
 * `minRewalkMs` (default 20 ms) and at most 10 % of the time (ten times the last walk's duration apart), over
 * at most `maxDirs` directories: a burst of new short-lived cgroups (a cron minute) resolves within ms.
 *
 * Namespaces: inside a private cgroup namespace (Docker's default on cgroup v2; every Kubernetes pod on
 * containerd with cgroup v2) /proc/PID/cgroup and a cgroup2 mount made there are relative to the
 * namespace root, which is the agent's own container. This module finds the host's view when it can:
 * - a cgroup2 mount whose root directory is the hierarchy's root (inode 1): a bind mount of the host's
 *   /sys/fs/cgroup (the DaemonSet's hostPath, compose's volume) is one, whatever our namespace;
 * - the real path of our namespace root (to map /proc/PID/cgroup paths, which the kernel prints relative
 *   to it, `/../..` included): the inode of a namespace-local mount's root looked up in the host view; or,
 *   with only the host view, the cgroup at the depth the host mount's `/..` root says whose cgroup.procs
 *   holds our pid.
 * Without a host view only cgroups inside our own namespace resolve; a warning says what to set
 * (`cgroup: host` in compose, `--cgroupns=host` for docker run, the host's /sys/fs/cgroup mounted).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../types';

/** The cgroup v2 root directory's inode number (kernfs id of the hierarchy's root). */
export const CGROUP2_ROOT_INO = 1;

export interface Cgroup2Mount {
  /** Where it is mounted, in our mount namespace. */
  mountPoint: string;
  /** The mount's root as /proc/self/mountinfo shows it: relative to our cgroup namespace (`/..` = above it). */
  root: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The cgroup2 mounts listed in a /proc/PID/mountinfo text, in order. */
export function cgroup2Mounts(mountinfo: string): Cgroup2Mount[] {
  const out: Cgroup2Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const [fstype] = line.slice(sep + 3).split(' ');
    if (fstype !== 'cgroup2') continue;
    const f = line.slice(0, sep).split(' ');
    if (f.length < 5) continue;
    out.push({ root: unescapeMountField(f[3]), mountPoint: unescapeMountField(f[4]) });
  }
  return out;
}

/** The cgroup v2 path of a /proc/PID/cgroup text (its `0::` line), or undefined on a v1-only host. */
export function cgroup2PathOf(procCgroup: string): string | undefined {
  for (const line of procCgroup.split('\n')) if (line.startsWith('0::')) return line.slice(3);
  return undefined;
}

/** `a` and `b` joined and normalised as an absolute cgroup path (`/..` above the root stays at the root). */
function joinCgroup(a: string, b: string): string {
  const p = path.posix.normalize('/' + a + '/' + b);
  return p.length > 1 ? p.replace(/\/+$/, '') : '/';
}

function ino(p: string): number | null {
  try {
    return fs.statSync(p).ino;
  } catch {
    return null;
  }
}

export interface CgroupResolverOptions {
  /** Where /proc is (tests point it elsewhere only for mountinfo and self; the walk is always real). */
  procRoot?: string;
  /** Read instead of `${procRoot}/self/mountinfo` (tests). */
  mountinfo?: string;
  /** Read instead of `${procRoot}/self/cgroup` (tests). */
  selfCgroup?: string;
  selfPid?: number;
  minRewalkMs?: number;
  maxDirs?: number;
  /** Resolved ids kept beyond those of the last walk (ids of removed cgroups, for late events). */
  maxEntries?: number;
  now?: () => number;
  log?: Logger;
}

export interface CgroupResolverState {
  /** The mount walked (host view when found), or null when no cgroup v2 is mounted. */
  mountPoint: string | null;
  /** True when the mount walked shows the whole hierarchy (its root is inode 1). */
  hostView: boolean;
  /** Real path of our cgroup namespace root ('/' in the host's namespace), or null when it cannot be known. */
  namespaceRoot: string | null;
  walks: number;
  dirsWalked: number;
  truncatedWalks: number;
  resolved: number;
  unresolved: number;
  cached: number;
}

export class CgroupResolver {
  private readonly paths = new Map<string, string>();
  private readonly unknown = new Set<string>();
  private lastWalk = -Infinity;
  /** How long the last walk took: walks are at most 10 % of the time (and at most one per minRewalkMs). */
  private lastWalkMs = 0;
  private mount: string | null = null;
  private hostView = false;
  private nsRoot: string | null = null;
  /** Prefix of the walked paths: the real path of the walked mount's root ('' when it is the host root). */
  private walkPrefix: string | null = '';
  private readonly o: Required<Omit<CgroupResolverOptions, 'mountinfo' | 'selfCgroup' | 'log'>> & Pick<CgroupResolverOptions, 'mountinfo' | 'selfCgroup' | 'log'>;
  readonly stats = { walks: 0, dirsWalked: 0, truncatedWalks: 0, resolved: 0, unresolved: 0 };

  constructor(opts: CgroupResolverOptions = {}) {
    this.o = {
      procRoot: '/proc',
      selfPid: process.pid,
      minRewalkMs: 20,
      maxDirs: 100_000,
      maxEntries: 100_000,
      now: Date.now,
      ...opts,
    };
    this.detect();
  }

  private read(file: string, override: string | undefined): string {
    if (override !== undefined) return override;
    try {
      return fs.readFileSync(`${this.o.procRoot}/${file}`, 'utf8');
    } catch {
      return '';
    }
  }

  /** Pick the mount to walk and find our namespace root's real path. */
  private detect(): void {
    const mounts = cgroup2Mounts(this.read('self/mountinfo', this.o.mountinfo)).filter((m) => ino(m.mountPoint) !== null);
    const selfNs = cgroup2PathOf(this.read('self/cgroup', this.o.selfCgroup)) ?? '/';
    if (mounts.length === 0) {
      this.o.log?.warn({}, 'no cgroup v2 hierarchy is mounted: the probe\'s cgroup_id cannot be resolved to a cgroup path or container, which then come from /proc/PID/cgroup while the process lives (mount one: mount -t cgroup2 none /sys/fs/cgroup)');
      return;
    }
    const host = mounts.find((m) => ino(m.mountPoint) === CGROUP2_ROOT_INO);
    // A mount whose root is shown as "/" but is not the hierarchy's root was made inside our namespace.
    const local = mounts.find((m) => m.root === '/' && ino(m.mountPoint) !== CGROUP2_ROOT_INO);
    if (host) {
      this.mount = host.mountPoint;
      this.hostView = true;
      this.walkPrefix = '';
      if (host.root === '/') this.nsRoot = '/';
      else {
        // The host's root seen from a private namespace: "/.." once per level our namespace root is below it.
        this.walk();
        if (local) this.nsRoot = this.lookup(String(ino(local.mountPoint))) ?? null;
        if (this.nsRoot === null && /^\/\.\.(\/\.\.)*$/.test(host.root)) this.nsRoot = this.findOwnNamespaceRoot(host.root.split('/').length - 1, selfNs);
      }
    } else {
      // Only our namespace's subtree is visible: its paths are relative to the namespace root.
      const m = local ?? mounts[0];
      this.mount = m.mountPoint;
      this.walkPrefix = m.root.startsWith('/..') ? null : m.root === '/' ? '' : m.root;
      this.nsRoot = null;
    }
    if (this.nsRoot !== '/') {
      this.o.log?.warn(
        { mount: this.mount, hostView: this.hostView, namespaceRoot: this.nsRoot },
        this.hostView
          ? `the agent runs in a private cgroup namespace (root ${this.nsRoot ?? 'unknown'}); cgroup ids resolve through the host's hierarchy at ${this.mount}` +
              (this.nsRoot === null ? ', but /proc/PID/cgroup paths stay relative to the namespace: run the agent in the host cgroup namespace (compose: cgroup: host; docker run --cgroupns=host)' : '')
          : `the agent runs in a private cgroup namespace and sees only its own subtree of cgroup v2 (${this.mount}): other containers' and the host's cgroups cannot be resolved and cgroup: rules see namespace-relative paths. Run it in the host cgroup namespace (compose: cgroup: host; docker run --cgroupns=host) or mount the host's /sys/fs/cgroup`,
      );
    }
  }

  /** The real path of our namespace root: the cgroup `depth` levels down whose cgroup.procs holds our pid, less our own relative path. */
  private findOwnNamespaceRoot(depthAboveNs: number, selfNs: string): string | null {
    const selfDepth = selfNs === '/' ? 0 : selfNs.split('/').length - 1;
    const want = depthAboveNs + selfDepth;
    const pid = String(this.o.selfPid);
    for (const p of this.paths.values()) {
      const depth = p === '/' ? 0 : p.split('/').length - 1;
      if (depth !== want) continue;
      let procs: string;
      try {
        procs = fs.readFileSync(path.join(this.mount!, p, 'cgroup.procs'), 'utf8');
      } catch {
        continue;
      }
      if (procs.split('\n').includes(pid)) {
        const parts = p.split('/').filter(Boolean);
        return '/' + parts.slice(0, parts.length - selfDepth).join('/');
      }
    }
    return null;
  }

  private lookup(id: string): string | undefined {
    return this.paths.get(id);
  }

  /** Walk the mount: every directory's inode -> its cgroup path. Bounded by maxDirs. */
  private walk(): void {
    if (this.mount === null) return;
    this.lastWalk = this.o.now();
    const t0 = performance.now();
    this.stats.walks++;
    const seen = new Map<string, string>();
    const prefix = this.walkPrefix ?? '';
    const stack: string[] = [''];
    let dirs = 0;
    let truncated = false;
    while (stack.length > 0) {
      const rel = stack.pop()!;
      const abs = this.mount + rel;
      const i = ino(abs);
      if (i === null) continue; // removed while we walked
      dirs++;
      seen.set(String(i), joinCgroup(prefix, rel));
      if (dirs >= this.o.maxDirs) {
        truncated = true;
        break;
      }
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(abs, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) if (e.isDirectory()) stack.push(`${rel}/${e.name}`);
    }
    this.stats.dirsWalked += dirs;
    if (truncated) {
      this.stats.truncatedWalks++;
      this.o.log?.warn({ mount: this.mount, maxDirs: this.o.maxDirs }, `cgroup walk stopped after ${this.o.maxDirs} directories: some cgroup ids stay unresolved`);
    }
    // Ids of cgroups removed since the last walk stay (late events of short-lived jobs), within a bound.
    if (this.paths.size + seen.size > this.o.maxEntries) this.paths.clear();
    for (const [k, v] of seen) this.paths.set(k, v);
    this.lastWalkMs = performance.now() - t0;
  }

  /**
   * The cgroup v2 path of a probe `cgroup_id` (decimal), or undefined when it is not (or no longer) in the
   * hierarchy. Paths are the host's ('/system.slice/x.service'); without a host view, relative to our
   * namespace.
   */
  resolve(id: string): string | undefined {
    if (this.mount === null || id === '0') return undefined;
    let p = this.paths.get(id);
    if (p === undefined && !this.unknown.has(id) && this.o.now() - this.lastWalk >= Math.max(this.o.minRewalkMs, 10 * this.lastWalkMs)) {
      this.walk();
      p = this.paths.get(id);
      // Walked after the event was made, and not found: the cgroup is gone (or outside our view). Never
      // walk for it again: a stream of such ids costs one walk each, not one per event.
      if (p === undefined) {
        if (this.unknown.size >= 65_536) this.unknown.clear();
        this.unknown.add(id);
      }
    }
    if (p === undefined) {
      this.stats.unresolved++;
      return undefined;
    }
    this.stats.resolved++;
    return p;
  }

  /**
   * A walk in the background (the agent calls this at each flush): every `periodMs` at most, and at most
   * 1 % of the time. A cgroup that lived that long is then known even if it is gone when its event is read
   * (an agent behind a burst, a job whose scope is removed at once).
   */
  tick(periodMs = 5000): void {
    if (this.mount === null) return;
    if (this.o.now() - this.lastWalk >= Math.max(periodMs, 100 * this.lastWalkMs)) this.walk();
  }

  /**
   * A cgroup path read from /proc/PID/cgroup (relative to our cgroup namespace, `/..` above it) as the
   * host's path, when our namespace root is known; else as read.
   */
  hostPath(nsPath: string): string {
    if (this.nsRoot === null || this.nsRoot === '/') return nsPath;
    return joinCgroup(this.nsRoot, nsPath);
  }

  get state(): CgroupResolverState {
    return {
      mountPoint: this.mount,
      hostView: this.hostView,
      namespaceRoot: this.nsRoot,
      ...this.stats,
      cached: this.paths.size,
    };
  }
}
