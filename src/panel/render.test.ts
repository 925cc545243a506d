import { dateTime, type InterpolateFunction, type TimeRange } from '@grafana/data';
import { linkRequest, renderQuery, renderUrl } from '../shared/renderer';
import { chartName, chartOf, imageSize, optionValues, renderParams, rendererTimeZone } from './render';
import { DEFAULT_PANEL_OPTIONS, type PanelOptions } from './types';

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

describe('the URL of each chart', () => {
  const ctx = { width: 600, height: 300, devicePixelRatio: 1, timeRange: range, timeZone: 'utc', isDark: true, replaceVariables: replace };
  const url = (o: Partial<PanelOptions>) => {
    const options = { ...DEFAULT_PANEL_OPTIONS, service: 'api', result: 'ok', colourScale: 'linear' as const, ...o };
    const u = new URL(renderUrl('/api/datasources/proxy/uid/u', chartOf(options).kind, renderParams(options, ctx)), 'http://grafana');
    const q = u.searchParams;
    return { path: u.pathname.replace('/api/datasources/proxy/uid/u/renderer', ''), metric: q.get('metric'), result: q.getAll('result'), overlay: q.getAll('overlay'), scale: q.get('scale'), service: q.getAll('service') };
  };

  test('connect latency (the default, also a panel saved without a metric): no metric parameter, URLs as before', () => {
    expect(url({})).toEqual({ path: '/render/heatmap.png', metric: null, result: ['ok'], overlay: ['p50', 'p99'], scale: 'linear', service: ['api'] });
    expect(url({ metric: undefined as never })).toEqual(url({}));
    expect(url({ chart: 'percentiles' })).toEqual({ path: '/render/percentiles.png', metric: null, result: ['ok'], overlay: [], scale: null, service: ['api'] });
  });

  test('TLS handshake latency: metric=tls on heatmap.png and percentiles.png, with its result filter', () => {
    expect(url({ metric: 'tls', result: 'failed' })).toEqual({ path: '/render/heatmap.png', metric: 'tls', result: ['failed'], overlay: ['p50', 'p99'], scale: 'linear', service: ['api'] });
    expect(url({ chart: 'percentiles', metric: 'tls' })).toEqual({ path: '/render/percentiles.png', metric: 'tls', result: ['ok'], overlay: [], scale: null, service: ['api'] });
  });

  test('lifespans: lifespan.png without result, metric or overlay (the renderer refuses the first two), with the colour scale', () => {
    expect(url({ chart: 'lifespan' })).toEqual({ path: '/render/lifespan.png', metric: null, result: [], overlay: [], scale: 'linear', service: ['api'] });
    // A TLS panel switched to lifespans keeps its metric option; the request leaves it out.
    expect(url({ chart: 'lifespan', metric: 'tls', result: '$service' })).toEqual(url({ chart: 'lifespan' }));
  });

  test('the alert link signs the same chart', () => {
    const options = { ...DEFAULT_PANEL_OPTIONS, chart: 'lifespan' as const, result: 'ok' };
    const req = linkRequest('/api/datasources/proxy/uid/u', chartOf(options).kind, renderParams(options, ctx, true), '7d');
    expect(req.data).toMatchObject({ path: '/render/lifespan.png', ttl: '7d', params: { from: 'now-1h', to: 'now' } });
    expect((req.data as { params: Record<string, unknown> }).params).not.toHaveProperty('result');
    const tls = { ...DEFAULT_PANEL_OPTIONS, metric: 'tls' as const };
    expect(linkRequest('/x', chartOf(tls).kind, renderParams(tls, ctx, true)).data).toMatchObject({ path: '/render/heatmap.png', params: { metric: 'tls' } });
  });

  test('names and unknown values', () => {
    expect([chartName(DEFAULT_PANEL_OPTIONS), chartName({ chart: 'percentiles', metric: 'tls' }), chartName({ chart: 'lifespan', metric: 'tls' })]).toEqual([
      'connect latency heatmap',
      'TLS handshake latency percentiles',
      'connection lifespans',
    ]);
    expect(() => chartOf({ chart: 'pie' as never, metric: 'connect' })).toThrow('Unknown chart "pie" in the panel options: pick heatmap, percentiles, lifespan.');
    expect(() => chartOf({ chart: 'heatmap', metric: 'udp' as never })).toThrow('Unknown metric "udp" in the panel options: pick connect or tls.');
  });
});
