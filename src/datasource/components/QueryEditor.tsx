/**
 * The query editor: which connections (service, destination, host, result: several values each, offered
 * from the data, template variables allowed), what to show (metric) and how to split it (group by).
 */
import React, { useEffect, useMemo, useState } from 'react';
import type { QueryEditorProps, SelectableValue } from '@grafana/data';
import { getTemplateSrv } from '@grafana/runtime';
import { InlineField, InlineFieldRow, MultiSelect, Select } from '@grafana/ui';
import { HIST_QUERY_TAGS, MEASUREMENT, RESULTS, TLS_RESULTS, type HistQueryTag } from '@tcplat/core';
import type { TcplatDataSource } from '../datasource';
import { migrateQuery } from '../migrate';
import { bucketsGroupByNotice, measurementOf, queryFilters } from '../queries';
import { METRICS, METRIC_DESCRIPTIONS, METRIC_LABELS, type Metric, type TcplatOptions, type TcplatQuery } from '../types';

type Props = QueryEditorProps<TcplatDataSource, TcplatQuery, TcplatOptions>;

const TAG_LABELS: Record<HistQueryTag, string> = { service: 'Service', dst: 'Destination', host: 'Host', result: 'Result' };
const METRIC_OPTIONS: Array<SelectableValue<Metric>> = METRICS.map((m) => ({ label: METRIC_LABELS[m], value: m, description: METRIC_DESCRIPTIONS[m] }));
const GROUP_OPTIONS: Array<SelectableValue<HistQueryTag>> = HIST_QUERY_TAGS.map((t) => ({ label: TAG_LABELS[t], value: t }));

function variableNames(): string[] {
  try {
    return getTemplateSrv()
      .getVariables()
      .map((v) => `$${v.name}`);
  } catch {
    return [];
  }
}

/** Values of one tag, among the series the tags before it select (destinations of the chosen services...). */
function useTagValues(ds: TcplatDataSource, tag: HistQueryTag, query: TcplatQuery): { values: string[]; loading: boolean; error?: string } {
  const before = HIST_QUERY_TAGS.slice(0, HIST_QUERY_TAGS.indexOf(tag));
  const key = JSON.stringify(before.map((t) => query[t] ?? []));
  const [state, setState] = useState<{ values: string[]; loading: boolean; error?: string }>({ values: [], loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    const q: Partial<TcplatQuery> = {};
    for (const t of before) q[t] = query[t];
    (async () => {
      try {
        const values = await ds.tagValues(tag, queryFilters(q, ds.replacer()));
        if (live) setState({ values, loading: false });
      } catch (e) {
        if (live) setState({ values: [], loading: false, error: (e as Error).message });
      }
    })();
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [ds, tag, key]);
  return state;
}

function TagSelect({ ds, tag, query, onChange }: { ds: TcplatDataSource; tag: HistQueryTag; query: TcplatQuery; onChange: (tag: HistQueryTag, v: string[]) => void }) {
  const { values, loading, error } = useTagValues(ds, tag, query);
  const selected = query[tag] ?? [];
  const options = useMemo(() => {
    // TLS handshakes end `ok` or `failed`; the values listed from the data are the connects' results.
    const tls = measurementOf(query.metric) === MEASUREMENT.tlsHist;
    const fromData = tag === 'result' ? (tls ? [...TLS_RESULTS] : [...new Set([...RESULTS, ...values])]) : values;
    const all = [...variableNames(), ...fromData, ...selected.filter((s) => !fromData.includes(s))];
    return [...new Set(all)].map((v) => ({ label: v, value: v }));
  }, [tag, values, selected, query.metric]);
  return (
    <InlineField label={TAG_LABELS[tag]} labelWidth={14} tooltip={error ? `Could not list values: ${error}` : 'Empty: every value. Template variables allowed.'} invalid={Boolean(error)}>
      <MultiSelect<string>
        aria-label={TAG_LABELS[tag]}
        inputId={`tcplat-query-${tag}`}
        isLoading={loading}
        allowCustomValue
        isClearable
        placeholder="all"
        width={40}
        options={options}
        value={selected}
        onChange={(items) => onChange(tag, items.map((i) => i.value!).filter((v) => v !== undefined))}
      />
    </InlineField>
  );
}

export function QueryEditor({ datasource, query: raw, onChange, onRunQuery }: Props) {
  const query = useMemo(() => migrateQuery(raw), [raw]);
  const update = (next: TcplatQuery) => {
    onChange(next);
    onRunQuery();
  };
  const setTag = (tag: HistQueryTag, values: string[]) => {
    const next = { ...query };
    if (values.length) next[tag] = values;
    else delete next[tag];
    update(next);
  };
  return (
    <>
      <InlineFieldRow>
        {HIST_QUERY_TAGS.slice(0, 2).map((t) => (
          <TagSelect key={t} ds={datasource} tag={t} query={query} onChange={setTag} />
        ))}
      </InlineFieldRow>
      <InlineFieldRow>
        {HIST_QUERY_TAGS.slice(2).map((t) => (
          <TagSelect key={t} ds={datasource} tag={t} query={query} onChange={setTag} />
        ))}
      </InlineFieldRow>
      <InlineFieldRow>
        <InlineField label="Metric" labelWidth={14} tooltip="Connect latency (quantiles, max, mean in ms; connects/s; failure share; heatmap buckets), connection churn (new connections/s, concurrently open, lifespans, short-lived share; needs the agent's --probe-close) or TLS handshakes (p50/p99, failure rate, handshakes/s).">
          <Select<Metric> aria-label="Metric" inputId="tcplat-query-metric" width={40} options={METRIC_OPTIONS} value={query.metric} onChange={(v) => update({ ...query, metric: v.value! })} />
        </InlineField>
        <InlineField label="Group by" labelWidth={14} tooltip="One series per combination of these tags.">
          <MultiSelect<HistQueryTag>
            aria-label="Group by"
            inputId="tcplat-query-groupby"
            width={40}
            placeholder="everything together"
            options={GROUP_OPTIONS}
            value={query.groupBy ?? []}
            onChange={(items) => update({ ...query, groupBy: items.map((i) => i.value!) })}
          />
        </InlineField>
      </InlineFieldRow>
      <div data-testid="tcplat-metric-description" style={{ opacity: 0.8, fontSize: 12, margin: '4px 0' }}>
        {METRIC_DESCRIPTIONS[query.metric] ?? ''}
      </div>
      {query.metric === 'buckets' && (query.groupBy?.length ?? 0) > 0 && (
        <div data-testid="tcplat-buckets-groupby" style={{ opacity: 0.8, fontSize: 12, margin: '4px 0' }}>
          {bucketsGroupByNotice(query.groupBy!)}
        </div>
      )}
    </>
  );
}
