import React from 'react';
import { configure, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { dateTime, LoadingState, type PanelProps } from '@grafana/data';
import { Observable, of, throwError } from 'rxjs';
import { HeatmapPanel } from './HeatmapPanel';
import { DEFAULT_PANEL_OPTIONS, type PanelOptions } from '../types';

// findBy*/waitFor give up after 1 s by default: too short for @grafana/ui on a loaded 2-core machine (the
// no-data test timed out in a full run at load average 20). Wait for the condition longer instead.
configure({ asyncUtilTimeout: 10_000 });

const fetchMock = jest.fn();
jest.mock('@grafana/runtime', () => ({
  getBackendSrv: () => ({ fetch: (r: unknown) => fetchMock(r) }),
  getDataSourceSrv: () => ({
    getInstanceSettings: () => null,
    getList: () => [{ uid: 'tc', name: 'tcplat', type: 'tcplat-connect-datasource', url: '/api/datasources/proxy/uid/tc', jsonData: { rendererUrl: 'http://renderer:7071' } }],
  }),
}));

beforeEach(() => fetchMock.mockReset());

function props(over: Partial<PanelOptions> = {}): PanelProps<PanelOptions> {
  const from = dateTime(1_700_000_000_000);
  const to = dateTime(1_700_003_600_000);
  return {
    id: 1,
    data: { state: LoadingState.Done, series: [], timeRange: { from, to, raw: { from: 'now-1h', to: 'now' } } },
    timeRange: { from, to, raw: { from: 'now-1h', to: 'now' } },
    timeZone: 'utc',
    options: { ...DEFAULT_PANEL_OPTIONS, service: 'api', ...over },
    transparent: false,
    width: 500,
    height: 250,
    fieldConfig: { defaults: {}, overrides: [] },
    renderCounter: 0,
    title: 'x',
    eventBus: {} as never,
    onOptionsChange: jest.fn(),
    onFieldConfigChange: jest.fn(),
    replaceVariables: (s: string) => s,
    onChangeTimeRange: jest.fn(),
  } as unknown as PanelProps<PanelOptions>;
}

const png = (headers: Record<string, string> = {}) => of({ data: new Blob(['png'], { type: 'image/png' }), status: 200, headers: new Headers(headers) });

test('requests the image through the renderer route at the panel size, then shows it', async () => {
  fetchMock.mockReturnValue(png());
  render(<HeatmapPanel {...props()} />);
  expect(screen.getByTestId('tcplat-panel-loading')).toBeInTheDocument();
  const img = await screen.findByTestId('tcplat-panel-image');
  // A data: URL (Grafana's CSP: img-src * data:), never blob:.
  expect(img).toHaveAttribute('src', `data:image/png;base64,${Buffer.from('png').toString('base64')}`);
  const req = fetchMock.mock.calls[0][0];
  expect(req.responseType).toBe('blob');
  const u = new URL(req.url, 'http://grafana');
  expect(u.pathname).toBe('/api/datasources/proxy/uid/tc/renderer/render/heatmap.png');
  expect(Object.fromEntries(u.searchParams)).toMatchObject({ service: 'api', from: '1700000000000', to: '1700003600000', width: '500', height: '250', theme: 'dark', tz: 'UTC' });
  expect(screen.getByTestId('tcplat-panel')).toHaveAttribute('data-state', 'ok');
});

test('no data: the image plus a no-data notice', async () => {
  fetchMock.mockReturnValue(png({ 'X-Tcplat-No-Data': 'true' }));
  render(<HeatmapPanel {...props()} />);
  expect(await screen.findByTestId('tcplat-panel-nodata')).toHaveTextContent('No data');
});

test("errors show the renderer's own message", async () => {
  const body = new Blob([JSON.stringify({ error: 'service: values cannot contain control characters', parameter: 'service' })]);
  fetchMock.mockReturnValue(throwError(() => ({ status: 400, data: body })));
  render(<HeatmapPanel {...props()} />);
  const err = await screen.findByTestId('tcplat-panel-error');
  expect(err).toHaveTextContent('the renderer: service: values cannot contain control characters');
  expect(err).toHaveTextContent('refused the parameter service');
});

test('a lifespan panel asks lifespan.png without the result filter; its no-data notice names --probe-close', async () => {
  fetchMock.mockReturnValue(png({ 'X-Tcplat-No-Data': 'true' }));
  render(<HeatmapPanel {...props({ chart: 'lifespan', result: 'ok', metric: 'tls' })} />);
  expect(await screen.findByTestId('tcplat-panel-nodata')).toHaveTextContent('No closed connections in this time range for these filters (agents record lifespans with --probe-close)');
  const u = new URL(fetchMock.mock.calls[0][0].url, 'http://grafana');
  expect(u.pathname).toBe('/api/datasources/proxy/uid/tc/renderer/render/lifespan.png');
  expect([u.searchParams.has('result'), u.searchParams.has('metric'), u.searchParams.has('overlay')]).toEqual([false, false, false]);
  expect(screen.getByTestId('tcplat-panel-image')).toHaveAttribute('alt', 'tcplat connection lifespans');
});

test('a TLS panel asks metric=tls; a renderer error names the chart', async () => {
  fetchMock.mockReturnValue(throwError(() => ({ status: 500, data: new Blob([JSON.stringify({ error: 'InfluxDB: timeout' })]) })));
  render(<HeatmapPanel {...props({ chart: 'percentiles', metric: 'tls' })} />);
  expect(await screen.findByTestId('tcplat-panel-error')).toHaveTextContent('The TLS handshake latency percentiles could not be drawn');
  const u = new URL(fetchMock.mock.calls[0][0].url, 'http://grafana');
  expect([u.pathname, u.searchParams.get('metric')]).toEqual(['/api/datasources/proxy/uid/tc/renderer/render/percentiles.png', 'tls']);
});

test('an unknown chart in the saved options is shown as such, and nothing is requested', async () => {
  render(<HeatmapPanel {...props({ chart: 'pie' as never })} />);
  expect(await screen.findByTestId('tcplat-panel-error')).toHaveTextContent('Unknown chart "pie" in the panel options: pick heatmap, percentiles, lifespan.');
  expect(fetchMock).not.toHaveBeenCalled();
});

test('copy link for alerts on a lifespan panel signs lifespan.png', async () => {
  fetchMock.mockImplementation(minted('https://renderer.example.com/render/lifespan.png?from=now-1h&to=now&exp=1893456000&sig=abc'));
  render(<HeatmapPanel {...props({ chart: 'lifespan', result: 'ok' })} />);
  await screen.findByTestId('tcplat-panel-image');
  await userEvent.click(screen.getByRole('button', { name: 'Copy link for alerts' }));
  await waitFor(() => expect(screen.getByLabelText('Signed link')).toHaveValue('https://renderer.example.com/render/lifespan.png?from=now-1h&to=now&exp=1893456000&sig=abc'));
  const req = fetchMock.mock.calls.find((c) => c[0].url.endsWith('/links'))![0];
  expect(req.data).toMatchObject({ path: '/render/lifespan.png', params: { service: ['api'], from: 'now-1h', to: 'now' } });
  expect(req.data.params).not.toHaveProperty('result');
});

const minted = (url: string) => (r: { url: string }) =>
  r.url.endsWith('/renderer/links') ? of({ data: { url, expires: '2030-01-01T00:00:00.000Z' }, status: 201, headers: new Headers() }) : png();

test('copy link for alerts shows the public link the renderer minted, with a relative range', async () => {
  // The renderer builds links from its --public-url; the panel shows exactly what it returned.
  const publicLink = 'https://renderer.example.com/render/heatmap.png?service=api&from=now-1h&to=now&exp=1893456000&sig=abc';
  fetchMock.mockImplementation(minted(publicLink));
  render(<HeatmapPanel {...props({ linkTtl: '2d' })} />);
  await screen.findByTestId('tcplat-panel-image');
  await userEvent.click(screen.getByRole('button', { name: 'Copy link for alerts' }));
  await waitFor(() => expect(screen.getByLabelText('Signed link')).toHaveValue(publicLink));
  expect(screen.queryByTestId('tcplat-panel-link-warning')).toBeNull();
  const req = fetchMock.mock.calls.find((c) => c[0].url.endsWith('/links'))![0];
  expect(req.url).toBe('/api/datasources/proxy/uid/tc/renderer/links');
  expect(req.method).toBe('POST');
  expect(req.data).toMatchObject({ path: '/render/heatmap.png', ttl: '2d', params: { service: ['api'], from: 'now-1h', to: 'now', overlay: ['p50', 'p99'] } });
});

test.each([
  ['http://127.0.0.1:7071/render/heatmap.png?exp=1&sig=a', /127\.0\.0\.1:7071, which opens only on the renderer's own machine/],
  ['http://localhost:7071/render/heatmap.png?exp=1&sig=a', /localhost:7071, which opens only/],
  // The datasource's renderer URL is where Grafana's server reaches it (compose: the service name).
  ['http://renderer:7071/render/heatmap.png?exp=1&sig=a', /renderer:7071, the address Grafana's server uses/],
])('a minted link readers cannot open (%s) comes with a warning naming --public-url', async (url, why) => {
  fetchMock.mockImplementation(minted(url));
  render(<HeatmapPanel {...props()} />);
  await screen.findByTestId('tcplat-panel-image');
  await userEvent.click(screen.getByRole('button', { name: 'Copy link for alerts' }));
  const warning = await screen.findByTestId('tcplat-panel-link-warning');
  expect(warning).toHaveTextContent(why);
  expect(warning).toHaveTextContent('--public-url');
  expect(screen.getByLabelText('Signed link')).toHaveValue(url);
});

test("a renderer without --public-url refuses to mint: the panel shows the renderer's reason", async () => {
  const body = new Blob([JSON.stringify({ error: "signed links need the renderer's public address: start it with --public-url" })]);
  fetchMock.mockImplementation((r: { url: string }) => (r.url.endsWith('/renderer/links') ? throwError(() => ({ status: 409, data: body })) : png()));
  render(<HeatmapPanel {...props()} />);
  await screen.findByTestId('tcplat-panel-image');
  await userEvent.click(screen.getByRole('button', { name: 'Copy link for alerts' }));
  expect(await screen.findByTestId('tcplat-panel-link-error')).toHaveTextContent('--public-url');
  expect(screen.queryByLabelText('Signed link')).toBeNull();
});

test('the default options show every service: no `$service` filter on a dashboard without that variable', async () => {
  fetchMock.mockReturnValue(png());
  const p = props();
  render(<HeatmapPanel {...p} options={{ ...DEFAULT_PANEL_OPTIONS }} />);
  await screen.findByTestId('tcplat-panel-image');
  expect(new URL(fetchMock.mock.calls[0][0].url, 'http://grafana').searchParams.has('service')).toBe(false);
});

test('a variable the dashboard does not have filters nothing; one it has is expanded', async () => {
  fetchMock.mockReturnValue(png());
  const replace = (s: string, _v?: unknown, f?: (v: string | string[]) => string) => s.replace(/\$host\b/, () => (f ? f(['h1', 'h2']) : 'h1,h2'));
  render(<HeatmapPanel {...props({ service: '$service', dst: '${dst}, db:5432', host: '$host' })} replaceVariables={replace as never} />);
  await screen.findByTestId('tcplat-panel-image');
  const q = new URL(fetchMock.mock.calls[0][0].url, 'http://grafana').searchParams;
  expect(q.getAll('service')).toEqual([]);
  expect(q.getAll('dst')).toEqual(['db:5432']);
  expect(q.getAll('host')).toEqual(['h1', 'h2']);
});

test('a new time range cancels the image request still running', async () => {
  // Stand-in for getBackendSrv().fetch whose teardown aborts the request, as Grafana's does
  // (grafana/grafana public/app/core/services/backend_srv.ts: fetch is built on rxjs fromFetch, aborted on unsubscribe).
  const aborted = jest.fn();
  fetchMock.mockImplementationOnce(() => new Observable(() => aborted)).mockReturnValue(png());
  const p = props();
  const { rerender } = render(<HeatmapPanel {...p} />);
  await waitFor(() => expect(fetchMock).toHaveBeenCalledTimes(1));
  const later = { from: dateTime(1_700_000_060_000), to: dateTime(1_700_003_660_000), raw: { from: 'now-1h', to: 'now' } };
  rerender(<HeatmapPanel {...p} timeRange={later} />);
  expect(aborted).toHaveBeenCalledTimes(1);
  await screen.findByTestId('tcplat-panel-image');
  expect(new URL(fetchMock.mock.calls[1][0].url, 'http://grafana').searchParams.get('from')).toBe('1700000060000');
});
