import { dateTime, type InterpolateFunction, type TimeRange } from '@grafana/data';
import { renderQuery, renderUrl } from '../shared/renderer';
import { imageSize, optionValues, renderParams, rendererTimeZone } from './render';
import { DEFAULT_PANEL_OPTIONS } from './types';

const vars: Record<string, string | string[]> = { service: ['api', `x&token=evil`], dst: 'db:5432' };
const replace: InterpolateFunction = (value, _scoped, format) =>
  value.replace(/\$(\w+)/g, (m, name) => (name in vars ? (typeof format === 'function' ? format(vars[name], {} as never) : String(vars[name])) : m));

const range: TimeRange = { from: dateTime(1_700_000_000_000), to: dateTime(1_700_003_600_000), raw: { from: 'now-1h', to: 'now' } };

test('variables expand to repeated parameters; hostile values are encoded, not spliced', () => {
  const p = renderParams({ ...DEFAULT_PANEL_OPTIONS, service: '$service', dst: '$dst, other' }, { width: 600, height: 300, devicePixelRatio: 2, timeRange: range, timeZone: 'utc', isDark: true, replaceVariables: replace });
  expect(p).toMatchObject({ service: ['api', 'x&token=evil'], dst: ['db:5432', 'other'], from: 1_700_000_000_000, to: 1_700_003_600_000, width: 1200, height: 600, theme: 'dark', tz: 'UTC', overlay: ['p50', 'p99'] });
  const q = renderQuery(p);
  expect(q.getAll('service')).toEqual(['api', 'x&token=evil']);
  expect(q.has('token')).toBe(false);
  expect(renderUrl('/api/datasources/proxy/uid/u', 'heatmap', p)).toMatch(/^\/api\/datasources\/proxy\/uid\/u\/renderer\/render\/heatmap\.png\?service=api&service=x%26token%3Devil&/);
});

test('the colour scale option reaches the renderer only when it is not the default', () => {
  const ctx = { width: 600, height: 300, devicePixelRatio: 1, timeRange: range, timeZone: 'utc', isDark: true, replaceVariables: replace };
  expect(renderQuery(renderParams({ ...DEFAULT_PANEL_OPTIONS, colourScale: 'linear' }, ctx)).get('scale')).toBe('linear');
  expect(renderQuery(renderParams(DEFAULT_PANEL_OPTIONS, ctx)).has('scale')).toBe(false);
  expect(renderQuery(renderParams({ ...DEFAULT_PANEL_OPTIONS, chart: 'percentiles', colourScale: 'linear' }, ctx)).has('scale')).toBe(false);
});

test('links keep a relative range; the image uses the resolved one', () => {
  const ctx = { width: 600, height: 300, devicePixelRatio: 1, timeRange: range, timeZone: 'Europe/Berlin', isDark: false, replaceVariables: replace };
  expect(renderParams(DEFAULT_PANEL_OPTIONS, ctx, true)).toMatchObject({ from: 'now-1h', to: 'now', theme: 'light', tz: 'Europe/Berlin' });
});

test('sizes stay inside the renderer limits; browser time zone resolves', () => {
  expect(imageSize(50, 50, 1)).toEqual({ width: 200, height: 150 });
  expect(imageSize(3000, 2000, 3)).toEqual({ width: 4000, height: 3000 });
  expect(rendererTimeZone('browser')).toBe(Intl.DateTimeFormat().resolvedOptions().timeZone);
  expect(optionValues(' a , ,b ', replace)).toEqual(['a', 'b']);
});
