/**
 * Container identity from /proc/PID/cgroup: docker, containerd (plain and CRI), cri-o, podman, and the
 * Kubernetes pod uid (cgroupfs and systemd drivers, where the uid's dashes become underscores).
 */

export interface ContainerInfo {
  /** Full 64-hex container id, when the cgroup path names one. */
  id?: string;
  runtime?: 'docker' | 'containerd' | 'cri-o' | 'podman' | 'kubernetes' | 'unknown';
  podUid?: string;
}

const ID = '([0-9a-f]{64})';
const RULES: { re: RegExp; runtime: ContainerInfo['runtime'] }[] = [
  { re: new RegExp(`(?:^|/)docker-${ID}\\.scope$`), runtime: 'docker' },
  { re: new RegExp(`/docker/${ID}$`), runtime: 'docker' },
  { re: new RegExp(`(?:^|/)cri-containerd-${ID}\\.scope$`), runtime: 'containerd' },
  { re: new RegExp(`(?:^|/)crio-${ID}\\.scope$`), runtime: 'cri-o' },
  { re: new RegExp(`(?:^|/)libpod-${ID}\\.scope(?:/container)?$`), runtime: 'podman' },
  { re: new RegExp(`/libpod_parent/libpod-${ID}$`), runtime: 'podman' },
  { re: new RegExp(`/kubepods[^ ]*/pod[0-9a-f_-]{36}/${ID}$`), runtime: 'kubernetes' },
  { re: new RegExp(`/containerd/${ID}$`), runtime: 'containerd' },
];
const POD = /pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:\/|$)/;

/** The cgroup paths of a /proc/PID/cgroup file (v2 `0::/path` and v1 `N:controllers:/path` lines). */
export function cgroupPaths(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    const j = i < 0 ? -1 : line.indexOf(':', i + 1);
    if (j > 0) out.push(line.slice(j + 1));
  }
  return out;
}

export function containerFromCgroup(text: string): ContainerInfo {
  const info: ContainerInfo = {};
  for (const path of cgroupPaths(text)) {
    if (path.includes('crio-conmon-')) continue;
    if (!info.id) {
      for (const r of RULES) {
        const m = r.re.exec(path);
        if (m) {
          info.id = m[1];
          info.runtime = r.runtime;
          break;
        }
      }
    }
    if (!info.podUid) {
      const p = POD.exec(path);
      if (p) info.podUid = p[1].replace(/_/g, '-');
    }
  }
  if (info.podUid && !info.runtime) info.runtime = 'kubernetes';
  return info;
}

/** The value of the `container` field: the container id, else `pod:<uid>`, else undefined. */
export function containerLabel(c: ContainerInfo): string | undefined {
  return c.id ?? (c.podUid ? `pod:${c.podUid}` : undefined);
}
