/**
 * Datasource settings: where InfluxDB is (2.x with Flux: org + bucket + token; 1.x with InfluxQL:
 * database + retention policy + user/password) and where the renderer is. Secrets go to secureJsonData
 * (write-only from the browser's point of view); plugin.json's routes inject them on Grafana's side.
 */
import React, { type ChangeEvent } from 'react';
import type { DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { FieldSet, InlineField, InlineSwitch, Input, RadioButtonGroup, SecretInput } from '@grafana/ui';
import { ROLLUP_BUCKET_SUFFIX, ROLLUP_RP } from '@tcplat/core';
import { DEFAULT_OPTIONS, type Dialect, type TcplatOptions, type TcplatSecureOptions } from '../types';

type Props = DataSourcePluginOptionsEditorProps<TcplatOptions, TcplatSecureOptions>;

const LABEL = 22;
const WIDTH = 48;

const DIALECTS: Array<{ label: string; value: Dialect; description: string }> = [
  { label: 'Flux (InfluxDB 2.x)', value: 'flux', description: 'organization, bucket and an API token' },
  { label: 'InfluxQL (InfluxDB 1.x)', value: 'influxql', description: 'database, retention policy, user and password' },
];

export function ConfigEditor({ options, onOptionsChange }: Props) {
  const json = options.jsonData;
  const dialect = json.dialect ?? DEFAULT_OPTIONS.dialect;
  const secureFields = (options.secureJsonFields ?? {}) as Record<string, boolean>;
  const secure = (options.secureJsonData ?? {}) as TcplatSecureOptions;

  const setJson = <K extends keyof TcplatOptions>(key: K, value: TcplatOptions[K]) => onOptionsChange({ ...options, jsonData: { ...json, [key]: value } });
  const onText = (key: keyof TcplatOptions) => (e: ChangeEvent<HTMLInputElement>) => setJson(key, e.currentTarget.value);
  const onSecret = (key: keyof TcplatSecureOptions) => (e: ChangeEvent<HTMLInputElement>) =>
    onOptionsChange({ ...options, secureJsonData: { ...secure, [key]: e.currentTarget.value } });
  const onReset = (key: keyof TcplatSecureOptions) => () =>
    onOptionsChange({ ...options, secureJsonFields: { ...secureFields, [key]: false }, secureJsonData: { ...secure, [key]: '' } });

  const secret = (key: keyof TcplatSecureOptions, label: string, tooltip: string, placeholder: string) => (
    <InlineField label={label} labelWidth={LABEL} tooltip={tooltip} interactive>
      <SecretInput
        id={`tcplat-${key}`}
        aria-label={label}
        isConfigured={Boolean(secureFields[key])}
        value={secure[key] ?? ''}
        placeholder={placeholder}
        width={WIDTH}
        onReset={onReset(key)}
        onChange={onSecret(key)}
      />
    </InlineField>
  );

  const rollupsOn = json.rollups !== false;

  const text = (key: keyof TcplatOptions, label: string, tooltip: string, placeholder: string) => (
    <InlineField label={label} labelWidth={LABEL} tooltip={tooltip}>
      <Input id={`tcplat-${key}`} aria-label={label} value={(json[key] as string | undefined) ?? ''} placeholder={placeholder} width={WIDTH} onChange={onText(key)} />
    </InlineField>
  );

  return (
    <>
      <FieldSet label="InfluxDB">
        {text('influxUrl', 'URL', 'Where Grafana (the server, not your browser) reaches InfluxDB.', 'http://influxdb:8086')}
        <InlineField label="Query language" labelWidth={LABEL} tooltip="Flux for InfluxDB 2.x, InfluxQL for 1.x.">
          <RadioButtonGroup<Dialect> aria-label="Query language" options={DIALECTS} value={dialect} onChange={(v) => setJson('dialect', v)} />
        </InlineField>
        {dialect === 'flux' ? (
          <>
            {text('org', 'Organization', 'The InfluxDB 2.x organization (name).', 'tcplat')}
            {text('bucket', 'Bucket', 'The bucket the tcplat agent writes to.', 'tcplat')}
            {secret('influxToken', 'Token', 'An InfluxDB API token with read access to the bucket. Stored encrypted; never sent to browsers.', 'InfluxDB API token')}
          </>
        ) : (
          <>
            {text('database', 'Database', 'The InfluxDB 1.x database the tcplat agent writes to.', 'tcplat')}
            {text('retentionPolicy', 'Retention policy', 'Leave empty for the database default.', 'autogen')}
            {text('influxUser', 'User', 'Leave empty when InfluxDB runs without authentication.', 'reader')}
            {secret('influxPassword', 'Password', 'Stored encrypted; never sent to browsers.', 'password')}
          </>
        )}
      </FieldSet>
      <FieldSet label="Rollups">
        <InlineField
          label="Read rollups"
          labelWidth={LABEL}
          tooltip="Long ranges read the coarsest rollup (1 min, 10 min, 1 h sums made by the tcplat agent and tcplat rollup) that still gives one point per interval. Off: always the 10 s data."
        >
          <InlineSwitch id="tcplat-rollups" aria-label="Read rollups" value={rollupsOn} onChange={(e) => setJson('rollups', e.currentTarget.checked)} />
        </InlineField>
        {rollupsOn &&
          (dialect === 'flux'
            ? text('rollupBucket', 'Rollup bucket', `The bucket holding the rollups. Empty: the bucket above + "${ROLLUP_BUCKET_SUFFIX}".`, `${json.bucket || 'tcplat'}${ROLLUP_BUCKET_SUFFIX}`)
            : text('rollupRetentionPolicy', 'Rollup retention policy', `The retention policy of the rollups, in the database above. Empty: ${ROLLUP_RP}.`, ROLLUP_RP))}
      </FieldSet>
      <FieldSet label="Renderer">
        {text('rendererUrl', 'Renderer URL', 'The tcplat renderer that draws the heatmap panel and signs links for alerts.', 'http://renderer:7071')}
        {secret('rendererToken', 'Renderer token', "One of the renderer's --auth-token values. Stored encrypted; never sent to browsers.", 'bearer token')}
      </FieldSet>
    </>
  );
}
