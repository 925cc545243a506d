/** Panel option: which tcplat datasource (and so which renderer) draws the image. */
import React from 'react';
import type { StandardEditorProps } from '@grafana/data';
import { DataSourcePicker } from '@grafana/runtime';
import type { DataSourceRef } from '@grafana/schema';
import { PLUGIN_ID } from '../../datasource/types';

export function DatasourceOption({ value, onChange }: StandardEditorProps<DataSourceRef | null | undefined>) {
  return <DataSourcePicker pluginId={PLUGIN_ID} current={value ?? null} noDefault onChange={(ds) => onChange({ uid: ds.uid, type: ds.type })} />;
}
