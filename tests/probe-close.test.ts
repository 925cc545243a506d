/**
 * Close events (issue 15), real kernel and real sockets on loopback, as root: ground truth the test makes
 * itself. A client (python3, exact socket calls) talks to a server in the same script; the probe reports
 * one `close` line per outbound connection that reached ESTABLISHED, joined to its `connect` by ts_ns:
 * - held 1.5 s with 100,000 bytes sent, closed by the client: lifespan 1.5-1.7 s, bytes exact, `local`;
 * - a server closing with SO_LINGER 0 (RST): `reset_in`; the client doing it: `reset_out`; the server
 *   closing first: `peer`;
 * - data segments dropped on the input hook by nftables: retrans >= 1, at most the kernel's own
 *   RetransSegs delta (/proc/net/snmp: host-wide, so other traffic can only add to it);
 * - --no-close, --sessions-max (losses counted), --mode hist (no close lines).
 * Prerequisites as in probe.test.ts plus python3; under CI=true a missing one fails (tests/support/prereq.ts).
 */
import * as fs from 'fs';
import { kernelCounter, retransSegs, runScenario } from './support/close-scenarios';
import { freePort } from './support/net';
import { describeWith } from './support/prereq';
import { CloseLine, NftTable, Probe, commandWorks, missing as missingProbe, useProbeHooks } from './support/probe';

const missing = missingProbe ?? (commandWorks('python3', ['-c', 'import socket, struct']) ? null : 'python3 is missing: run scripts/setup');

const toZeroWindowAdv = () => kernelCounter('/proc/net/netstat', 'TcpExt:', 'TCPToZeroWindowAdv');

const closeFrom = (p: Probe, port: number, sport: number): CloseLine | undefined => p.closes.find((c) => c.dport === port && c.sport === sport);

describeWith(missing, 'tcplat-probe close events (real sockets, loopback)', () => {
  useProbeHooks();
  jest.setTimeout(60000);

  test('a connection held 1.5 s with 100,000 bytes sent, closed by the client: lifespan, bytes, local, joined to its connect', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--stats-interval', '0', '--dport', String(port)]);
    const [, res] = await runScenario(['hold', String(port)]);
    const [close] = await probe.waitCloses(port, 1);
    expect(close.sport).toBe(res.sport);
    // 1.5-1.7 s; the upper bound is what the client itself saw from before connect() to the server's FIN
    // (on a loaded machine the server can take longer to answer: that is the connection's real life); no more.
    expect(close.lifespan_ns / 1e6).toBeGreaterThanOrEqual(1500);
    expect(close.lifespan_ns / 1e6).toBeLessThanOrEqual(res.elapsed_ms);
    expect(close.bytes_sent).toBe(100000); // payload only: the SYN and FIN sequence numbers are not bytes
    expect(close.bytes_received).toBe(res.reply); // the server's JSON answer, its FIN not counted
    expect(close.closed_by).toBe('local');
    expect(close.comm).toBe('python3');
    expect(close.srtt_us).toBeGreaterThan(0);
    expect(close.srtt_us).toBeLessThan(200000);
    expect(close.retrans).toBe(0);
    // The join key: the connect event of the same socket has the same ts_ns, digit for digit.
    const connect = probe.events.find((e) => e.dport === port && e.sport === res.sport)!;
    expect(connect.result).toBe('ok');
    expect(close.tsBig).toBe(connect.tsBig);
    expect(close.pid).toBe(connect.pid);
    expect(close.cgroup_id).toBe(connect.cgroup_id);
    // The server's accepted socket is not an outbound connection: one close line.
    expect(probe.closes).toHaveLength(1);
    expect(await probe.stop()).toBe(0);
    expect(probe.stats.at(-1)).toMatchObject({ dropped: 0, drops: { session_full: 0, close_ringbuf_full: 0 } });
    expect(probe.stats.at(-1)!.closes).toBe(probe.closes.length);
  });

  test('who closed it: reset by the peer (SO_LINGER 0 on the server), by this end, and the peer closing first', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--stats-interval', '0', '--dport', String(port)]);
    const [, res] = await runScenario(['resets', String(port)]);
    await probe.waitCloses(port, 3);
    expect(probe.closes).toHaveLength(3);
    expect(closeFrom(probe, port, res.reset_in)).toMatchObject({ closed_by: 'reset_in', bytes_sent: 1 });
    expect(closeFrom(probe, port, res.reset_out)).toMatchObject({ closed_by: 'reset_out', bytes_sent: 1 });
    expect(closeFrom(probe, port, res.peer)).toMatchObject({ closed_by: 'peer', bytes_sent: 1, bytes_received: res.peer_bytes });
  });

  test('data segments dropped on the input hook: retransmits counted, within the kernel\'s own RetransSegs delta', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--stats-interval', '0', '--dport', String(port)]);
    // Every 4th data segment (no SYN/FIN/RST, with payload) to the server is dropped as it comes in.
    new NftTable([`tcp dport ${port} tcp flags & (syn | fin | rst) == 0 meta length > 200 numgen inc mod 4 == 0 drop`], 'input');
    const before = retransSegs();
    const [, res] = await runScenario(['trickle', String(port)]);
    const after = retransSegs();
    const [close] = await probe.waitCloses(port, 1);
    expect(close.sport).toBe(res.sport);
    expect(close.retrans).toBeGreaterThanOrEqual(1);
    expect(close.retrans).toBeLessThanOrEqual(after - before);
    expect(close.bytes_sent).toBe(30001); // every byte arrived in the end
    expect(close.closed_by).toBe('local');
  });

  test('--no-close: connects only; --sessions-max: connections beyond it are counted, not reported', async () => {
    const portA = await freePort();
    const off = await Probe.start(['--stats-interval', '0', '--no-close', '--dport', String(portA)]);
    expect(off.stderr).toMatch(/close=off/);
    await runScenario(['resets', String(portA)]);
    await off.waitEvents(portA, 3);
    expect(await off.stop()).toBe(0);
    expect(off.closes).toHaveLength(0);
    expect(off.stats.at(-1)).not.toHaveProperty('closes');

    const portB = await freePort();
    const small = await Probe.start(['--stats-interval', '0', '--sessions-max', '2', '--dport', String(portB)]);
    await runScenario(['many', String(portB), '5']); // five connections open at once
    await small.waitEvents(portB, 5);
    await small.waitCloses(portB, 2);
    expect(await small.stop()).toBe(0);
    expect(small.events).toHaveLength(5); // every connect is still reported
    expect(small.closes).toHaveLength(2);
    expect(small.stats.at(-1)).toMatchObject({ dropped: 3, closes: 2, drops: { session_full: 3 } });
  });

  test('--zero-windows: a receiver that stops reading closes its window; counted once, within the kernel\'s TCPToZeroWindowAdv delta', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--stats-interval', '0', '--zero-windows', '--dport', String(port)]);
    expect(probe.stderr).toMatch(/tcp:tcp_probe/);
    const before = toZeroWindowAdv();
    const [, res] = await runScenario(['zerowin', String(port)]);
    const after = toZeroWindowAdv();
    const [close] = await probe.waitCloses(port, 1);
    expect(close.sport).toBe(res.sport);
    expect(close.bytes_sent).toBe(2000001);
    expect(close.zero_windows).toBeGreaterThanOrEqual(1);
    expect(close.zero_windows).toBeLessThanOrEqual(after - before); // the server advertised them: host-wide count
    // Without the flag the field is absent (not a misleading 0).
    const port2 = await freePort();
    const plain = await Probe.start(['--stats-interval', '0', '--dport', String(port2)]);
    await runScenario(['resets', String(port2)]);
    const [c2] = await plain.waitCloses(port2, 1);
    expect(c2).not.toHaveProperty('zero_windows');
  });

  test('--mode hist reports no close lines', async () => {
    const port = await freePort();
    const probe = await Probe.start(['--stats-interval', '0', '--mode', 'hist', '--hist-interval', '0.2', '--dport', String(port)]);
    expect(probe.stderr).toMatch(/close=off/);
    await runScenario(['resets', String(port)]);
    await probe.until(() => probe.hists.reduce((n, h) => n + h.count, 0) >= 3, 5000, 'three attempts in hist lines');
    expect(await probe.stop()).toBe(0);
    expect(probe.closes).toHaveLength(0);
  });
});
