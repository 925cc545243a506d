/**
 * Connection scenarios for the close-event tests (tests/probe-close.test.ts, tests/agent-session.test.ts):
 * real sockets on loopback, made by python3 with the exact socket calls each needs.
 */
import { spawn } from 'child_process';
import fs from 'node:fs';
import { children } from './probe';

/**
 * The scenarios, in one Python script: a threaded server on 127.0.0.1 (port 0) and a client doing `mode`.
 * Prints {"port":P} once listening and {"sport":S,...} per client connection.
 */
export const SCRIPT = String.raw`
import json, socket, struct, sys, threading, time
mode = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if mode == 'zerowin': srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # accepted sockets inherit it
srv.bind(('127.0.0.1', int(sys.argv[2]))); srv.listen(64)
port = srv.getsockname()[1]
def out(**kw): print(json.dumps(kw), flush=True)
def handle(c):
    try:
        how = c.recv(1)
        if how == b'R':   # reset by the server
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close(); return
        if how == b'P':   # the server closes first, after 7 bytes
            c.sendall(b'y' * 7); c.close(); return
        if how == b'Z':   # a receiver that stops reading: its window closes
            time.sleep(1.5)
        n = 1
        while True:       # read to EOF, then answer and close
            d = c.recv(65536)
            if not d: break
            n += len(d)
        c.sendall(json.dumps({"got": n}).encode()); c.close()
    except OSError:
        c.close()
def serve():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
out(port=port)
def conn():
    c = socket.create_connection(('127.0.0.1', port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c
if mode == 'hold':
    t0 = time.monotonic()
    c = conn(); sport = c.getsockname()[1]
    c.sendall(b'D' + b'a' * 99999)          # 100,000 bytes
    time.sleep(1.5)
    c.shutdown(socket.SHUT_WR)
    got = b''
    while True:                             # the reply, then the server's FIN: the connection is over
        d = c.recv(100)
        if not d: break
        got += d
    elapsed = (time.monotonic() - t0) * 1000
    c.close()
    out(sport=sport, reply=len(got), elapsed_ms=elapsed)
elif mode == 'resets':
    c = conn(); a = c.getsockname()[1]; c.send(b'R')
    try: c.recv(10)
    except OSError: pass
    c.close()
    c = conn(); b = c.getsockname()[1]; c.send(b'D'); time.sleep(0.1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()
    c = conn(); p = c.getsockname()[1]; c.send(b'P')
    got = b''
    while True:
        d = c.recv(100)
        if not d: break
        got += d
    time.sleep(0.05); c.close()
    out(reset_in=a, reset_out=b, peer=p, peer_bytes=len(got))
elif mode == 'trickle':
    c = conn(); sport = c.getsockname()[1]; c.send(b'D')
    for i in range(30):
        c.send(b'b' * 1000); time.sleep(0.02)
    c.shutdown(socket.SHUT_WR); c.recv(100); c.close()
    out(sport=sport)
elif mode == 'zerowin':
    c = conn(); sport = c.getsockname()[1]; c.send(b'Z')
    c.sendall(b'z' * 2000000)  # returns once queued; the client stays ESTABLISHED while the window is 0
    time.sleep(2.0)
    c.shutdown(socket.SHUT_WR); c.recv(100); c.close()
    out(sport=sport)
elif mode == 'many':
    cs = [conn() for _ in range(int(sys.argv[3]))]
    for c in cs: c.send(b'D')
    time.sleep(0.1)
    for c in cs: c.shutdown(socket.SHUT_WR); c.recv(100); c.close()
    out(n=len(cs))
time.sleep(0.3)
`;

/** Runs the script (mode, server port, ...); resolves with its JSON lines once it exits. */
export function runScenario(args: string[]): Promise<Array<Record<string, number>>> {
  return new Promise((resolve, reject) => {
    const c = spawn('python3', ['-c', SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(c);
    let out = '';
    let err = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    c.on('exit', (code) => {
      children.delete(c);
      if (code !== 0) reject(new Error(`python exited ${code}: ${err}`));
      else resolve(out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)));
    });
  });
}


/** A counter of the kernel's own: /proc/net/snmp (Tcp:) or /proc/net/netstat (TcpExt:). */
export function kernelCounter(file: string, prefix: string, name: string): number {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.startsWith(prefix));
  const keys = lines[0].split(/\s+/);
  const vals = lines[1].split(/\s+/);
  return Number(vals[keys.indexOf(name)]);
}

/** Segments the kernel retransmitted, host-wide (other traffic can only add to it). */
export const retransSegs = (): number => kernelCounter('/proc/net/snmp', 'Tcp:', 'RetransSegs');
