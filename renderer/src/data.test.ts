import { mergeRows } from './data';

test('mergeRows joins rows of the same bin and group from queries over different fields', () => {
  const a = [
    { timeMs: 2, tags: { dst: 'x' }, values: { count: 3 } },
    { timeMs: 1, tags: { dst: 'x' }, values: { count: 1 } },
  ];
  const b = [
    { timeMs: 1, tags: { dst: 'x' }, values: { le_1: 1 } },
    { timeMs: 2, tags: { dst: 'y' }, values: { le_1: 5 } },
  ];
  expect(mergeRows([a, b])).toEqual([
    { timeMs: 1, tags: { dst: 'x' }, values: { count: 1, le_1: 1 } },
    { timeMs: 2, tags: { dst: 'x' }, values: { count: 3 } },
    { timeMs: 2, tags: { dst: 'y' }, values: { le_1: 5 } },
  ]);
});
