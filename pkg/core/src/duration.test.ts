import { DurationError, parseDuration, parseTime } from './duration';

describe('parseDuration', () => {
  test.each([
    ['10s', 10_000],
    ['1m', 60_000],
    ['500ms', 500],
    ['1h30m', 5_400_000],
    ['250us', 0.25],
    ['2d', 172_800_000],
    ['0', 0],
    [' 1.5s ', 1500],
  ])('%s', (input, ms) => expect(parseDuration(input)).toBe(ms));

  test.each(['', '10', 's', '10x', '1h-', '-1s', '1e3s', '10 s', 'now'])('rejects %j with a message naming it', (bad) => {
    expect(() => parseDuration(bad)).toThrow(DurationError);
    if (bad.trim() !== '') expect(() => parseDuration(bad)).toThrow(JSON.stringify(bad));
  });
});

describe('parseTime', () => {
  const now = 1_764_100_000_000;
  test.each([
    ['now', now],
    ['now-1h', now - 3_600_000],
    ['now - 15m', now - 900_000],
    ['now+5m', now + 300_000],
    ['1764000000000', 1_764_000_000_000],
    ['2025-11-25T20:00:00Z', Date.UTC(2025, 10, 25, 20)],
  ])('%s', (input, ms) => expect(parseTime(input, now)).toBe(ms));

  test('epoch ms numbers pass through', () => expect(parseTime(1234, now)).toBe(1234));

  test.each(['yesterday', 'now-', 'now-1x', '1e20', '99999999999999999', "1h'; DROP DATABASE x", '2025-13-45T99:99:99Z', 'now-1000000w'])('rejects %j', (bad) => {
    expect(() => parseTime(bad, now)).toThrow(DurationError);
  });
});
