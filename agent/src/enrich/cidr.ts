/** IPv4/IPv6 addresses and CIDR prefixes, for destination rules. */

export type Ip = { family: 'ipv4'; value: number } | { family: 'ipv6'; value: bigint };

export function parseIPv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255) return null;
    v = v * 256 + o;
  }
  return v;
}

export function parseIPv6(s: string): bigint | null {
  let text = s;
  // A trailing dotted quad (::ffff:10.0.0.1) becomes two hextets.
  const dq = /^(.*:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (dq) {
    const v4 = parseIPv4(dq[2]);
    if (v4 === null) return null;
    text = dq[1] + ((v4 >>> 16) & 0xffff).toString(16) + ':' + (v4 & 0xffff).toString(16);
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const tail = halves.length === 2 ? (halves[1] === '' ? [] : halves[1].split(':')) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  return v;
}

export function parseIp(s: string): Ip | null {
  const v4 = parseIPv4(s);
  if (v4 !== null) return { family: 'ipv4', value: v4 };
  const v6 = s.includes(':') ? parseIPv6(s) : null;
  if (v6 === null) return null;
  // v4-mapped addresses are IPv4 (the probe reports them so too).
  if (v6 >> 32n === 0xffffn) return { family: 'ipv4', value: Number(v6 & 0xffffffffn) };
  return { family: 'ipv6', value: v6 };
}

export class Cidr {
  private constructor(
    readonly family: 'ipv4' | 'ipv6',
    private readonly net: number | bigint,
    readonly bits: number,
    readonly text: string,
  ) {}

  /** `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Null when unreadable. */
  static parse(text: string): Cidr | null {
    const [addr, len, ...rest] = text.split('/');
    if (rest.length > 0) return null;
    const ip = parseIp(addr);
    if (!ip) return null;
    const max = ip.family === 'ipv4' ? 32 : 128;
    const bits = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
    if (!(bits >= 0 && bits <= max)) return null;
    if (ip.family === 'ipv4') {
      const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
      return new Cidr('ipv4', (ip.value & mask) >>> 0, bits, text);
    }
    const mask = bits === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - bits)) - 1n);
    return new Cidr('ipv6', ip.value & mask, bits, text);
  }

  contains(ip: Ip): boolean {
    if (ip.family !== this.family) return false;
    if (ip.family === 'ipv4') {
      const mask = this.bits === 0 ? 0 : (0xffffffff << (32 - this.bits)) >>> 0;
      return ((ip.value & mask) >>> 0) === this.net;
    }
    const mask = this.bits === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - this.bits)) - 1n);
    return (ip.value & mask) === this.net;
  }
}
