/**
 * Browser test page (tests/plugins.browser.test.ts): the real panel and editors inside @grafana/ui's
 * theme (dark), against the test's stand-in for Grafana's datasource proxy. Settings come from the query
 * string: db (or dialect=flux with org and bucket), from, to, service, chart and metric (the panel's
 * options of those names; default the panel's), and ds (the datasource uid, default
 * tcplat), influx and renderer (the URLs the stand-in's copy of the same datasource uses, shown in
 * messages as Grafana would).
 */
import React, { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { lastValueFrom } from 'rxjs';
import { createTheme, dateTime, LoadingState, ThemeContext, type DataQueryRequest, type DataSourceInstanceSettings, type DataSourceSettings, type PanelProps } from '@grafana/data';
import { ConfigEditor } from '../datasource/components/ConfigEditor';
import { QueryEditor } from '../datasource/components/QueryEditor';
import { TcplatDataSource } from '../datasource/datasource';
import type { TcplatOptions, TcplatQuery, TcplatSecureOptions } from '../datasource/types';
import { HeatmapPanel } from '../panel/components/HeatmapPanel';
import { DEFAULT_PANEL_OPTIONS, type PanelOptions } from '../panel/types';
import { getTemplateSrv, pageState } from './runtime';

const qs = new URLSearchParams(location.search);
const theme = createTheme({ colors: { mode: 'dark' } });
const settings = {
  id: 1,
  uid: qs.get('ds') ?? 'tcplat',
  type: 'tcplat-connect-datasource',
  name: 'tcplat',
  url: `/api/datasources/proxy/uid/${qs.get('ds') ?? 'tcplat'}`,
  access: 'proxy',
  readOnly: false,
  meta: { id: 'tcplat-connect-datasource' },
  jsonData:
    qs.get('dialect') === 'flux'
      ? { influxUrl: qs.get('influx') ?? 'http://influxdb:8086', dialect: 'flux', org: qs.get('org') ?? 'tcplat', bucket: qs.get('bucket') ?? 'tcplat', rendererUrl: qs.get('renderer') ?? 'http://renderer:7071' }
      : { influxUrl: qs.get('influx') ?? 'http://influxdb:8086', dialect: 'influxql', database: qs.get('db') ?? 'tcplat', rendererUrl: qs.get('renderer') ?? 'http://renderer:7071' },
} as unknown as DataSourceInstanceSettings<TcplatOptions>;
pageState.datasource = settings as DataSourceInstanceSettings;
pageState.variables = { service: qs.getAll('service') };
const ds = new TcplatDataSource(settings);

const loadedAt = Date.now();

/** The range given in the query string, moving with the clock on each refresh like `now-1h`..`now`. */
function useRange(refreshes: number) {
  return useMemo(() => {
    const shift = refreshes > 0 ? Date.now() - loadedAt : 0;
    const from = dateTime(Number(qs.get('from')) + shift);
    const to = dateTime(Number(qs.get('to')) + shift);
    return { from, to, raw: { from, to }, refreshes };
  }, [refreshes]);
}

function App() {
  const [refreshes, setRefreshes] = useState(0);
  const timeRange = useRange(refreshes);
  const [options, setOptions] = useState(settings as unknown as DataSourceSettings<TcplatOptions, TcplatSecureOptions>);
  const [query, setQuery] = useState<TcplatQuery>({ refId: 'A', metric: 'p99', groupBy: ['service'] });
  const [frames, setFrames] = useState('');
  const [tested, setTested] = useState('');
  const run = async (q: TcplatQuery) => {
    const res = await lastValueFrom(ds.query({ targets: [q], range: timeRange, intervalMs: 60_000, scopedVars: {} } as unknown as DataQueryRequest<TcplatQuery>));
    setFrames(res.errors?.length ? `error: ${res.errors[0].message}` : `${res.data.length} frames: ${res.data.map((f) => Object.values(f.fields[1]?.labels ?? {}).join('/')).join(', ')}`);
  };
  const panelProps = {
    id: 1,
    data: { state: LoadingState.Done, series: [], timeRange },
    timeRange,
    timeZone: 'utc',
    options: {
      ...DEFAULT_PANEL_OPTIONS,
      service: '$service',
      title: 'connect latency: $service',
      ...(qs.get('chart') ? { chart: qs.get('chart') as PanelOptions['chart'], title: `${qs.get('chart')}: $service` } : {}),
      ...(qs.get('metric') ? { metric: qs.get('metric') as PanelOptions['metric'] } : {}),
      ...(qs.get('result') ? { result: qs.get('result')! } : {}),
    },
    transparent: false,
    width: 760,
    height: 340,
    fieldConfig: { defaults: {}, overrides: [] },
    renderCounter: refreshes,
    title: 'tcplat heatmap',
    // Panels get replaceVariables from the dashboard: here, the page's template service.
    replaceVariables: (s: string, _v?: unknown, f?: (v: string | string[]) => string) => getTemplateSrv().replace(s, undefined, f),
    onOptionsChange: () => {},
    onFieldConfigChange: () => {},
    onChangeTimeRange: () => {},
  } as unknown as PanelProps<typeof DEFAULT_PANEL_OPTIONS>;
  return (
    <ThemeContext.Provider value={theme}>
      <div style={{ background: theme.colors.background.canvas, color: theme.colors.text.primary, fontFamily: theme.typography.fontFamily, padding: 16, minHeight: '100vh' }}>
        <h3>tcplat heatmap panel</h3>
        <button data-testid="refresh" onClick={() => setRefreshes((n) => n + 1)}>
          Refresh
        </button>
        <div style={{ width: 760, height: 340, border: `1px solid ${theme.colors.border.weak}`, background: theme.colors.background.primary, marginTop: 8 }}>
          <HeatmapPanel {...panelProps} />
        </div>
        <h3>Query editor</h3>
        <QueryEditor datasource={ds} query={query} onChange={setQuery} onRunQuery={() => {}} />
        <button data-testid="run" onClick={() => run(query)}>
          Run query
        </button>
        <pre data-testid="frames">{frames}</pre>
        <h3>Config editor</h3>
        <ConfigEditor options={options} onOptionsChange={setOptions} />
        <button data-testid="test-datasource" onClick={() => ds.testDatasource().then((r) => setTested(`${r.status}: ${r.message}`))}>
          Save &amp; test
        </button>
        <pre data-testid="test-result" style={{ whiteSpace: 'pre-wrap' }}>
          {tested}
        </pre>
      </div>
    </ThemeContext.Provider>
  );
}

createRoot(document.getElementById('root')!).render(<App />);
