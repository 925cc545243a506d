/**
 * End-to-end tests of bpf/tcplat-probe: real kernel, real sockets, as root.
 *
 * Ground truth comes from nftables on loopback (each test adds its own
 * `table inet tcplat_test_<random>` and removes it, even on failure):
 *   - drop the first SYN to a port  -> the connect takes one SYN retransmit (~1 s)
 *   - drop every SYN to a port      -> the client's own timeout aborts it
 *   - reject with an ICMP error     -> unreachable / error
 *
 * Prerequisites: Linux, root, kernel BTF, nft, and the probe (built here with
 * `make -C bpf` when missing). Without them the tests are skipped with the
 * reason printed, except under CI=true, where a missing prerequisite fails.
 */
import { spawn, spawnSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as net from 'net';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { freePort } from './support/net';
import {
  ChildConnector, ConnectResult, NftTable, Probe, READY, PROBE, ON_CI, children, cgroup2Mount,
  connectOnce, dropAllSyn, dropFirstSyn, missing, ms, portOf, python3, sleep, startServer, useProbeHooks,
} from './support/probe';

if (missing && ON_CI) {
  describe('tcplat-probe prerequisites', () => {
    test('are present (CI=true)', () => {
      throw new Error(`probe tests cannot run: ${missing}`);
    });
  });
} else if (missing) {
  console.warn(`tests/probe.test.ts skipped: ${missing}`);
}

const describeProbe = missing ? describe.skip : describe;

// ---------------------------------------------------------------- tests

describeProbe('tcplat-probe (real kernel, real sockets)', () => {
  jest.setTimeout(30000);
  const myComm = missing ? '' : fs.readFileSync('/proc/self/comm', 'utf8').trim();

  useProbeHooks();

  test('plain connects: ok, < 5 ms, syn_retrans 0, exact line format, the caller identified', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const probe = await Probe.start(['--dport', String(port)]);
    const results: ConnectResult[] = [];
    for (let i = 0; i < 5; i++) results.push(await connectOnce('127.0.0.1', port));
    const events = await probe.waitEvents(port, 5);
    expect(await probe.stop()).toBe(0);

    expect(results.every((r) => r.ok)).toBe(true);
    expect(events).toHaveLength(5);
    expect(events.map((e) => e.sport).sort()).toEqual(results.map((r) => r.localPort).sort());
    for (const e of events) {
      expect(e.result).toBe('ok');
      expect(e.errno).toBe(0);
      expect(e.syn_retrans).toBe(0);
      expect(ms(e)).toBeLessThan(5);
      expect(e.pid).toBe(process.pid);
      expect(e.tid).toBe(process.pid); // node calls connect() on its main thread
      expect(e.comm).toBe(myComm);
      expect(e.family).toBe('ipv4');
      expect(e.saddr).toBe('127.0.0.1');
      expect(e.daddr).toBe('127.0.0.1');
      expect(e.cgroup_id).toBeGreaterThan(0);
    }
    // exact key order of the documented format
    expect(Object.keys(JSON.parse(events[0].raw))).toEqual([
      'type', 'ts_ns', 'latency_ns', 'result', 'errno', 'syn_retrans', 'pid', 'tid', 'comm', 'thread',
      'cgroup_id', 'family', 'saddr', 'sport', 'daddr', 'dport',
    ]);
    // wall clock: Unix ns, near now; strictly increasing in SYN order
    const nowNs = BigInt(Date.now()) * 1000000n;
    for (const e of events) {
      expect(e.tsBig).toBeGreaterThan(nowNs - 60n * 1000000000n);
      expect(e.tsBig).toBeLessThan(nowNs + 1000000000n);
    }
    for (let i = 1; i < events.length; i++) expect(events[i].tsBig).toBeGreaterThan(events[i - 1].tsBig);
  });

  test('first SYN dropped: ok at 950-1300 ms with syn_retrans 1 (IPv4)', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    new NftTable([dropFirstSyn(port)]);
    const probe = await Probe.start(['--dport', String(port)]);
    const r = await connectOnce('127.0.0.1', port);
    const [e] = await probe.waitEvents(port, 1);
    expect(r.ok).toBe(true);
    expect(e.result).toBe('ok');
    expect(e.syn_retrans).toBe(1);
    expect(ms(e)).toBeGreaterThanOrEqual(950);
    expect(ms(e)).toBeLessThanOrEqual(1300);
    expect(e.sport).toBe(r.localPort);
  });

  test('first SYN dropped over IPv6 (::1): family ipv6, ok at 950-1300 ms, syn_retrans 1', async () => {
    const server = await startServer('::1');
    const port = portOf(server);
    new NftTable([dropFirstSyn(port)]);
    const probe = await Probe.start(['--dport', String(port)]);
    const r = await connectOnce('::1', port);
    const [e] = await probe.waitEvents(port, 1);
    expect(r.ok).toBe(true);
    expect(e).toMatchObject({ result: 'ok', family: 'ipv6', saddr: '::1', daddr: '::1', syn_retrans: 1 });
    expect(ms(e)).toBeGreaterThanOrEqual(950);
    expect(ms(e)).toBeLessThanOrEqual(1300);
  });

  test('IPv4-mapped IPv6 (::ffff:127.0.0.1) is reported as ipv4', async () => {
    const server = await startServer('::'); // dual-stack listener
    const port = portOf(server);
    const probe = await Probe.start(['--dport', String(port)]);
    const sock = net.connect({ host: '::ffff:127.0.0.1', port, family: 6 });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve());
      sock.once('error', reject);
    });
    const localPort = sock.localPort;
    sock.destroy();
    const [e] = await probe.waitEvents(port, 1);
    expect(e).toMatchObject({ result: 'ok', family: 'ipv4', saddr: '127.0.0.1', daddr: '127.0.0.1', sport: localPort });
  });

  test('closed port: refused (ECONNREFUSED) in < 50 ms', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--dport', String(port)]);
    const r = await connectOnce('127.0.0.1', port);
    const [e] = await probe.waitEvents(port, 1);
    expect(r.error).toBe('ECONNREFUSED');
    expect(e).toMatchObject({ result: 'refused', errno: 111, syn_retrans: 0 });
    expect(ms(e)).toBeLessThan(50);
    expect(e.sport).toBeGreaterThan(0);
  });

  test('all SYNs dropped, client gives up after 300 ms: aborted at 250-500 ms', async () => {
    const port = await freePort();
    new NftTable([dropAllSyn(port)]);
    const probe = await Probe.start(['--dport', String(port)]);
    const r = await connectOnce('127.0.0.1', port, 300);
    const [e] = await probe.waitEvents(port, 1);
    expect(r.error).toBe('client timeout');
    expect(e).toMatchObject({ result: 'aborted', errno: 0, syn_retrans: 0 });
    expect(ms(e)).toBeGreaterThanOrEqual(250);
    expect(ms(e)).toBeLessThanOrEqual(500);
  });

  test('ICMP errors and the kernel timeout: unreachable, error (+errno), timeout', async () => {
    const unreachable = await freePort();
    const other = await freePort();
    const timeout = await freePort();
    const py = python3();
    new NftTable([
      `tcp dport ${unreachable} reject with icmp type host-unreachable`,
      `tcp dport ${other} reject with icmp type prot-unreachable`,
      dropAllSyn(timeout),
    ]);
    const probe = await Probe.start(['--dport', String(unreachable), '--dport', String(other), '--dport', String(timeout)]);
    // On loopback the ICMP error comes back while connect() still holds the
    // socket: the kernel keeps it as a soft error, node reads it (SO_ERROR)
    // and closes the socket itself; the probe still finds the ICMP's record.
    const jobs: Promise<unknown>[] = [connectOnce('127.0.0.1', unreachable), connectOnce('127.0.0.1', other)];
    if (py) {
      // TCP_SYNCNT=1: the kernel gives up after one retransmit (~3 s): ETIMEDOUT
      jobs.push(
        new Promise<void>((resolve) => {
          const c = spawn(py, ['-c', [
            'import socket',
            's = socket.socket()',
            's.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)',
            'try:',
            `    s.connect(("127.0.0.1", ${timeout}))`,
            'except OSError as e:',
            '    print(e.errno)',
          ].join('\n')], { stdio: 'ignore' });
          children.add(c);
          c.on('exit', () => resolve());
        }),
      );
    } else {
      console.warn('python3 missing: the kernel-timeout case (TCP_SYNCNT) is not exercised');
    }
    const [ru, ro] = (await Promise.all(jobs)) as ConnectResult[];
    expect(ru.error).toBe('EHOSTUNREACH');
    expect(ro.error).toBe('ENOPROTOOPT');
    const [eu] = await probe.waitEvents(unreachable, 1);
    const [eo] = await probe.waitEvents(other, 1);
    expect(eu).toMatchObject({ result: 'unreachable', errno: 113 });
    expect(eo).toMatchObject({ result: 'error', errno: 92 });
    expect(ms(eu)).toBeLessThan(50);
    expect(ms(eo)).toBeLessThan(50);
    if (py) {
      const [et] = await probe.waitEvents(timeout, 1);
      expect(et).toMatchObject({ result: 'timeout', errno: 110 });
      expect(et.syn_retrans).toBeGreaterThanOrEqual(1);
      expect(ms(et)).toBeGreaterThan(2500);
      expect(ms(et)).toBeLessThan(4500);
    }
  });

  test('300 parallel connects: 300 events, sport set = the client sockets\' localPort set, unique ts_ns', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const probe = await Probe.start(['--dport', String(port)]);
    const results = await Promise.all(Array.from({ length: 300 }, () => connectOnce('127.0.0.1', port, 10000)));
    expect(results.filter((r) => !r.ok)).toEqual([]);
    const events = await probe.waitEvents(port, 300);
    await sleep(200); // nothing extra may follow
    expect(probe.eventsTo(port)).toHaveLength(300);
    expect(events.every((e) => e.result === 'ok' && e.pid === process.pid)).toBe(true);
    const sports = events.map((e) => e.sport).sort((a, b) => a - b);
    const local = results.map((r) => r.localPort!).sort((a, b) => a - b);
    expect(sports).toEqual(local);
    expect(new Set(events.map((e) => e.tsBig)).size).toBe(300);
  });

  test('pid, tid and comm are the calling process\'s; comm is JSON-escaped exactly', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    // comm is the basename of the executed path: a symlink to node named with
    // a quote, a backslash and control characters
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tcplat-test-'));
    const name = 'tl"q\\b\tz\x01';
    const link = path.join(dir, name);
    fs.symlinkSync(process.execPath, link);
    try {
      const child = new ChildConnector('127.0.0.1', port, link);
      await child.ready();
      const probe = await Probe.start(['--dport', String(port)]);
      const r = await child.go();
      const [e] = await probe.waitEvents(port, 1);
      expect(r.localPort).toBe(e.sport);
      expect(e.pid).toBe(child.pid);
      expect(e.tid).toBe(child.pid);
      expect(e.comm).toBe(name);
      expect(e.thread).toBe(name); // node connects on its main thread, which bears the process name
      expect(e.raw).toContain('"comm":"tl\\"q\\\\b\\u0009z\\u0001","thread":"tl\\"q\\\\b\\u0009z\\u0001"');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('--pid: only the given process; --exclude-pid: never the given process', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const p = String(port);

    const childA = new ChildConnector('127.0.0.1', port);
    await childA.ready();
    const onlyChild = await Probe.start(['--dport', p, '--pid', String(childA.pid)]);
    expect((await connectOnce('127.0.0.1', port)).ok).toBe(true); // not the child: filtered
    const ra = await childA.go();
    const [ea] = await onlyChild.waitEvents(port, 1);
    await sleep(100);
    expect(onlyChild.eventsTo(port)).toHaveLength(1);
    expect(ea).toMatchObject({ pid: childA.pid, sport: ra.localPort });
    await onlyChild.stop();

    const childB = new ChildConnector('127.0.0.1', port);
    await childB.ready();
    const notMe = await Probe.start(['--dport', p, '--exclude-pid', String(process.pid)]);
    expect((await connectOnce('127.0.0.1', port)).ok).toBe(true); // excluded
    await childB.go();
    const [eb] = await notMe.waitEvents(port, 1);
    await sleep(100);
    expect(notMe.eventsTo(port)).toHaveLength(1);
    expect(eb.pid).toBe(childB.pid);
  });

  test('--pid of another process: nothing from us', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const probe = await Probe.start(['--dport', String(port), '--pid', '1']);
    for (let i = 0; i < 3; i++) expect((await connectOnce('127.0.0.1', port)).ok).toBe(true);
    await sleep(300);
    expect(probe.eventsTo(port)).toHaveLength(0);
  });

  test('--dport: other ports never reported', async () => {
    const a = await startServer('127.0.0.1');
    const b = await startServer('127.0.0.1');
    const probe = await Probe.start(['--dport', String(portOf(a))]);
    expect((await connectOnce('127.0.0.1', portOf(b))).ok).toBe(true);
    expect((await connectOnce('127.0.0.1', portOf(a))).ok).toBe(true);
    await probe.waitEvents(portOf(a), 1);
    await sleep(100);
    expect(probe.events.map((e) => e.dport)).toEqual([portOf(a)]);
  });

  test('--min-latency-us: fast attempts filtered in the kernel, slow ones kept', async () => {
    const server = await startServer('127.0.0.1');
    const fast = portOf(server);
    const slow = await freePort();
    new NftTable([dropAllSyn(slow)]);
    const probe = await Probe.start(['--dport', String(fast), '--dport', String(slow), '--min-latency-us', '200000']);
    for (let i = 0; i < 3; i++) expect((await connectOnce('127.0.0.1', fast)).ok).toBe(true);
    await connectOnce('127.0.0.1', slow, 300);
    const [e] = await probe.waitEvents(slow, 1);
    expect(e.result).toBe('aborted');
    expect(ms(e)).toBeGreaterThanOrEqual(200);
    expect(probe.eventsTo(fast)).toHaveLength(0);
  });

  const cg2 = missing ? null : cgroup2Mount();
  (cg2 ? test : test.skip)('--cgroup: only tasks in that cgroup v2 or below it; cgroup_id is the caller\'s own cgroup', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const dir = path.join(cg2!, `tcplat_test_${randomBytes(4).toString('hex')}`);
    const sub = path.join(dir, 'below');
    fs.mkdirSync(sub, { recursive: true });
    try {
      const child = new ChildConnector('127.0.0.1', port);
      await child.ready();
      fs.writeFileSync(path.join(sub, 'cgroup.procs'), String(child.pid)); // a cgroup below the filtered one
      // relative to the cgroup2 mount point, as the help says
      const probe = await Probe.start(['--dport', String(port), '--cgroup', path.basename(dir)]);
      expect((await connectOnce('127.0.0.1', port)).ok).toBe(true); // we are not in it
      await child.go();
      const [e] = await probe.waitEvents(port, 1);
      await sleep(100);
      expect(probe.eventsTo(port)).toHaveLength(1);
      expect(e.pid).toBe(child.pid);
      expect(e.cgroup_id).toBe(fs.statSync(sub).ino);
    } finally {
      for (let i = 0; i < 50; i++) {
        try {
          if (fs.existsSync(sub)) fs.rmdirSync(sub);
          fs.rmdirSync(dir);
          break;
        } catch {
          await sleep(50); // the child's exit empties the cgroup a moment later
        }
      }
    }
  });
  if (!cg2 && !missing) console.warn('no cgroup v2 hierarchy mounted: the --cgroup test is skipped');

  test('stats lines: exact totals, no drops; SIGTERM exits 0', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const probe = await Probe.start(['--dport', String(port), '--stats-interval', '0.2']);
    for (let i = 0; i < 10; i++) await connectOnce('127.0.0.1', port);
    await probe.waitEvents(port, 10);
    await probe.until(() => probe.stats.some((s) => s.events === 10), 3000, 'a stats line with events=10');
    expect(await probe.stop('SIGTERM')).toBe(0);
    const last = probe.stats[probe.stats.length - 1];
    expect(last).toEqual({
      type: 'stats', ts_ns: expect.any(Number), events: 10, dropped: 0, mode: 'stream', started_ns: expect.any(Number),
      closes: 10,
      drops: { ringbuf_full: 0, storage_alloc: 0, inflight_full: 0, pending_full: 0, hist_full: 0, session_full: 0, close_ringbuf_full: 0, session_stale: 0 },
      missed: { state: 0, retransmit: 0, connect_exit: 0, reset: 0 },
      // TLS (on by default): no handshake was made here; the files found on this host vary by machine
      tls: {
        on: expect.any(Boolean), ok: 0, failed: 0, unjoined: 0, drops: { ringbuf_full: 0 }, not_reported: { role_unknown: 0 },
        files: { attached: expect.any(Number), attach_failed: expect.any(Number), not_openssl: expect.any(Number), go_crypto_tls: expect.any(Number), java: expect.any(Number), unreadable: expect.any(Number) },
      },
    });
    expect(probe.lines[probe.lines.length - 1]).toMatch(/^\{"type":"stats","ts_ns":\d{19},"events":10,"dropped":0,"mode":"stream","started_ns":\d{19},/);
  });

  test('a closed stdout (SIGPIPE/EPIPE) ends the probe with status 0', async () => {
    const probe = await Probe.start(['--stats-interval', '0.05', '--dport', '1']);
    probe.proc.stdout!.destroy();
    await probe.until(() => probe.exitCode !== null || probe.exitSignal !== null, 5000, 'the exit');
    expect(probe.exitSignal).toBeNull();
    expect(probe.exitCode).toBe(0);
  });

  test('--attach tracepoint: the classic tracepoint fallback works too', async () => {
    const server = await startServer('127.0.0.1');
    const port = portOf(server);
    const closed = await freePort();
    const probe = await Probe.start(['--attach', 'tracepoint', '--dport', String(port), '--dport', String(closed)]);
    expect(probe.stderr).toContain(`${READY} (tracepoint`);
    const r = await connectOnce('127.0.0.1', port);
    await connectOnce('127.0.0.1', closed);
    const [ok] = await probe.waitEvents(port, 1);
    const [refused] = await probe.waitEvents(closed, 1);
    expect(ok).toMatchObject({ result: 'ok', sport: r.localPort, pid: process.pid, syn_retrans: 0 });
    expect(refused).toMatchObject({ result: 'refused', errno: 111 });
  });

  test('usage errors, --help, and not root', () => {
    const run = (args: string[], opts: { uid?: number; gid?: number } = {}) =>
      spawnSync(PROBE, args, { encoding: 'utf8', ...opts });
    const unknown = run(['--frobnicate']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain("unknown flag '--frobnicate'");
    for (const bad of [['--dport', '0'], ['--dport', '70000'], ['--pid', 'abc'], ['--min-latency-us', '-1'],
      ['--stats-interval', 'x'], ['--ringbuf-mb', '3'], ['--attach', 'kprobe'], ['--cgroup', '/nonexistent'], ['--dport']]) {
      const r = run(bad);
      expect({ bad, status: r.status }).toEqual({ bad, status: 2 });
      expect(r.stderr).toMatch(/^tcplat-probe: .+ \(see tcplat-probe --help\)\n$/);
    }
    const help = run(['--help']);
    expect(help.status).toBe(0);
    for (const flag of ['--pid', '--exclude-pid', '--cgroup', '--dport', '--min-latency-us', '--stats-interval',
      '--ringbuf-mb', '--attach', '--verbose', '--help', '"type":"connect"', '"type":"stats"', READY]) {
      expect(help.stdout).toContain(flag);
    }
    const nobody = run(['--dport', '80'], { uid: 65534, gid: 65534 });
    if (nobody.error) {
      console.warn(`cannot run the probe as nobody (${nobody.error.message}): not-root check skipped`);
    } else {
      expect(nobody.status).toBe(1);
      expect(nobody.stderr).toContain('not running as root');
      expect(nobody.stderr).toContain('sudo');
    }
  });

  test('root without the BPF capabilities (a locked-down container): a clear "BPF not permitted", exit 1, no output', () => {
    // A real fault, not a fake: setpriv drops every capability before exec, as a container without
    // CAP_BPF/CAP_PERFMON/CAP_SYS_ADMIN would, so the kernel refuses bpf(2) with EPERM.
    const r = spawnSync('setpriv', ['--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', '--', PROBE], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('BPF not permitted');
    expect(r.stderr).toMatch(/CAP_BPF, CAP_PERFMON/);
    expect(r.stderr).not.toContain(READY);
  });

  test('no kernel BTF (the file hidden in a private mount namespace): a clear error naming the kernel option, exit 1', () => {
    // The kernel keeps its BTF; what the probe (and libbpf's CO-RE) read is the file, which a tmpfs over
    // /sys/kernel/btf hides for this process only, as on a kernel built without CONFIG_DEBUG_INFO_BTF.
    const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /sys/kernel/btf && exec "$0"', PROBE], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('this kernel has no BTF');
    expect(r.stderr).toContain('CONFIG_DEBUG_INFO_BTF=y');
    expect(fs.existsSync('/sys/kernel/btf/vmlinux')).toBe(true); // the host's view is untouched
  });
});
