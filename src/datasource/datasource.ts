/**
 * The tcplat datasource: reads tcp_connect_hist from InfluxDB 2.x (Flux, `influx/api/v2/query`, POST) or
 * 1.x (InfluxQL, `influx/query`, GET) through the routes of plugin.json, and hands the panel the
 * `renderer/...` routes. Queries are built by @tcplat/core; variables are expanded to values that the
 * builders quote.
 */
import {
  CustomVariableSupport,
  DataSourceApi,
  FieldType,
  createDataFrame,
  type DataQueryRequest,
  type DataQueryResponse,
  type DataSourceInstanceSettings,
  type MetricFindValue,
  type ScopedVars,
  type TestDataSourceResponse,
  type TimeRange,
} from '@grafana/data';
import { getTemplateSrv } from '@grafana/runtime';
import {
  HIST_QUERY_TAGS,
  MEASUREMENT,
  buildFluxHistQuery,
  buildInfluxQLHistQuery,
  histRowsFromFluxCsv,
  histRowsFromInfluxQL,
  quote,
  readHistLevels,
  ROLLUP_RP,
  ROLLUP_WINDOWS,
  type HistQuery,
  type LevelRead,
  type RollupWhere,
  type RollupWindowName,
  type HistQueryTag,
  type HistRow,
  type InfluxQLSeriesLike,
} from '@tcplat/core';
import { Observable } from 'rxjs';
import { Cancelled, HttpFailure, proxyFetch } from '../shared/http';
import { VariableQueryEditor } from './components/VariableQueryEditor';
import { migrateQuery, migrateVariableQuery } from './migrate';
import {
  expandValues,
  framesFromRows,
  MIN_WINDOW_MS,
  planQuery,
  queryFilters,
  tagValuesFlux,
  tagValuesFromFluxCsv,
  tagValuesFromInfluxQL,
  tagValuesInfluxQL,
  type Filters,
  type PlannedQuery,
  type Replace,
} from './queries';
import { DEFAULT_OPTIONS, DEFAULT_QUERY, VARIABLE_TAG, type TcplatOptions, type TcplatQuery, type TcplatVariableQuery } from './types';

interface InfluxQLAnswer {
  error?: string;
  results?: Array<{ error?: string; series?: InfluxQLSeriesLike[] }>;
}

/** How far back variables and the editors look for tag values on 2.x. */
const TAG_LOOKBACK_MS = 30 * 86_400_000;

export class TcplatDataSource extends DataSourceApi<TcplatQuery, TcplatOptions> {
  /** Grafana's proxy URL of this datasource, e.g. /api/datasources/proxy/uid/<uid>. */
  readonly url: string;
  readonly options: TcplatOptions;

  constructor(instanceSettings: DataSourceInstanceSettings<TcplatOptions>) {
    super(instanceSettings);
    this.url = instanceSettings.url ?? '';
    this.options = { ...DEFAULT_OPTIONS, ...instanceSettings.jsonData };
    this.variables = new TcplatVariableSupport(this);
  }

  getDefaultQuery(): Partial<TcplatQuery> {
    return DEFAULT_QUERY;
  }

  filterQuery(q: TcplatQuery): boolean {
    return !q.hide;
  }

  /** templateSrv.replace bound to a request's scoped variables. */
  replacer(scopedVars?: ScopedVars): Replace {
    const srv = getTemplateSrv();
    return (target, format) => srv.replace(target, scopedVars, format);
  }

  /**
   * Grafana subscribes to this and unsubscribes when the query is superseded or the panel goes away (new
   * time range, refresh, Explore's cancel): that aborts the HTTP requests still running.
   */
  query(request: DataQueryRequest<TcplatQuery>): Observable<DataQueryResponse> {
    return new Observable<DataQueryResponse>((subscriber) => {
      const ctl = new AbortController();
      this.runQuery(request, ctl.signal).then(
        (res) => {
          subscriber.next(res);
          subscriber.complete();
        },
        (e) => {
          if (!(e instanceof Cancelled)) subscriber.error(e);
        },
      );
      return () => ctl.abort();
    });
  }

  private async runQuery(request: DataQueryRequest<TcplatQuery>, signal: AbortSignal): Promise<DataQueryResponse> {
    const replace = this.replacer(request.scopedVars);
    const range = { fromMs: request.range.from.valueOf(), toMs: request.range.to.valueOf() };
    const targets = request.targets.filter((t) => !t.hide).map(migrateQuery);
    const results = await Promise.all(
      targets.map(async (t) => {
        try {
          const plan = planQuery(t, queryFilters(t, replace), range, request.intervalMs, this.rollupWhere().levels);
          const read = await this.readLevels(plan, signal);
          return { frames: framesFromRows(read.rows, plan, t.refId, read) };
        } catch (e) {
          if (e instanceof Cancelled) throw e;
          return { error: { refId: t.refId, message: (e as Error).message } };
        }
      }),
    );
    const errors = results.flatMap((r) => (r.error ? [r.error] : []));
    return { data: results.flatMap((r) => r.frames ?? []), ...(errors.length ? { errors, error: errors[0] } : {}) };
  }

  /**
   * Template variables replaced by the values they stand for, e.g. when Explore opens a panel's queries:
   * a multi-value variable becomes its values, "All" becomes no filter.
   */
  interpolateVariablesInQueries(queries: TcplatQuery[], scopedVars: ScopedVars): TcplatQuery[] {
    const replace = this.replacer(scopedVars);
    return queries.map((raw) => {
      const q: TcplatQuery = { ...migrateQuery(raw) };
      for (const tag of HIST_QUERY_TAGS) {
        if (!q[tag]?.length) continue;
        const values = expandValues(q[tag], replace);
        if (values.length > 0) q[tag] = values;
        else delete q[tag];
      }
      return q;
    });
  }

  /** Which rollup levels to read and where they are (settings, with pkg/core's defaults). */
  rollupWhere(): RollupWhere {
    const o = this.options;
    const levels: RollupWindowName[] = o.rollups === false ? [] : ROLLUP_WINDOWS.map((w) => w.name);
    return { levels, rp: o.rollupRetentionPolicy || ROLLUP_RP, ...(o.rollupBucket ? { bucket: o.rollupBucket } : {}), fleet: levels.length > 0 && o.fleetRollups !== false };
  }

  /** The rows of one query (one part, one level), from whichever InfluxDB this datasource talks to. */
  async histRows(q: HistQuery, groupBy: readonly HistQueryTag[], signal?: AbortSignal): Promise<HistRow[]> {
    if (this.options.dialect === 'influxql') return histRowsFromInfluxQL(await this.influxQL(buildInfluxQLHistQuery(q), signal), groupBy);
    return histRowsFromFluxCsv(await this.flux(buildFluxHistQuery(q, { bucket: this.options.bucket ?? '' }), signal), groupBy);
  }

  /**
   * A planned query at its level (pkg/core readHistLevels): the newest windows from finer levels, and the
   * 10 s data with a note when the rollups are missing, empty or younger than the range.
   */
  readLevels(plan: PlannedQuery, signal?: AbortSignal, nowMs: number = Date.now()): Promise<LevelRead> {
    const dialect = this.options.dialect === 'influxql' ? 'influxql' : 'flux';
    return readHistLevels((q) => this.histRows(q, plan.queryGroupBy, signal), dialect, plan.hist, plan.level, this.rollupWhere(), nowMs, MIN_WINDOW_MS);
  }

  /** Values of one tag among series matching filters (raw values: variables are expanded here). */
  async tagValues(tag: HistQueryTag, filters: Filters = {}, range?: TimeRange, signal?: AbortSignal): Promise<string[]> {
    if (this.options.dialect === 'influxql') return tagValuesFromInfluxQL(await this.influxQL(tagValuesInfluxQL(tag, filters), signal));
    const startMs = range ? range.from.valueOf() : Date.now() - TAG_LOOKBACK_MS;
    return tagValuesFromFluxCsv(await this.flux(tagValuesFlux(this.options.bucket ?? '', tag, filters, Math.max(0, Math.floor(startMs))), signal));
  }

  async metricFindQuery(query: TcplatVariableQuery | string, options?: { range?: TimeRange; scopedVars?: ScopedVars; signal?: AbortSignal }): Promise<MetricFindValue[]> {
    const q = migrateVariableQuery(query);
    const filters = queryFilters({ service: q.service ? [q.service] : [] }, this.replacer(options?.scopedVars));
    const values = await this.tagValues(VARIABLE_TAG[q.kind], filters, options?.range, options?.signal);
    return values.map((text) => ({ text, value: text }));
  }

  // ---- HTTP through the `influx/...` routes ----

  private influxWhere(): string {
    return this.options.influxUrl ?? '';
  }

  /**
   * InfluxQL goes by GET only: the `influx/query` route matches GET alone, so no Grafana user can send
   * InfluxDB 1.x a POST (its verb for CREATE/DROP/GRANT). 1.x still runs such statements by GET with a
   * deprecation warning, which is why the datasource's 1.x user should hold only READ (see README).
   */
  async influxQL(q: string, signal?: AbortSignal): Promise<InfluxQLSeriesLike[]> {
    const params = new URLSearchParams({ db: this.options.database ?? '', epoch: 'ms' });
    if (this.options.retentionPolicy) params.set('rp', this.options.retentionPolicy);
    params.set('q', q);
    const res = await proxyFetch<InfluxQLAnswer>(
      { url: `${this.url}/influx/query?${params.toString()}`, method: 'GET' },
      'InfluxDB',
      this.influxWhere(),
      signal,
    );
    const body = res.data ?? {};
    const err = body.error ?? body.results?.find((r) => r.error)?.error;
    if (err) throw new HttpFailure(`InfluxDB: ${err}`, res.status, 'http', err);
    return body.results?.[0]?.series ?? [];
  }

  async flux(query: string, signal?: AbortSignal): Promise<string> {
    const params = new URLSearchParams({ org: this.options.org ?? '' });
    const res = await proxyFetch<string>(
      {
        url: `${this.url}/influx/api/v2/query?${params.toString()}`,
        method: 'POST',
        data: { query, type: 'flux', dialect: { header: true, annotations: ['datatype', 'group', 'default'], delimiter: ',' } },
        headers: { 'Content-Type': 'application/json', Accept: 'application/csv' },
        responseType: 'text',
      },
      'InfluxDB',
      this.influxWhere(),
      signal,
    );
    return typeof res.data === 'string' ? res.data : String(res.data ?? '');
  }

  // ---- Save & test ----

  async testDatasource(): Promise<TestDataSourceResponse> {
    const o = this.options;
    if (!o.influxUrl) return { status: 'error', message: 'Set the InfluxDB URL (e.g. http://influxdb:8086), then save & test again.' };
    let influx: TestDataSourceResponse;
    try {
      influx = o.dialect === 'influxql' ? await this.testInfluxQL() : await this.testFlux();
    } catch (e) {
      const f = e as HttpFailure;
      if (f.kind === 'unreachable' || f.kind === 'unauthorized') return { status: 'error', message: f.message };
      return { status: 'error', message: f.message };
    }
    if (influx.status === 'error' || !o.rendererUrl) {
      if (influx.status !== 'error' && !o.rendererUrl) influx.message += ' No renderer URL set: the tcplat heatmap panel needs one.';
      return influx;
    }
    try {
      await proxyFetch<string>({ url: `${this.url}/renderer/metrics`, method: 'GET', responseType: 'text' }, 'the renderer', o.rendererUrl);
      return { ...influx, message: `${influx.message} Renderer OK.` };
    } catch (e) {
      return { status: 'error', message: `InfluxDB is fine, but: ${(e as Error).message}` };
    }
  }

  private noData(where: string): TestDataSourceResponse {
    return {
      status: 'success',
      message:
        `Connected to InfluxDB (${where}), but there is no tcplat data yet (no ${MEASUREMENT.connectHist} points). ` +
        'Start the tcplat agent on a host (tcplat agent --influx-url ...) writing to this ' +
        (this.options.dialect === 'influxql' ? 'database' : 'bucket') +
        '; panels fill within a minute.',
    };
  }

  private async testInfluxQL(): Promise<TestDataSourceResponse> {
    const db = this.options.database ?? '';
    if (!db) return { status: 'error', message: 'Set the database (InfluxDB 1.x), e.g. tcplat.' };
    let series: InfluxQLSeriesLike[];
    try {
      // SHOW SERIES (unlike SHOW MEASUREMENTS on 1.x) reports a missing database as an error.
      series = await this.influxQL(`SHOW SERIES FROM ${quote('influxql-ident', MEASUREMENT.connectHist)} LIMIT 1`);
    } catch (e) {
      const f = e as HttpFailure;
      if (f.kind === 'http' && /database not found/i.test(f.serverMessage ?? '')) {
        return { status: 'error', message: `InfluxDB has no database ${JSON.stringify(db)}: create it (CREATE DATABASE ...) or let the agent create it, or fix the database name.` };
      }
      if (f.kind === 'http' && /retention policy not found/i.test(f.serverMessage ?? '')) {
        return { status: 'error', message: `Database ${JSON.stringify(db)} has no retention policy ${JSON.stringify(this.options.retentionPolicy)}: leave it empty for the default, or fix the name.` };
      }
      if (f.kind === 'http' && /authori[sz]ation|authenticat|credentials/i.test(f.serverMessage ?? '')) {
        return { status: 'error', message: `InfluxDB refused the credentials (${f.serverMessage}). Check the user and password in the datasource settings.` };
      }
      throw e;
    }
    const rp = this.options.retentionPolicy ? `, retention policy ${this.options.retentionPolicy}` : '';
    if (series.length === 0 || series.every((s) => s.values.length === 0)) return this.noData(`database ${db}${rp}`);
    return { status: 'success', message: `Connected to InfluxDB 1.x: database ${db}${rp} has tcplat data.` };
  }

  private async testFlux(): Promise<TestDataSourceResponse> {
    const { org, bucket } = this.options;
    if (!org || !bucket) return { status: 'error', message: 'Set the organization and the bucket (InfluxDB 2.x).' };
    const s = (v: string) => quote('flux-string', v);
    const q = [
      `from(bucket: ${s(bucket)})`,
      `  |> range(start: -30d)`,
      `  |> filter(fn: (r) => r._measurement == ${s(MEASUREMENT.connectHist)})`,
      `  |> limit(n: 1)`,
      `  |> keep(columns: ["_time"])`,
    ].join('\n');
    let text: string;
    try {
      text = await this.flux(q);
    } catch (e) {
      const f = e as HttpFailure;
      const m = f.serverMessage ?? '';
      if (f.kind === 'http' && /bucket .*not found|could not find bucket|failed to find bucket/i.test(m)) {
        return { status: 'error', message: `InfluxDB has no bucket ${JSON.stringify(bucket)} in organization ${JSON.stringify(org)}: create it (influx bucket create) or fix the bucket name.` };
      }
      if (f.kind === 'http' && /organization .*not found|failed to decode request/i.test(m)) {
        return { status: 'error', message: `InfluxDB has no organization ${JSON.stringify(org)}: fix the organization name (${m}).` };
      }
      throw e;
    }
    const rows = text.split(/\r?\n/).filter((l) => l !== '' && !l.startsWith('#'));
    if (rows.length <= 1) return this.noData(`bucket ${bucket}`);
    return { status: 'success', message: `Connected to InfluxDB 2.x: bucket ${bucket} has tcplat data.` };
  }
}

/** Variable queries (services, destinations, hosts) with their own editor. */
export class TcplatVariableSupport extends CustomVariableSupport<TcplatDataSource, TcplatVariableQuery> {
  editor = VariableQueryEditor;

  constructor(private readonly ds: TcplatDataSource) {
    super();
  }

  /** Cancellable like panel queries: unsubscribing aborts the request. */
  query(request: DataQueryRequest<TcplatVariableQuery>): Observable<DataQueryResponse> {
    return new Observable<DataQueryResponse>((subscriber) => {
      const ctl = new AbortController();
      this.ds.metricFindQuery(request.targets[0], { range: request.range, scopedVars: request.scopedVars, signal: ctl.signal }).then(
        (values) => {
          subscriber.next({ data: [createDataFrame({ fields: [{ name: 'text', type: FieldType.string, values: values.map((v) => String(v.text)) }] })] });
          subscriber.complete();
        },
        (e) => {
          if (!(e instanceof Cancelled)) subscriber.error(e);
        },
      );
      return () => ctl.abort();
    });
  }
}
