import { Histogram } from './histogram';
import { encodePoint } from './lineprotocol';
import { connectPoint, histPoint } from './points';

test('connectPoint keeps pid and sport as fields, never tags', () => {
  const line = encodePoint(
    connectPoint({ host: 'h', service: 'api', comm: 'node', dst: 'db:5432', result: 'ok', family: 'ipv4', latencyMs: 1.25, synRetrans: 0, pid: 42, sport: 40000, timeNs: 5n }),
  );
  expect(line).toBe('tcp_connect,comm=node,dst=db:5432,family=ipv4,host=h,result=ok,service=api latency_ms=1.25,syn_retrans=0i,pid=42i,sport=40000i 5');
});

test('histPoint writes count, sum, min, max and every bucket', () => {
  const h = new Histogram();
  h.add(0.5);
  h.add(1000);
  const line = encodePoint(histPoint({ host: 'h', service: 's', dst: 'd', result: 'ok' }, h, 10_000_000_000n, 1));
  expect(line.startsWith('tcp_connect_hist,dst=d,host=h,result=ok,service=s count=2i,sum_ms=1000.5,min_ms=0.5,max_ms=1000,syn_retrans=1i,le_0.01=0i')).toBe(true);
  expect(line).toContain('le_0.63=1i');
  expect(line).toContain('le_1000=1i');
  expect(line).toContain('le_inf=0i 10000000000');
});
