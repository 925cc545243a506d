/**
 * The panel's option editor as Grafana builds it: the plugin's own options builder, its defaults, which
 * options show for which chart, and the chart picker (a real @grafana/ui radio group) changing the option.
 */
import React from 'react';
import { configure, render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { PanelOptionsEditorBuilder, standardEditorsRegistry, type PanelOptionsEditorItem, type StandardEditorContext, type StandardEditorProps } from '@grafana/data';
import { RadioButtonGroup } from '@grafana/ui';
import { plugin } from './module';
import { DEFAULT_PANEL_OPTIONS, type PanelOptions } from './types';

configure({ asyncUtilTimeout: 10_000 });

// Grafana's boot registers its option editors by id (public/app/core/components/OptionsUI/registry.tsx);
// a stand-in registry here: the radio editor as Grafana's (a @grafana/ui RadioButtonGroup of
// item.settings.options), the others never drawn by these tests.
function RadioEditor({ value, onChange, item }: StandardEditorProps<string, { options: Array<{ value: string; label: string }> }>) {
  return <RadioButtonGroup value={value} onChange={onChange} options={item.settings?.options ?? []} />;
}
standardEditorsRegistry.setInit(() => [
  { id: 'radio', name: 'radio', editor: RadioEditor as never },
  ...['text', 'number', 'boolean', 'select', 'multi-select'].map((id) => ({ id, name: id, editor: () => null })),
]);

function items(): PanelOptionsEditorItem<PanelOptions>[] {
  const builder = new PanelOptionsEditorBuilder<PanelOptions>();
  plugin.getPanelOptionsSupplier()(builder, { data: [] } as unknown as StandardEditorContext<PanelOptions>);
  return builder.getItems();
}

const item = (path: string) => items().find((i) => i.path === path)!;
const shown = (path: string, o: Partial<PanelOptions>) => {
  const i = item(path);
  return i.showIf ? i.showIf({ ...DEFAULT_PANEL_OPTIONS, ...o } as PanelOptions, undefined) !== false : true;
};

test('defaults: connect latency heatmap, as panels saved before the chart choice had it', () => {
  expect(plugin.defaults).toMatchObject({ chart: 'heatmap', metric: 'connect', result: '', overlays: ['p50', 'p99'], colourScale: 'log' });
  // Every option the panel reads has an editor (and so a default Grafana fills in for older panels).
  expect(items().map((i) => i.path).sort()).toEqual(Object.keys(DEFAULT_PANEL_OPTIONS).sort());
});

test('the chart picker offers connect/TLS latency heatmap and percentiles, and lifespans naming --probe-close', () => {
  const chart = item('chart');
  expect(chart.settings.options.map((o: { value: string }) => o.value)).toEqual(['heatmap', 'percentiles', 'lifespan']);
  expect(chart.description).toMatch(/--probe-close/);
  expect(chart.settings.options.find((o: { value: string }) => o.value === 'lifespan').description).toMatch(/--probe-close/);
  expect(item('metric').settings.options.map((o: { value: string }) => o.value)).toEqual(['connect', 'tls']);
});

test('which options show for which chart: no metric or result for lifespans, overlays only on the latency heatmap', () => {
  const table = (['heatmap', 'percentiles', 'lifespan'] as const).map((chart) => [chart, ...['metric', 'result', 'overlays', 'colourScale', 'service', 'dst', 'host'].map((p) => shown(p, { chart }))]);
  expect(table).toEqual([
    ['heatmap', true, true, true, true, true, true, true],
    ['percentiles', true, true, false, false, true, true, true],
    ['lifespan', false, false, false, true, true, true, true],
  ]);
});

test('clicking Lifespans in the chart editor sets chart=lifespan', async () => {
  const chart = item('chart');
  const onChange = jest.fn();
  const Editor = chart.editor;
  render(<Editor value="heatmap" onChange={onChange} item={chart} context={{ data: [], options: DEFAULT_PANEL_OPTIONS }} id="chart" />);
  await userEvent.click(screen.getByLabelText('Lifespans'));
  expect(onChange).toHaveBeenCalledWith('lifespan');
});
