import { silentLogger, type Logger } from '../types';
import { BurstLog } from './burst-log';

function recorder() {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  const log: Logger = { ...silentLogger, error: (obj, msg) => lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }) };
  return { lines, log };
}

test('the first event of a quiet period is logged at once; the rest of the burst as one line with counts per reason', async () => {
  const { lines, log } = recorder();
  const b = new BurstLog(log, 'error', 'lines dropped', 100);
  b.add('refused', 2, 'first refusal', { status: 400 });
  for (let i = 0; i < 500; i++) b.add(i % 5 === 0 ? 'too_large' : 'refused', 1, 'again');
  expect(lines).toEqual([{ obj: { reason: 'refused', count: 2, status: 400 }, msg: 'first refusal' }]);
  const end = Date.now() + 5000;
  while (lines.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(lines[1]).toEqual({ obj: { counts: { refused: 400, too_large: 100 } }, msg: '500 more lines dropped since the last report (by reason: too_large 100, refused 400)' });
  // Quiet again: nothing more is logged, the next event is logged at once after the interval.
  await new Promise((r) => setTimeout(r, 150));
  expect(lines).toHaveLength(2);
  b.add('refused', 1, 'later');
  expect(lines[2].msg).toBe('later');
  b.flush();
  expect(lines).toHaveLength(3);
});
