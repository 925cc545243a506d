import { DataSourcePlugin } from '@grafana/data';
import { ConfigEditor } from './components/ConfigEditor';
import { QueryEditor } from './components/QueryEditor';
import { TcplatDataSource } from './datasource';
import type { TcplatOptions, TcplatQuery, TcplatSecureOptions } from './types';

export const plugin = new DataSourcePlugin<TcplatDataSource, TcplatQuery, TcplatOptions, TcplatSecureOptions>(TcplatDataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor);
