import { canonicalKey, canonicalTimeZone, chooseWindow, DEFAULT_LIMITS, ParamError, parseRenderParams } from './params';

const NOW = Date.UTC(2025, 10, 25, 12, 0, 7);

describe('render parameters', () => {
  test('bins: at least 4 px each, never finer than the agent window, nice steps', () => {
    expect(chooseWindow(3_600_000, 1000, DEFAULT_LIMITS)).toBe(20_000);
    expect(chooseWindow(6 * 3_600_000, 1000, DEFAULT_LIMITS)).toBe(120_000);
    expect(chooseWindow(24 * 3_600_000, 1000, DEFAULT_LIMITS)).toBe(600_000);
    expect(chooseWindow(12 * 3_600_000, 1000, DEFAULT_LIMITS)).toBe(300_000);
    expect(chooseWindow(60_000, 4000, DEFAULT_LIMITS)).toBe(10_000);
    expect(chooseWindow(31 * 86_400_000, 200, DEFAULT_LIMITS)).toBe(4 * 86_400_000);
    expect(chooseWindow(31 * 86_400_000, 4000, DEFAULT_LIMITS)).toBe(3_600_000);
  });

  test('the resolution: the coarsest allowed level that fits the bin, bins of whole windows of it; part of the cache key', () => {
    const at = (from: string, width: number, rollupLevels = DEFAULT_LIMITS.rollupLevels) => {
      const p = parseRenderParams('heatmap', { from, width: String(width) }, { ...DEFAULT_LIMITS, rollupLevels }, NOW);
      return [p.level, p.windowMs];
    };
    expect([at('now-1h', 1000), at('now-24h', 1000), at('now-7d', 1000), at('now-30d', 1000), at('now-24h', 2000), at('now-7d', 1000, []), at('now-7d', 1000, ['1m'])]).toEqual([
      ['base', 20_000],
      ['10m', 600_000],
      ['1h', 3_600_000],
      ['1h', 21_600_000],
      ['1m', 300_000],
      ['base', 3_600_000],
      ['1m', 3_600_000],
    ]);
    const all = parseRenderParams('heatmap', { from: 'now-7d' }, DEFAULT_LIMITS, NOW);
    const none = parseRenderParams('heatmap', { from: 'now-7d' }, { ...DEFAULT_LIMITS, rollupLevels: [] }, NOW);
    expect(none.windowMs).toBe(all.windowMs);
    expect(canonicalKey(none)).not.toBe(canonicalKey(all));
  });

  test('the range is snapped outwards to whole bins; the key ignores where inside a bin "now" is', () => {
    const a = parseRenderParams('heatmap', { from: 'now-1h' }, DEFAULT_LIMITS, NOW);
    expect(a.binFromMs % a.windowMs).toBe(0);
    expect(a.binToMs % a.windowMs).toBe(0);
    expect(a.binFromMs).toBeLessThanOrEqual(a.fromMs);
    expect(a.binToMs).toBeGreaterThanOrEqual(a.toMs);
    const b = parseRenderParams('heatmap', { from: 'now-1h' }, DEFAULT_LIMITS, NOW + 2000);
    expect(canonicalKey(b)).toBe(canonicalKey(a));
  });

  test('colour scale: log by default, linear on request, part of the cache key; anything else is a 400', () => {
    const log = parseRenderParams('heatmap', {}, DEFAULT_LIMITS, NOW);
    const lin = parseRenderParams('heatmap', { scale: 'linear' }, DEFAULT_LIMITS, NOW);
    expect([log.scale, lin.scale]).toEqual(['log', 'linear']);
    expect(canonicalKey(lin)).not.toBe(canonicalKey(log));
    expect(() => parseRenderParams('heatmap', { scale: 'cubic' }, DEFAULT_LIMITS, NOW)).toThrow(ParamError);
    expect(() => parseRenderParams('heatmap', { scale: "log' OR 1=1" }, DEFAULT_LIMITS, NOW)).toThrow(/scale: expected log or linear/);
  });

  test('lists: repeated or comma-separated, deduplicated and sorted; * and $__all mean no filter', () => {
    const p = parseRenderParams('heatmap', { service: ['b', 'a', 'b'], dst: 'x,y', host: '*', result: '$__all' }, DEFAULT_LIMITS, NOW);
    expect(p.filters).toEqual({ service: ['a', 'b'], dst: ['x', 'y'], host: [], result: [] });
    expect(canonicalKey(p)).toBe(canonicalKey(parseRenderParams('heatmap', { service: 'a,b', dst: ['y', 'x'] }, DEFAULT_LIMITS, NOW)));
  });

  test.each([
    ['service', { service: 'a\nb' }],
    ['service', { service: 'x'.repeat(300) }],
    ['dst', { dst: Array.from({ length: 51 }, (_, i) => `d${i}`) }],
    ['width', { width: '1e3' }],
    ['tz', { tz: 'Europe/../../etc' }],
    ['title', { title: 't'.repeat(201) }],
    ['from', { from: 'now-1y' }],
  ])('%s is refused with a ParamError naming it', (parameter, raw) => {
    try {
      parseRenderParams('heatmap', raw, DEFAULT_LIMITS, NOW);
      throw new Error('accepted');
    } catch (e) {
      expect(e).toBeInstanceOf(ParamError);
      expect((e as ParamError).parameter).toBe(parameter);
    }
  });

  test('time zones: canonical names, UTC aliases', () => {
    expect(canonicalTimeZone('')).toBe('UTC');
    expect(canonicalTimeZone('browser')).toBe('UTC');
    expect(canonicalTimeZone('utc')).toBe('UTC');
    expect(canonicalTimeZone('Europe/Berlin')).toBe('Europe/Berlin');
    expect(() => canonicalTimeZone('+01:00')).toThrow(ParamError);
  });
});
