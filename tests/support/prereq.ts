/**
 * Tests that need something from the machine (root, eBPF, the test InfluxDB) declare it here.
 * Missing prerequisite: under CI=true the suite fails with the reason; elsewhere it is skipped and the
 * reason is printed, so a skip is never silent.
 */
import fs from 'node:fs';

export function describeWith(missing: string | null, title: string, fn: () => void): void {
  if (missing === null) {
    describe(title, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(title, () => {
      test(`prerequisite: ${missing}`, () => {
        throw new Error(`${title}: cannot run: ${missing} (CI=true, so this is a failure, not a skip)`);
      });
    });
    return;
  }
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED ${title}: ${missing}`);
  describe.skip(`${title} [skipped: ${missing}]`, fn);
}

/** Why root + eBPF tests cannot run here, or null when they can. */
export function missingRootEbpf(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (run: sudo npm test)';
  if (!fs.existsSync('/sys/kernel/btf/vmlinux')) return 'kernel has no BTF (/sys/kernel/btf/vmlinux missing)';
  return null;
}
