import React, { useState } from 'react';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { DataSourceSettings } from '@grafana/data';
import { ConfigEditor } from './ConfigEditor';
import type { TcplatOptions, TcplatSecureOptions } from '../types';

type Settings = DataSourceSettings<TcplatOptions, TcplatSecureOptions>;

function settings(jsonData: TcplatOptions, secureJsonFields: Record<string, boolean> = {}): Settings {
  return { id: 1, uid: 'tcplat', name: 'tcplat', type: 'tcplat-connect-datasource', jsonData, secureJsonFields, secureJsonData: {} } as unknown as Settings;
}

/** The editor inside a parent that keeps its state, like Grafana's settings page. */
function Harness({ initial, seen }: { initial: Settings; seen: Settings[] }) {
  const [options, setOptions] = useState(initial);
  return (
    <ConfigEditor
      options={options}
      onOptionsChange={(o) => {
        seen.push(o);
        setOptions(o);
      }}
    />
  );
}

test('InfluxDB 2.x: URL, org, bucket in jsonData, the token only in secureJsonData', async () => {
  const seen: Settings[] = [];
  render(<Harness initial={settings({ dialect: 'flux' })} seen={seen} />);
  await userEvent.type(screen.getByLabelText('URL'), 'http://influxdb:8086');
  await userEvent.type(screen.getByLabelText('Organization'), 'tcplat');
  await userEvent.type(screen.getByLabelText('Bucket'), 'conn');
  await userEvent.type(screen.getByLabelText('Token'), 's3cret');
  const last = seen.at(-1)!;
  expect(last.jsonData).toEqual({ dialect: 'flux', influxUrl: 'http://influxdb:8086', org: 'tcplat', bucket: 'conn' });
  expect(last.secureJsonData).toEqual({ influxToken: 's3cret' });
  expect(JSON.stringify(last.jsonData)).not.toContain('s3cret');
});

test('switching to InfluxQL shows database, retention policy, user and password', async () => {
  const seen: Settings[] = [];
  render(<Harness initial={settings({ dialect: 'flux' })} seen={seen} />);
  await userEvent.click(screen.getByText('InfluxQL (InfluxDB 1.x)'));
  expect(seen.at(-1)!.jsonData.dialect).toBe('influxql');
  await userEvent.type(screen.getByLabelText('Database'), 'tcplat');
  await userEvent.type(screen.getByLabelText('Retention policy'), 'week');
  await userEvent.type(screen.getByLabelText('User'), 'reader');
  await userEvent.type(screen.getByLabelText('Password'), 'pw');
  const last = seen.at(-1)!;
  expect(last.jsonData).toMatchObject({ dialect: 'influxql', database: 'tcplat', retentionPolicy: 'week', influxUser: 'reader' });
  expect(last.secureJsonData).toEqual({ influxPassword: 'pw' });
  expect(screen.queryByLabelText('Bucket')).not.toBeInTheDocument();
});

test('a configured renderer token shows as configured and can be reset', async () => {
  const seen: Settings[] = [];
  render(<Harness initial={settings({ dialect: 'flux', rendererUrl: 'http://renderer:7071' }, { rendererToken: true })} seen={seen} />);
  expect(screen.getByLabelText('Renderer URL')).toHaveValue('http://renderer:7071');
  await userEvent.click(screen.getAllByRole('button', { name: /reset/i })[0]);
  expect(seen.at(-1)!.secureJsonFields).toMatchObject({ rendererToken: false });
  await userEvent.type(screen.getByLabelText('Renderer token'), 'tok');
  expect(seen.at(-1)!.secureJsonData).toEqual({ rendererToken: 'tok' });
});

test('rollups: the bucket (2.x) or retention policy (1.x) with the pkg/core defaults shown, and a switch to read only the 10 s data', async () => {
  const seen: Settings[] = [];
  const { unmount } = render(<Harness initial={settings({ dialect: 'flux', bucket: 'conn' })} seen={seen} />);
  expect(screen.getByLabelText('Rollup bucket')).toHaveAttribute('placeholder', 'conn_rollups');
  await userEvent.type(screen.getByLabelText('Rollup bucket'), 'long');
  expect(seen.at(-1)!.jsonData).toMatchObject({ rollupBucket: 'long' });
  await userEvent.click(screen.getByLabelText('Read rollups'));
  expect(seen.at(-1)!.jsonData.rollups).toBe(false);
  expect(screen.queryByLabelText('Rollup bucket')).not.toBeInTheDocument();
  unmount();
  render(<Harness initial={settings({ dialect: 'influxql' })} seen={seen} />);
  expect(screen.getByLabelText('Rollup retention policy')).toHaveAttribute('placeholder', 'tcplat_rollups');
  await userEvent.type(screen.getByLabelText('Rollup retention policy'), 'forever');
  expect(seen.at(-1)!.jsonData).toMatchObject({ rollupRetentionPolicy: 'forever' });
});
