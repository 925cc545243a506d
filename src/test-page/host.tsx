/**
 * Browser test host (tests/plugins-grafana13.browser.test.ts): loads the BUILT plugins (dist/<id>/module.js,
 * AMD modules) the way Grafana does, handing each `define` dependency the module Grafana shares with
 * plugins, then mounts the datasource's editors, runs its queries and draws the panel.
 *
 * The test bundles this file twice: once with React 18 + @grafana/* 12.3 (the root's packages) and once
 * with React 19 + @grafana/* 13 (the tests/grafana13 workspace), so the same module.js is proven against
 * both. Grafana's list of shared modules: grafana/grafana public/app/features/plugins/loader/
 * sharedDependencies.ts (react/jsx-runtime and react/jsx-dev-runtime among them since 12.3); Grafana's
 * SystemJS gives an AMD plugin `module` as `{ uri }` of its module.js.
 *
 * The real @grafana/runtime of each set is used, with its services set the way Grafana's boot sets them:
 * fetch does real HTTP (to the test's stand-in for the datasource proxy) and its unsubscribe aborts the
 * request, as Grafana's rxjs fromFetch does.
 */
import * as EmotionCss from '@emotion/css';
import * as GrafanaData from '@grafana/data';
import { createTheme, dateTime, LoadingState, ThemeContext, type DataQueryRequest, type DataSourceInstanceSettings, type DataSourcePlugin, type PanelPlugin } from '@grafana/data';
import * as GrafanaRuntime from '@grafana/runtime';
import { backendFetch } from './backend-fetch';
import * as GrafanaUI from '@grafana/ui';
import * as React from 'react';
import * as ReactDOM from 'react-dom';
import { createRoot } from 'react-dom/client';
import * as JsxDevRuntime from 'react/jsx-dev-runtime';
import * as JsxRuntime from 'react/jsx-runtime';
import * as Rxjs from 'rxjs';
import { Observable, lastValueFrom, type Subscription } from 'rxjs';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDataSourcePlugin = DataSourcePlugin<any, any, any, any>;

const SHARED: Record<string, unknown> = {
  react: React,
  'react-dom': ReactDOM,
  'react/jsx-runtime': JsxRuntime,
  'react/jsx-dev-runtime': JsxDevRuntime,
  '@grafana/data': GrafanaData,
  '@grafana/ui': GrafanaUI,
  '@grafana/runtime': GrafanaRuntime,
  '@emotion/css': EmotionCss,
  rxjs: Rxjs,
};

type Win = typeof window & { define?: ((deps: string[], factory: (...a: unknown[]) => unknown) => void) & { amd?: object }; tcplatHost?: Record<string, unknown> };
const win = window as Win;

/** Load one plugin's module.js as Grafana's loader does: an anonymous AMD define with shared dependencies. */
function loadPlugin(id: string): Promise<Record<string, unknown>> {
  const uri = `/public/plugins/${id}/module.js`;
  return new Promise((resolve, reject) => {
    const define = (deps: string[], factory: (...a: unknown[]) => unknown) => {
      try {
        const args = deps.map((d) => {
          if (d === 'module') return { uri };
          if (!(d in SHARED)) throw new Error(`${id} imports ${d}, which Grafana does not share with plugins`);
          return SHARED[d];
        });
        resolve(factory(...args) as Record<string, unknown>);
      } catch (e) {
        reject(e);
      }
    };
    define.amd = {};
    win.define = define;
    const s = document.createElement('script');
    s.src = uri;
    s.onerror = () => reject(new Error(`could not load ${uri}`));
    document.head.appendChild(s);
  }).finally(() => {
    delete win.define;
  }) as Promise<Record<string, unknown>>;
}

const qs = new URLSearchParams(location.search);
const settings = {
  id: 1,
  uid: 'tcplat',
  type: 'tcplat-connect-datasource',
  name: 'tcplat',
  url: '/api/datasources/proxy/uid/tcplat',
  access: 'proxy',
  readOnly: false,
  meta: { id: 'tcplat-connect-datasource' },
  jsonData: { influxUrl: 'http://influxdb:8086', dialect: 'influxql', database: qs.get('db') ?? 'tcplat', rendererUrl: 'http://renderer:7071' },
} as unknown as DataSourceInstanceSettings;
const variables: Record<string, string[]> = { service: qs.getAll('service') };

const backendSrv = { fetch: backendFetch };

const templateSrv = {
  getVariables: () => Object.keys(variables).map((name) => ({ name, type: 'custom' })),
  containsTemplate: (t?: string) => /\$/.test(t ?? ''),
  updateTimeRange: () => {},
  replace(target?: string, _scoped?: unknown, format?: unknown): string {
    return (target ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => {
      const name = a ?? b;
      if (!(name in variables)) return m;
      const v = variables[name];
      return typeof format === 'function' ? (format as (v: string[]) => string)(v) : v.join(',');
    });
  },
};

interface HostState {
  react: string;
  frames?: string;
  bucketFrames?: string;
  error?: string;
}

function Host({ ds, panel }: { ds: AnyDataSourcePlugin; panel: PanelPlugin }) {
  const theme = React.useMemo(() => createTheme({ colors: { mode: 'dark' } }), []);
  const instance = React.useMemo(() => new (ds.DataSourceClass as unknown as new (s: DataSourceInstanceSettings) => GrafanaData.DataSourceApi)(settings), [ds]);
  const [options, setOptions] = React.useState(settings as unknown as GrafanaData.DataSourceSettings);
  const [query, setQuery] = React.useState<GrafanaData.DataQuery>({ refId: 'A', metric: 'p99', groupBy: ['service'] } as GrafanaData.DataQuery);
  const [state, setState] = React.useState<HostState>({ react: React.version });
  const from = Number(qs.get('from'));
  const to = Number(qs.get('to'));
  const timeRange = React.useMemo(() => ({ from: dateTime(from), to: dateTime(to), raw: { from: dateTime(from), to: dateTime(to) } }), [from, to]);
  const request = (targets: GrafanaData.DataQuery[]) => ({ targets, range: timeRange, intervalMs: 60_000, scopedVars: {}, requestId: 'A' }) as unknown as DataQueryRequest;
  const describe = (res: GrafanaData.DataQueryResponse) =>
    res.errors?.length ? `error: ${res.errors[0].message}` : `${res.data.length} frames: ${res.data.map((f: GrafanaData.DataFrame) => `${f.meta?.type ?? '?'} ${f.fields.length} fields ${Object.values(f.fields[1]?.labels ?? {}).join('/')}`).join(', ')}`;

  React.useEffect(() => {
    let held: Subscription | undefined;
    win.tcplatHost = {
      // A query whose requests the test's proxy holds: unsubscribing must abort them for real.
      startHeldQuery: () => {
        const q = instance.query(request([{ refId: 'H', metric: 'rate' } as GrafanaData.DataQuery])) as Observable<GrafanaData.DataQueryResponse>;
        held = q.subscribe({ error: () => {} });
      },
      cancelHeldQuery: () => held?.unsubscribe(),
    };
  });

  const Panel = panel.panel!;
  const QueryEditor = ds.components.QueryEditor!;
  const ConfigEditor = ds.components.ConfigEditor!;
  const panelProps = {
    id: 1,
    data: { state: LoadingState.Done, series: [], timeRange },
    timeRange,
    timeZone: 'utc',
    // The plugin's own defaults (PanelPlugin.defaults runs its options builder, as Grafana does).
    // ?chart= and ?metric= pick the chart (the panel's options of those names).
    options: {
      ...(panel.defaults as object),
      title: 'connect latency: $service',
      service: '$service',
      ...(qs.get('chart') ? { chart: qs.get('chart'), title: `${qs.get('chart')}: $service` } : {}),
      ...(qs.get('metric') ? { metric: qs.get('metric') } : {}),
    },
    transparent: false,
    width: 760,
    height: 340,
    fieldConfig: { defaults: {}, overrides: [] },
    renderCounter: 0,
    title: 'tcplat heatmap',
    eventBus: new GrafanaData.EventBusSrv(),
    replaceVariables: (s: string, _v?: unknown, f?: unknown) => templateSrv.replace(s, undefined, f),
    onOptionsChange: () => {},
    onFieldConfigChange: () => {},
    onChangeTimeRange: () => {},
  } as unknown as GrafanaData.PanelProps;
  return (
    <ThemeContext.Provider value={theme}>
      <div style={{ background: theme.colors.background.canvas, color: theme.colors.text.primary, fontFamily: theme.typography.fontFamily, padding: 16, minHeight: '100vh' }}>
        <div data-testid="host-react">{state.react}</div>
        <div style={{ width: 760, height: 340, border: `1px solid ${theme.colors.border.weak}`, background: theme.colors.background.primary }}>
          <Panel {...panelProps} />
        </div>
        <h3>Query editor</h3>
        <QueryEditor datasource={instance} query={query} onChange={setQuery} onRunQuery={() => {}} />
        <button
          data-testid="run"
          onClick={async () => {
            const [series, buckets] = await Promise.all([lastValueFrom(instance.query(request([query])) as Observable<GrafanaData.DataQueryResponse>), lastValueFrom(instance.query(request([{ ...query, metric: 'buckets' } as GrafanaData.DataQuery])) as Observable<GrafanaData.DataQueryResponse>)]);
            setState((s) => ({ ...s, frames: describe(series), bucketFrames: describe(buckets) }));
          }}
        >
          Run query
        </button>
        <pre data-testid="frames">{state.frames}</pre>
        <pre data-testid="bucket-frames">{state.bucketFrames}</pre>
        <h3>Config editor</h3>
        <ConfigEditor options={options} onOptionsChange={setOptions} />
      </div>
    </ThemeContext.Provider>
  );
}

async function main() {
  const status = document.getElementById('status')!;
  try {
    // Grafana's boot registers its option editors (public/app/core/components/OptionsUI/registry.tsx); the
    // panel's options builder looks them up by id. The host never draws the options pane: ids suffice.
    GrafanaData.standardEditorsRegistry.setInit(() =>
      ['text', 'number', 'slider', 'boolean', 'radio', 'select', 'multi-select', 'unit', 'color', 'links', 'strings', 'timezone'].map((id) => ({ id, name: id, editor: () => null })),
    );
    GrafanaRuntime.setBackendSrv(backendSrv as unknown as GrafanaRuntime.BackendSrv);
    GrafanaRuntime.setTemplateSrv(templateSrv as unknown as GrafanaRuntime.TemplateSrv);
    GrafanaRuntime.setDataSourceSrv({
      getInstanceSettings: () => settings,
      getList: () => [settings],
      get: async () => undefined,
      reload: () => {},
      registerRuntimeDataSource: () => {},
    } as unknown as GrafanaRuntime.DataSourceSrv);
    // One at a time: an anonymous define belongs to the script that is running.
    const ds = await loadPlugin('tcplat-connect-datasource');
    const panel = await loadPlugin('tcplat-heatmap-panel');
    createRoot(document.getElementById('root')!).render(<Host ds={ds.plugin as AnyDataSourcePlugin} panel={panel.plugin as PanelPlugin} />);
    status.textContent = 'loaded';
  } catch (e) {
    status.textContent = `failed: ${(e as Error).message}`;
  }
}

void main();
