import fs from 'node:fs';
import path from 'node:path';
import { TextParser } from '../parse/text';
import type { SessionEvent } from '../types';
import { SessionDirection, type Decided } from './direction';

const FIX = path.join(__dirname, '..', 'parse', 'fixtures');
const NOW_NS = BigInt(Date.UTC(2026, 11, 7, 23, 0, 0)) * 1_000_000n;

function sessions(file: string): SessionEvent[] {
  const p = new TextParser('tcplife', () => NOW_NS);
  const out: SessionEvent[] = [];
  for (const line of fs.readFileSync(path.join(FIX, file), 'utf8').split('\n')) {
    const r = p.parse(line);
    if (r.kind === 'event' && r.event.type === 'session') out.push(r.event);
  }
  return out;
}

function run(evs: SessionEvent[], d = new SessionDirection()): Decided[] {
  const out: Decided[] = [];
  for (const e of evs) out.push(...d.offer(e));
  out.push(...d.releaseAll());
  return out;
}

describe('tcplife: sessions this host accepted told apart from those it opened', () => {
  // Real libbpf-tools tcplife captures (this machine) of loopback connections, so both ends of each: three
  // to a listener on 47011 and two to 7011 (IPv4), two to 47012 (IPv6), one refused (port 1). The
  // accepting end's row comes first, and 47011/47012 are inside the ephemeral range themselves.
  test.each(['libbpf-tcplife-both-ends.txt', 'libbpf-tcplife-both-ends-T.txt', 'libbpf-tcplife-both-ends-w.txt', 'libbpf-tcplife-both-ends-Tw.txt'])(
    '%s: every accepted row is inbound, every opened one outbound: no client port ever becomes a destination',
    (file) => {
      const evs = sessions(file);
      expect(evs).toHaveLength(15);
      const d = new SessionDirection();
      const decided = run(evs, d);
      expect(decided).toHaveLength(15);
      const outbound = decided.filter((x) => !x.inbound).map((x) => x.ev.dport);
      expect(outbound.sort((a, b) => a - b)).toEqual([1, 7011, 7011, 47011, 47011, 47011, 47012, 47012]);
      expect(decided.filter((x) => x.inbound).map((x) => x.ev.sport).sort((a, b) => a - b)).toEqual([7011, 7011, 47011, 47011, 47011, 47012, 47012]);
      // Decided by evidence (the listener met several clients), with no guess.
      expect(d.guesses).toBe(0);
    },
  );

  test('order does not matter: the same rows reversed, or client rows first, decide the same', () => {
    const evs = sessions('libbpf-tcplife-both-ends.txt');
    for (const order of [[...evs].reverse(), [...evs.filter((_, i) => i % 2 === 1), ...evs.filter((_, i) => i % 2 === 0)]]) {
      const decided = run(order);
      expect(decided.filter((x) => !x.inbound).map((x) => x.ev.dport).sort((a, b) => a - b)).toEqual([1, 7011, 7011, 47011, 47011, 47011, 47012, 47012]);
    }
  });

  test('live evidence first: a port listening in the process namespace is inbound at once; one row and no evidence is held, then guessed', () => {
    const [server, client] = sessions('libbpf-tcplife-both-ends.txt');
    const d = new SessionDirection({ maxRows: 3 });
    expect(d.offer(server, true)).toEqual([{ ev: server, inbound: true, guessed: false }]);
    const lone = new SessionDirection({ maxRows: 3 });
    expect(lone.offer(client)).toEqual([]);
    expect(lone.heldCount).toBe(1);
    expect(lone.releaseAll()).toEqual([{ ev: client, inbound: false, guessed: true }]);
    expect(lone.guesses).toBe(1);
    // Both ends of a single connection and nothing else: one listens; the lower port is taken (a guess).
    const pair = new SessionDirection();
    expect([...pair.offer(server), ...pair.offer(client)]).toEqual([]);
    expect(pair.releaseAll().map((x) => [x.ev.sport, x.inbound, x.guessed])).toEqual([
      [47011, true, true],
      [client.sport, false, true],
    ]);
    // Clear port ranges decide a single row (a remote server on 5432, a client port in the range).
    const out: SessionEvent = { ...client, sport: 45000, dport: 5432, daddr: '10.0.0.9' };
    expect(new SessionDirection().offer(out)).toEqual([{ ev: out, inbound: false, guessed: false }]);
  });
});
