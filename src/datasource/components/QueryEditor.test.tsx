import React, { useState } from 'react';
import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { QueryEditor } from './QueryEditor';
import type { TcplatDataSource } from '../datasource';
import type { TcplatQuery } from '../types';

jest.mock('@grafana/runtime', () => ({
  getTemplateSrv: () => ({ getVariables: () => [{ name: 'service' }], replace: (t: string) => t }),
}));

function fakeDatasource(): TcplatDataSource & { tagValues: jest.Mock } {
  const tagValues = jest.fn(async (tag: string) => ({ service: ['api', 'web'], dst: ['db:5432'], host: ['h1'], result: ['ok', 'refused'] })[tag] ?? []);
  return { tagValues, replacer: () => (t: string) => t } as unknown as TcplatDataSource & { tagValues: jest.Mock };
}

function Harness({ ds, seen, runs }: { ds: TcplatDataSource; seen: TcplatQuery[]; runs: { n: number } }) {
  const [query, setQuery] = useState<TcplatQuery>({ refId: 'A', metric: 'p99' });
  return (
    <QueryEditor
      datasource={ds}
      query={query}
      onChange={(q) => {
        seen.push(q);
        setQuery(q);
      }}
      onRunQuery={() => runs.n++}
    />
  );
}

async function pick(label: string, option: string) {
  await userEvent.click(screen.getByLabelText(label));
  await userEvent.click(await screen.findByText(option, { selector: '[role="option"] *, [role="option"]' }));
}

test('services come from the data; picking two and a metric changes the query and runs it', async () => {
  const ds = fakeDatasource();
  const seen: TcplatQuery[] = [];
  const runs = { n: 0 };
  render(<Harness ds={ds} seen={seen} runs={runs} />);
  await waitFor(() => expect(ds.tagValues).toHaveBeenCalledWith('service', {}));
  await pick('Service', 'api');
  await pick('Service', 'web');
  expect(seen.at(-1)!.service).toEqual(['api', 'web']);
  // Destinations are listed among the chosen services.
  await waitFor(() => expect(ds.tagValues).toHaveBeenCalledWith('dst', { service: ['api', 'web'] }));
  await pick('Metric', 'histogram buckets (heatmap)');
  expect(seen.at(-1)!.metric).toBe('buckets');
  await pick('Group by', 'Host');
  // A query without group by starts from the default (by service).
  expect(seen.at(-1)!.groupBy).toEqual(['service', 'host']);
  // Buckets make one heatmap: the editor says the group-by is summed over, and what to do instead.
  expect(screen.getByTestId('tcplat-buckets-groupby')).toHaveTextContent(/summed over every service, host.*repeat the panel/);
  expect(runs.n).toBe(seen.length);
});

test('template variables are offered as values', async () => {
  const ds = fakeDatasource();
  const seen: TcplatQuery[] = [];
  render(<Harness ds={ds} seen={seen} runs={{ n: 0 }} />);
  await pick('Service', '$service');
  expect(seen.at(-1)!.service).toEqual(['$service']);
});

test('churn and TLS metrics are offered with a description each; the picked one is described under the editor', async () => {
  const ds = fakeDatasource();
  const seen: TcplatQuery[] = [];
  render(<Harness ds={ds} seen={seen} runs={{ n: 0 }} />);
  await userEvent.click(screen.getByLabelText('Metric'));
  for (const [label, description] of [
    ['churn: new connections/s', /Successful connects per second/],
    ['churn: concurrently open (mean)', /Little's law.*--probe-close/],
    ['churn: lifespan p50', /Median lifespan.*--probe-close/],
    ['churn: lifespan p99', /99th percentile lifespan/],
    ['churn: short-lived share (< 1 s)', /lived under 1 s.*--probe-close/],
    ['TLS handshake p50', /Median TLS handshake latency/],
    ['TLS handshake p99', /99th percentile TLS handshake/],
    ['TLS failure rate', /TLS handshakes that failed/],
    ['TLS handshakes/s', /TLS handshakes per second/],
  ] as const) {
    const option = (await screen.findByText(label, { selector: '[role="option"] *, [role="option"]' })).closest('[role="option"]') as HTMLElement;
    expect([label, option.textContent]).toEqual([label, expect.stringMatching(description)]);
  }
  await userEvent.click(await screen.findByText('churn: short-lived share (< 1 s)', { selector: '[role="option"] *, [role="option"]' }));
  expect(seen.at(-1)!.metric).toBe('shortShare');
  expect(screen.getByTestId('tcplat-metric-description')).toHaveTextContent(/lived under 1 s.*--probe-close/);
  await pick('Metric', 'TLS failure rate');
  expect(seen.at(-1)!.metric).toBe('tlsFailureRate');
});

test('a TLS metric offers the TLS results (ok, failed) for the result filter', async () => {
  const ds = fakeDatasource();
  const seen: TcplatQuery[] = [];
  render(<Harness ds={ds} seen={seen} runs={{ n: 0 }} />);
  await pick('Metric', 'TLS handshake p99');
  await pick('Result', 'failed');
  expect(seen.at(-1)).toMatchObject({ metric: 'tlsP99', result: ['failed'] });
  await userEvent.click(screen.getByLabelText('Result'));
  expect(screen.queryByText('refused', { selector: '[role="option"] *, [role="option"]' })).toBeNull();
});
