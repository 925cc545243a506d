/** Editor of a variable query: services, destinations or hosts, optionally of some service ($service allowed). */
import React from 'react';
import type { QueryEditorProps } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, RadioButtonGroup } from '@grafana/ui';
import type { TcplatDataSource } from '../datasource';
import { migrateVariableQuery } from '../migrate';
import type { TcplatOptions, TcplatQuery, TcplatVariableQuery, VariableKind } from '../types';

type Props = QueryEditorProps<TcplatDataSource, TcplatQuery, TcplatOptions, TcplatVariableQuery>;

const KINDS: Array<{ label: string; value: VariableKind }> = [
  { label: 'Services', value: 'services' },
  { label: 'Destinations', value: 'destinations' },
  { label: 'Hosts', value: 'hosts' },
];

export function VariableQueryEditor({ query: raw, onChange }: Props) {
  const query = migrateVariableQuery(raw);
  return (
    <InlineFieldRow>
      <InlineField label="List" labelWidth={14}>
        <RadioButtonGroup<VariableKind> aria-label="List" options={KINDS} value={query.kind} onChange={(kind) => onChange({ ...query, kind })} />
      </InlineField>
      {query.kind !== 'services' && (
        <InlineField label="Of service" labelWidth={14} tooltip="Only values seen with this service; a variable like $service is allowed. Empty: all.">
          <Input
            aria-label="Of service"
            width={30}
            placeholder="all services"
            defaultValue={query.service ?? ''}
            onBlur={(e) => onChange({ ...query, service: e.currentTarget.value || undefined })}
          />
        </InlineField>
      )}
    </InlineFieldRow>
  );
}
