import { BUCKET_COUNT } from './buckets';
import { defaultDst, duplicateKey, parseProbeLine, ProbeLineError, type ConnectEvent } from './event';

const good =
  '{"type":"connect","ts_ns":1764100000123456789,"latency_ns":1023456789,"result":"ok","errno":0,"syn_retrans":1,"pid":1234,"tid":1235,"comm":"ruby \\"x\\"\\\\","cgroup_id":18446744073709551615,"family":"ipv4","saddr":"127.0.0.1","sport":43340,"daddr":"127.0.0.1","dport":5432}';

describe('parseProbeLine', () => {
  test('reads a connect line exactly, 64-bit integers included', () => {
    const r = parseProbeLine(good);
    expect(r.ok).toBe(true);
    const e = (r as { ok: true; value: ConnectEvent }).value;
    expect(e.tsNs).toBe(1764100000123456789n);
    expect(e.cgroupId).toBe('18446744073709551615');
    expect(e.latencyNs).toBe(1023456789);
    expect(e.comm).toBe('ruby "x"\\');
    expect(e).toMatchObject({ result: 'ok', synRetrans: 1, pid: 1234, tid: 1235, family: 'ipv4', sport: 43340, dport: 5432 });
  });

  test('reads a stats line', () => {
    const r = parseProbeLine('{"type":"stats","ts_ns":1764100001000000000,"events":1200,"dropped":3}');
    expect(r).toEqual({ ok: true, value: { type: 'stats', tsNs: 1764100001000000000n, events: 1200, dropped: 3 } });
  });

  test('a comm that looks like a key does not confuse the exact-integer reader', () => {
    const line = good.replace('"comm":"ruby \\"x\\"\\\\"', '"comm":"\\"ts_ns\\":1"');
    const r = parseProbeLine(line);
    expect(r.ok && r.value.type === 'connect' && r.value.comm).toBe('"ts_ns":1');
    expect(r.ok && r.value.tsNs).toBe(1764100000123456789n);
  });

  test('non-integer 64-bit fields are refused, not truncated', () => {
    for (const [from, to, field] of [
      ['"ts_ns":1764100000123456789', '"ts_ns":1.5e18', 'ts_ns'],
      ['"ts_ns":1764100000123456789', '"ts_ns":1764100000.5', 'ts_ns'],
      ['"cgroup_id":18446744073709551615', '"cgroup_id":5E3', 'cgroup_id'],
    ]) {
      const r = parseProbeLine(good.replace(from, to));
      expect(!r.ok && [r.error.reason, r.error.field]).toEqual(['field', field]);
    }
  });

  test.each([
    ['', 'empty', undefined],
    ['   ', 'empty', undefined],
    ['not json', 'json', undefined],
    ['[1,2]', 'json', undefined],
    ['{"type":"connect"', 'json', undefined],
    ['{"type":"bogus","ts_ns":1}', 'type', 'type'],
    [good.replace('"result":"ok"', '"result":"maybe"'), 'field', 'result'],
    [good.replace('"family":"ipv4"', '"family":"ipx"'), 'field', 'family'],
    [good.replace('"sport":43340', '"sport":70000'), 'field', 'sport'],
    [good.replace('"latency_ns":1023456789', '"latency_ns":-5'), 'field', 'latency_ns'],
    [good.replace('"pid":1234', '"pid":"1234"'), 'field', 'pid'],
    [good.replace('"ts_ns":1764100000123456789', '"ts_ns":"soon"'), 'field', 'ts_ns'],
    [good.replace('"ts_ns":1764100000123456789', '"ts_ns":99999999999999999999999'), 'field', 'ts_ns'],
    [good.replace('"comm":"ruby \\"x\\"\\\\"', '"comm":42'), 'field', 'comm'],
    ['{"type":"stats","ts_ns":1,"events":1.5,"dropped":0}', 'field', 'events'],
  ])('malformed line %# is a typed error (%s)', (line, reason, field) => {
    const r = parseProbeLine(line);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error).toBeInstanceOf(ProbeLineError);
    expect(r.error.reason).toBe(reason);
    expect(r.error.field).toBe(field);
    expect(r.error.message.length).toBeGreaterThan(5);
  });

  test('errors quote at most a bounded excerpt of a huge line', () => {
    const r = parseProbeLine('x'.repeat(100_000));
    expect(!r.ok && r.error.message.length).toBeLessThan(300);
  });
});

test('defaultDst formats ip:port and [v6]:port', () => {
  expect(defaultDst('ipv4', '10.0.0.5', 5432)).toBe('10.0.0.5:5432');
  expect(defaultDst('ipv6', '::1', 443)).toBe('[::1]:443');
});

describe('the fast path for the probe\'s own lines', () => {
  const line = (o: Record<string, unknown>) =>
    JSON.stringify({ type: 'connect', ts_ns: 0, latency_ns: 1, result: 'ok', errno: 0, syn_retrans: 0, pid: 1, tid: 1, comm: 'c', cgroup_id: 1, family: 'ipv4', saddr: '127.0.0.1', sport: 1, daddr: '127.0.0.1', dport: 2, ...o }).replace(
      /"(ts_ns|cgroup_id)":"(\d+)"/g,
      '"$1":$2',
    );
  // Probe v2 lines carry "thread" right after "comm".
  const withThread = (l: string, thread: string) => l.replace(/,"cgroup_id":/, `,"thread":${JSON.stringify(thread)},"cgroup_id":`);
  // The same line with a space after the first colon cannot take the fast path: the general parser reads it.
  const slow = (l: string) => l.replace('"type":', '"type": ');

  test.each([
    [{}],
    [{ ts_ns: '18446744073709551615', cgroup_id: '18446744073709551615' }],
    [{ comm: 'tl"q\\b\tz\u0001' }],
    [{ comm: 'ünï 中' }],
    [{ family: 'ipv6', saddr: '::1', daddr: 'fe80::1:2' }],
    [{ result: 'aborted', latency_ns: 300_000_000, syn_retrans: 3, errno: 0 }],
    [{ pid: 4294967295, tid: 4294967295, sport: 65535, dport: 65535, errno: 4095 }],
  ])('gives exactly what the general parser gives: %j', (o) => {
    const l = line(o);
    const fast = parseProbeLine(l);
    const general = parseProbeLine(slow(l));
    expect(fast.ok).toBe(true);
    expect(fast).toEqual(general);
  });

  test('fuzz: mutated probe lines give what the general parser gives (value, or error reason and field)', () => {
    let seed = 12345;
    const rnd = (n: number) => (seed = (seed * 16807) % 2147483647) % n;
    const alphabet = ['"', '\\', '0', '9', '1', ',', ':', '}', '{', ' ', '\n', '\u0001', 'a', '.', '-', 'é', 'u'];
    const seeds = [
      line({}),
      withThread(line({ comm: 'python3' }), 'pool-"w"\\3'),
      line({ comm: 'a\\b"c', family: 'ipv6', saddr: '::ffff:1.2.3.4', daddr: 'fe80::1', result: 'unreachable', errno: 113 }),
      line({ ts_ns: '1764100000123456789', latency_ns: 9007199254740991, cgroup_id: '18446744073709551615' }),
    ];
    const outcome = (l: string) => {
      const r = parseProbeLine(l);
      return r.ok ? { ok: true, value: r.value } : { ok: false, reason: r.error.reason, field: r.error.field };
    };
    let accepted = 0;
    for (let k = 0; k < 20_000; k++) {
      let l = seeds[rnd(seeds.length)];
      for (let m = 1 + rnd(3); m > 0; m--) {
        const at = 1 + rnd(l.length - 1);
        const op = rnd(3);
        const ch = alphabet[rnd(alphabet.length)];
        l = op === 0 ? l.slice(0, at) + l.slice(at + 1) : op === 1 ? l.slice(0, at) + ch + l.slice(at) : l.slice(0, at) + ch + l.slice(at + 1);
      }
      if (!l.includes('"type":')) continue;
      const fast = outcome(l);
      if (fast.ok) accepted++;
      expect([l, fast]).toEqual([l, outcome(slow(l))]);
    }
    expect(accepted).toBeGreaterThan(1000); // the mutations also keep many lines valid
  });

  test.each([
    ['a repeated ts_ns after the probe\'s own keys', (l: string) => l.replace(/\}$/, ',"ts_ns":1764100000123456789}')],
    ['a repeated ts_ns first', (l: string) => l.replace('{"type":"connect",', '{"type":"connect","ts_ns":1,')],
    ['a repeated comm', (l: string) => l.replace(/\}$/, ',"comm":"other"}')],
    ['a repeated key spelled with an escape', (l: string) => l.replace(/\}$/, ',"pi\\u0064":7}')],
    ['a repeated key after whitespace', (l: string) => l.replace(/\}$/, ' , "dport" : 9}')],
  ])('ambiguous lines (%s) are refused on both paths with the same reason', (_what, mutate) => {
    const l = mutate(line({ ts_ns: '1764100000000000000' }));
    for (const text of [l, slow(l)]) {
      const r = parseProbeLine(text);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.reason).toBe('duplicate_key');
    }
  });

  test('keys repeated inside nested values or string values are not duplicates of the top level', () => {
    expect(duplicateKey('{"a":{"a":1,"b":[{"a":2}]},"b":"\\"a\\":1","c":1}')).toBeNull();
    expect(duplicateKey('{"a":{"a":1},"a":2}')).toBe('a');
  });

  test('leading zeros are not JSON: refused like the general parser does', () => {
    expect(parseProbeLine(line({ pid: 1 }).replace('"pid":1', '"pid":01')).ok).toBe(false);
  });

  test.each([
    [{ ts_ns: '18446744073709551616' }, 'ts_ns'],
    [{ cgroup_id: '99999999999999999999' }, 'cgroup_id'],
    [{ pid: 4294967296 }, 'pid'],
    [{ sport: 65536 }, 'sport'],
    [{ errno: 4096 }, 'errno'],
    [{ latency_ns: 9007199254740993 }, 'latency_ns'],
  ])('out-of-range values still give the typed error: %j', (o, field) => {
    const r = parseProbeLine(line(o));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.field).toBe(field);
  });

  test.each([['pool-worker-3'], ['puma srv tp 0'], ['tl"q\\b\tz\u0001'], ['']])('a thread name (probe v2) on the fast path: %j', (thread) => {
    const l = withThread(line({ comm: 'ruby' }), thread);
    const fast = parseProbeLine(l);
    expect(fast).toEqual(parseProbeLine(slow(l)));
    expect(fast.ok && fast.value.type === 'connect' && [fast.value.comm, fast.value.thread]).toEqual(['ruby', thread]);
  });

  test('older lines have no thread: the field stays absent', () => {
    const r = parseProbeLine(line({}));
    expect(r.ok && 'thread' in r.value).toBe(false);
    expect(parseProbeLine(slow(line({ thread: 7 }))).ok).toBe(false);
  });
});

describe('probe v2 stats and hist lines', () => {
  test('a v2 stats line: the run (started_ns, exact) and the losses by reason', () => {
    const r = parseProbeLine(
      '{"type":"stats","ts_ns":1764100001000000000,"events":1200,"dropped":3,"mode":"stream","started_ns":1764100000000000001,"drops":{"ringbuf_full":2,"storage_alloc":0,"inflight_full":0,"pending_full":1,"hist_full":0},"missed":{"state":5,"retransmit":0,"connect_exit":0}}',
    );
    expect(r).toEqual({
      ok: true,
      value: {
        type: 'stats', tsNs: 1764100001000000000n, events: 1200, dropped: 3, mode: 'stream', startedNs: 1764100000000000001n,
        drops: { ringbuf_full: 2, storage_alloc: 0, inflight_full: 0, pending_full: 1, hist_full: 0 },
        missed: { state: 5, retransmit: 0, connect_exit: 0 },
      },
    });
    expect(parseProbeLine('{"type":"stats","ts_ns":1,"events":1,"dropped":0,"drops":{"x":-1}}')).toMatchObject({ ok: false, error: { field: 'drops' } });
  });

  const buckets = Array.from({ length: BUCKET_COUNT }, (_, i) => (i === 2 ? 2 : i === 5 ? 1 : 0));
  const hist = (o: Record<string, unknown> = {}) =>
    JSON.stringify({
      type: 'hist', ts_ns: 0, window_ns: 10_000_000_000, cgroup_id: 0, pid: 4242, comm: 'python3', family: 'ipv4', daddr: '127.0.0.1',
      dport: 5432, result: 'refused', errno: 111, count: 3, sum_ns: 133389, min_ns: 17957, max_ns: 93239, syn_retrans: 0, buckets, ...o,
    }).replace(/"(ts_ns|cgroup_id)":"(\d+)"/g, '"$1":$2');

  test('a hist line, 64-bit integers exact', () => {
    const r = parseProbeLine(hist({ ts_ns: '1764100010000000000', cgroup_id: '18446744073709551615' }));
    expect(r).toEqual({
      ok: true,
      value: {
        type: 'hist', tsNs: 1764100010000000000n, windowNs: 10_000_000_000, cgroupId: '18446744073709551615', pid: 4242, comm: 'python3',
        family: 'ipv4', daddr: '127.0.0.1', dport: 5432, result: 'refused', errno: 111, count: 3, sumNs: 133389, minNs: 17957,
        maxNs: 93239, synRetrans: 0, buckets,
      },
    });
  });

  test.each([
    [{ buckets: buckets.slice(1) }, 'buckets'],
    [{ count: 4 }, 'buckets'],
    [{ buckets: buckets.map((n, i) => (i === 0 ? -1 : n)) }, 'buckets'],
    [{ result: 'slow' }, 'result'],
    [{ window_ns: 1.5 }, 'window_ns'],
    [{ comm: 1 }, 'comm'],
  ])('a bad hist line gives a typed error: %j', (o, field) => {
    const r = parseProbeLine(hist(o));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.field).toBe(field);
  });
});

describe('parseProbeLine: close events', () => {
  const closeGood =
    '{"type":"close","ts_ns":1764100000123456789,"lifespan_ns":1512000000,"pid":1234,"tid":1240,"comm":"ruby","thread":"puma srv tp 0","cgroup_id":18446744073709551615,"family":"ipv4","saddr":"10.0.0.5","sport":43340,"daddr":"10.0.0.9","dport":5432,"bytes_sent":104857,"bytes_received":2048,"retrans":2,"srtt_us":350,"closed_by":"local"}';

  test('reads the probe\'s close line exactly (DESIGN.md), 64-bit integers included', () => {
    const r = parseProbeLine(closeGood);
    expect(r).toEqual({
      ok: true,
      value: {
        type: 'close', tsNs: 1764100000123456789n, lifespanNs: 1512000000, pid: 1234, tid: 1240, comm: 'ruby', thread: 'puma srv tp 0',
        cgroupId: '18446744073709551615', family: 'ipv4', saddr: '10.0.0.5', sport: 43340, daddr: '10.0.0.9', dport: 5432,
        bytesSent: 104857, bytesReceived: 2048, retrans: 2, srttUs: 350, closedBy: 'local',
      },
    });
  });

  test('zero_windows (probe --zero-windows) is read when present', () => {
    const r = parseProbeLine(closeGood.replace('"closed_by":"local"', '"closed_by":"local","zero_windows":3'));
    expect(r.ok && r.value.type === 'close' && r.value.zeroWindows).toBe(3);
    const bad = parseProbeLine(closeGood.replace('"closed_by":"local"', '"closed_by":"local","zero_windows":-3'));
    expect(bad.ok).toBe(false);
  });

  test.each([
    ['closed_by', '"closed_by":"local"', '"closed_by":"timeout"', /closed_by must be one of local, peer, reset_in, reset_out/],
    ['lifespan_ns', '"lifespan_ns":1512000000', '"lifespan_ns":-1', /lifespan_ns must be an integer/],
    ['bytes_sent', '"bytes_sent":104857', '"bytes_sent":"lots"', /bytes_sent must be an integer/],
    ['family', '"family":"ipv4"', '"family":"ipx"', /family must be ipv4 or ipv6/],
    ['thread', '"thread":"puma srv tp 0"', '"thread":7', /thread must be a string/],
  ])('a bad %s is refused with a clear error naming it', (field, from, to, msg) => {
    const r = parseProbeLine(closeGood.replace(from, to));
    expect(r.ok).toBe(false);
    const e = (r as { ok: false; error: ProbeLineError }).error;
    expect(e.reason).toBe('field');
    expect(e.field).toBe(field);
    expect(e.message).toMatch(msg);
  });
});

describe('tls lines (issue 16)', () => {
  // As bpf/tls.c prints them (captured from the probe: a Python client, then a node client whose socket was not seen).
  const joined =
    '{"type":"tls","ts_ns":1796671246741581148,"latency_ns":310468724,"result":"ok","pid":21360,"tid":21360,"comm":"python3","thread":"python3","cgroup_id":18446744073709551615,"lib":"openssl","calls":1,"family":"ipv4","saddr":"127.0.0.1","sport":57304,"daddr":"127.0.0.1","dport":43377}';
  const unjoined =
    '{"type":"tls","ts_ns":1796671247816661493,"latency_ns":68572,"result":"failed","pid":21416,"tid":21417,"comm":"node","thread":"libuv-worker","cgroup_id":1,"lib":"openssl","calls":3,"family":"","saddr":"","sport":0,"daddr":"","dport":0}';

  test('a handshake joined to its socket, 64-bit integers exact', () => {
    expect(parseProbeLine(joined)).toEqual({
      ok: true,
      value: {
        type: 'tls', tsNs: 1796671246741581148n, latencyNs: 310468724, result: 'ok', pid: 21360, tid: 21360, comm: 'python3',
        thread: 'python3', cgroupId: '18446744073709551615', lib: 'openssl', calls: 1,
        socket: { family: 'ipv4', saddr: '127.0.0.1', sport: 57304, daddr: '127.0.0.1', dport: 43377 },
      },
    });
  });

  test('a handshake whose socket the probe did not see has no socket, not a fake 0.0.0.0:0', () => {
    const r = parseProbeLine(unjoined);
    expect(r.ok && r.value).toMatchObject({ type: 'tls', result: 'failed', calls: 3, thread: 'libuv-worker' });
    expect(r.ok && r.value.type === 'tls' && r.value.socket).toBeUndefined();
  });

  test.each([
    [{ result: 'refused' }, 'result'],
    [{ result: 'aborted' }, 'result'],
    [{ family: 'ipx' }, 'family'],
    [{ calls: -1 }, 'calls'],
    [{ latency_ns: 1.5 }, 'latency_ns'],
    [{ lib: 3 }, 'lib'],
    [{ dport: 70000 }, 'dport'],
  ])('a bad tls line gives a typed error: %j', (o, field) => {
    const r = parseProbeLine(JSON.stringify({ ...JSON.parse(joined.replace(/"(ts_ns|cgroup_id)":(\d+)/g, '"$1":"$2"')), ...o }).replace(/"(ts_ns|cgroup_id)":"(\d+)"/g, '"$1":$2'));
    expect(r.ok).toBe(false);
    expect(!r.ok && r.error.field).toBe(field);
  });
});
