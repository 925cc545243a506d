import { UsedTimes } from './used-times';

describe('UsedTimes: raw and session timestamps never repeat', () => {
  test('a fresh second takes a sorted batch as is, moving repeats by 1 ns steps', () => {
    const u = new UsedTimes();
    expect(u.claimSorted(10, [1, 1, 1, 2, 9])).toEqual([1, 2, 3, 4, 9]);
    expect(u.moves).toBe(1 + 2 + 2);
  });

  test('a later batch of the same second, and single claims, step over every earlier time', () => {
    const u = new UsedTimes();
    u.claimSorted(10, [5, 6, 7]);
    expect(u.claimSorted(10, [4, 5, 6, 100])).toEqual([4, 8, 9, 100]);
    expect(u.claim(10, 5)).toBe(10);
    expect(u.claim(10, 4)).toBe(11);
    expect(u.claim(11, 5)).toBe(5); // another second is free
  });

  test('a move past the end of a second lands in the next one, which later batches respect', () => {
    const u = new UsedTimes();
    const last = 999_999_999;
    expect(u.claimSorted(10, [last, last])).toEqual([last, 1e9]); // 1e9 = second 11, ns 0
    expect(u.claimSorted(11, [0, 0, 1])).toEqual([1, 2, 3]);
    expect(u.claim(11, 0)).toBe(4);
  });

  test('pruned seconds are forgotten', () => {
    const u = new UsedTimes();
    u.claimSorted(10, [5]);
    u.claim(12, 5);
    u.prune(11);
    expect(u.claim(10, 5)).toBe(5);
    expect(u.claim(12, 5)).toBe(6);
  });
});
