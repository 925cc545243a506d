/**
 * Browser test page only: a thin @grafana/runtime for the page that tests/plugins.browser.test.ts bundles.
 * getBackendSrv().fetch performs real fetches (against tests/support/grafana-proxy.ts, the stand-in for
 * Grafana's datasource proxy) and parses bodies as Grafana does; getTemplateSrv knows the page's
 * variables; getDataSourceSrv knows the page's tcplat datasource.
 */
import type { DataSourceInstanceSettings, TypedVariableModel } from '@grafana/data';
import { backendFetch } from './backend-fetch';

interface PageState {
  variables: Record<string, string | string[]>;
  datasource: DataSourceInstanceSettings;
}
export const pageState: PageState = { variables: {}, datasource: {} as DataSourceInstanceSettings };

export function getBackendSrv() {
  return { fetch: backendFetch };
}

export function getTemplateSrv() {
  return {
    getVariables: () => Object.keys(pageState.variables).map((name) => ({ name }) as TypedVariableModel),
    replace(target: string, _scoped?: unknown, format?: ((v: string | string[]) => string) | string): string {
      return (target ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => {
        const name = a ?? b;
        if (!(name in pageState.variables)) return m;
        const v = pageState.variables[name];
        return typeof format === 'function' ? format(v) : Array.isArray(v) ? v.join(',') : v;
      });
    },
  };
}

export function getDataSourceSrv() {
  return {
    getInstanceSettings: () => pageState.datasource,
    getList: () => [pageState.datasource],
  };
}
