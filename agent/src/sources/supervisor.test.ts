import { silentLogger, type Logger } from '../types';
import { describeCommand, SourceSupervisor } from './supervisor';

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('restarts with doubling backoff, logs stderr, keeps its tail; stop() ends it', async () => {
  const lines: string[] = [];
  const warnings: string[] = [];
  const log: Logger = { ...silentLogger, warn: (_o, m) => warnings.push(m ?? '') };
  const s = new SourceSupervisor({ command: { shell: 'echo out; echo oops >&2; exit 3' }, once: false, log, onLine: (l) => lines.push(l), minBackoffMs: 50, maxBackoffMs: 200 });
  s.start();
  await wait(600);
  // Every exit so far is the command's own (status 3); stop() may then kill a run in progress (SIGTERM).
  expect(s.state.lastExit).toMatchObject({ code: 3 });
  await s.stop();
  expect(s.state.starts).toBeGreaterThanOrEqual(3);
  expect(s.state.starts).toBeLessThanOrEqual(6); // 50, 100, 200, 200 ms: not a busy loop
  expect(s.state.restarts).toBe(s.state.starts - 1);
  expect(lines.every((l) => l === 'out')).toBe(true);
  expect(s.state.stderrTail).toContain('oops');
  expect([3, null]).toContain(s.state.lastExit?.code);
  expect(warnings.some((w) => /source exited with status 3; restarting in 50 ms/.test(w))).toBe(true);
});

test('--once: no restart; the end resolves with the exit status; partial last lines and long lines', async () => {
  const lines: string[] = [];
  const s = new SourceSupervisor({ command: { shell: "printf 'a\\nb\\nlast-without-newline'" }, once: true, log: silentLogger, onLine: (l) => lines.push(l), maxLineBytes: 10 });
  s.start();
  expect(await s.ended).toEqual({ code: 0, signal: null });
  expect(lines).toEqual(['a', 'b']);
  expect(s.state.longLinesDropped).toBe(1);
  expect(s.state.starts).toBe(1);
});

test('a command that cannot run is reported, not a crash', async () => {
  const s = new SourceSupervisor({ command: { argv: ['/nonexistent/tcplife'] }, once: true, log: silentLogger, onLine: () => undefined });
  s.start();
  const end = await s.ended;
  expect(end.code).toBe(127);
  expect(s.state.startError).toMatch(/ENOENT/);
});

test('stop() kills the whole process group of a shell command', async () => {
  const s = new SourceSupervisor({ command: { shell: 'sleep 30 & sleep 30; wait' }, once: false, log: silentLogger, onLine: () => undefined });
  s.start();
  await wait(200);
  const pid = s.state.pid!;
  await s.stop(500);
  // The group's processes are gone once they are reaped (by init: they were orphaned).
  const gone = () => {
    try {
      process.kill(-pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  for (let i = 0; i < 40 && !gone(); i++) await wait(50);
  expect(gone()).toBe(true);
});

test('describeCommand quotes what needs quoting', () => {
  expect(describeCommand({ argv: ['/usr/sbin/tcplife', '-T'] })).toBe('/usr/sbin/tcplife -T');
  expect(describeCommand({ shell: 'cat a b' })).toBe('sh -c "cat a b"');
  expect(describeCommand({ stdin: true })).toBe('(stdin)');
});

test('an over-long line (2.5 MiB, arriving in many pipe chunks) is dropped whole and counted once: its tail is never a line', async () => {
  const lines: string[] = [];
  // The long line ends with what would parse as an event if its tail were taken for a line.
  const tail = '{"type":"connect","ts_ns":1}';
  const s = new SourceSupervisor({
    command: { shell: `echo before; head -c 2621440 /dev/zero | tr '\\0' x; echo '${tail}'; echo after; head -c 3000000 /dev/zero | tr '\\0' y; echo; echo last` },
    once: true,
    log: silentLogger,
    onLine: (l) => lines.push(l),
  });
  s.start();
  expect(await s.ended).toEqual({ code: 0, signal: null });
  expect(lines).toEqual(['before', 'after', 'last']);
  expect(s.state.longLinesDropped).toBe(2);
});

test('a long line that ends exactly where a chunk ends does not swallow the next line', async () => {
  const lines: string[] = [];
  const s = new SourceSupervisor({ command: { shell: "printf '0123456789abcdef\\nok\\n'" }, once: true, log: silentLogger, onLine: (l) => lines.push(l), maxLineBytes: 10 });
  s.start();
  await s.ended;
  expect(lines).toEqual(['ok']);
  expect(s.state.longLinesDropped).toBe(1);
});
