/**
 * Real TLS handshakes for the probe and agent TLS tests (tests/probe-tls.test.ts, tests/agent-tls.test.ts):
 * a local TLS server (Python's ssl, the shared libssl) that waits 300 ms after the TCP accept before its side
 * of the handshake, with a self-signed certificate made by openssl, and clients that print what they did as
 * JSON lines: Python's ssl (shared libssl.so.3) and Node.js tls.connect (OpenSSL built into node).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { children } from './probe';

export const SERVER = `
import socket, ssl, sys, threading, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ls = socket.socket()
ls.bind(('127.0.0.1', 0))
ls.listen(64)
print(ls.getsockname()[1], flush=True)
def serve(c):
    try:
        time.sleep(0.3)  # the ground truth: 300 ms before the server's side of the handshake
        s = ctx.wrap_socket(c, server_side=True)
        s.sendall(b'hi')
        s.recv(10)
        s.close()
    except Exception:
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

// A client that prints {"pid"} first and handshakes when a line arrives on stdin (gated) or at once.
export const PY_CLIENT = `
import json, os, socket, ssl, sys
port, cafile, gated = int(sys.argv[1]), sys.argv[2], sys.argv[3] == 'gated'
ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
print(json.dumps({'pid': os.getpid()}), flush=True)
if gated:
    sys.stdin.readline()
sock = socket.create_connection(('127.0.0.1', port))
sport = sock.getsockname()[1]  # wrap_socket detaches sock
try:
    s = ctx.wrap_socket(sock, server_hostname='localhost')
    print(json.dumps({'ok': True, 'sport': sport}), flush=True)
    s.recv(2)
    s.close()
except ssl.SSLError as e:
    print(json.dumps({'ok': False, 'sport': sport, 'error': str(e)}), flush=True)
`;

export const NODE_CLIENT = `
const tls = require('tls'), fs = require('fs');
const s = tls.connect({ host: '127.0.0.1', port: +process.argv[1], ca: fs.readFileSync(process.argv[2]), servername: 'localhost' }, () => {
  console.log(JSON.stringify({ pid: process.pid, ok: true, sport: s.localPort }));
  s.on('data', () => s.end());
});
s.on('error', (e) => { console.log(JSON.stringify({ pid: process.pid, ok: false, error: e.message })); process.exit(0); });
s.on('close', () => process.exit(0));
`;


export interface Client {
  proc: ChildProcess;
  lines: Array<Record<string, unknown>>;
  stderr: string;
  done: Promise<void>;
  next(): Promise<Record<string, unknown>>;
}

export function client(argv: string[], env?: NodeJS.ProcessEnv): Client {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: env ?? process.env });
  children.add(proc);
  const c: Client = {
    proc, lines: [], stderr: '',
    done: new Promise((resolve, reject) => {
      proc.on('exit', (code) => {
        children.delete(proc);
        if (code === 0) resolve();
        else reject(new Error(`${argv.join(' ')} exited ${code}: ${c.stderr}`));
      });
    }),
    async next() {
      const n = c.lines.length;
      const deadline = Date.now() + 30000;
      while (c.lines.length <= n) {
        if (proc.exitCode !== null) throw new Error(`client exited ${proc.exitCode}: ${c.stderr}`);
        if (Date.now() > deadline) throw new Error(`client printed nothing in 30 s: ${c.stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return c.lines[n];
    },
  };
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.startsWith('{')) c.lines.push(JSON.parse(line));
    }
  });
  proc.stderr!.on('data', (d: Buffer) => (c.stderr += d.toString()));
  return c;
}

export interface TlsServer {
  proc: ChildProcess;
  port: number;
  /** The server's self-signed certificate (PEM): trusted by clients given it as their CA. */
  cert: string;
}

/** Make a certificate for localhost / 127.0.0.1 in `dir` and start the 300 ms server with it. */
export async function startTlsServer(dir: string): Promise<TlsServer> {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  const proc = spawn('python3', ['-c', SERVER, cert, key], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    proc.once('exit', (code) => reject(new Error(`TLS server exited ${code}`)));
  });
  return { proc, port, cert };
}
