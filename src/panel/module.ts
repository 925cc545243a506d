import { PanelPlugin, type SelectableValue } from '@grafana/data';
import { OVERLAYS, type Overlay } from '../shared/renderer';
import { DatasourceOption } from './components/DatasourceOption';
import { HeatmapPanel } from './components/HeatmapPanel';
import { DEFAULT_PANEL_OPTIONS, type PanelOptions } from './types';

const FILTER_HELP = 'Comma-separated exact values; template variables allowed (e.g. $service). Empty: all.';

export const plugin = new PanelPlugin<PanelOptions>(HeatmapPanel).setPanelOptions((builder) =>
  builder
    .addCustomEditor({ id: 'datasource', path: 'datasource', name: 'Datasource', description: 'A tcplat datasource with a renderer URL.', editor: DatasourceOption, defaultValue: DEFAULT_PANEL_OPTIONS.datasource })
    .addRadio({
      path: 'chart',
      name: 'Chart',
      description: 'Heatmap or percentiles of a latency over time, or connection lifespans (how long connections lived, new connections/s below; the agent records lifespans with --probe-close).',
      defaultValue: DEFAULT_PANEL_OPTIONS.chart,
      settings: {
        options: [
          { value: 'heatmap', label: 'Heatmap' },
          { value: 'percentiles', label: 'Percentiles' },
          { value: 'lifespan', label: 'Lifespans', description: 'Connection lifespans (tcp_session_hist): needs the agent run with --probe-close' },
        ],
      },
    })
    .addRadio({
      path: 'metric',
      name: 'Latency of',
      description: 'The TCP connect (SYN to established) or the TLS handshake after it (OpenSSL clients: shared libssl and node).',
      defaultValue: DEFAULT_PANEL_OPTIONS.metric,
      settings: { options: [{ value: 'connect', label: 'TCP connect' }, { value: 'tls', label: 'TLS handshake' }] },
      showIf: (o) => o.chart !== 'lifespan',
    })
    .addTextInput({ path: 'service', name: 'Service', description: FILTER_HELP, defaultValue: DEFAULT_PANEL_OPTIONS.service })
    .addTextInput({ path: 'dst', name: 'Destination', description: FILTER_HELP, defaultValue: DEFAULT_PANEL_OPTIONS.dst })
    .addTextInput({ path: 'host', name: 'Host', description: FILTER_HELP, defaultValue: DEFAULT_PANEL_OPTIONS.host })
    .addTextInput({
      path: 'result',
      name: 'Result',
      description: `${FILTER_HELP} TCP connect: ok, refused, timeout, unreachable, aborted, error. TLS handshake: ok, failed.`,
      defaultValue: DEFAULT_PANEL_OPTIONS.result,
      // Lifespans are of established connections only: no result to filter on.
      showIf: (o) => o.chart !== 'lifespan',
    })
    .addMultiSelect({
      path: 'overlays',
      name: 'Overlays',
      description: 'Quantile lines over the heatmap.',
      defaultValue: DEFAULT_PANEL_OPTIONS.overlays,
      // Grafana types a multi-select's options by the option's (array) type; each option is one element.
      settings: { options: OVERLAYS.map((o) => ({ value: o, label: o })) as unknown as Array<SelectableValue<Overlay[]>> },
      showIf: (o) => o.chart === 'heatmap',
    })
    .addRadio({
      path: 'colourScale',
      name: 'Colour scale',
      description: 'Connections per cell on a log scale (a burst does not wash out the rest) or a linear one.',
      defaultValue: DEFAULT_PANEL_OPTIONS.colourScale,
      settings: { options: [{ value: 'log', label: 'Log' }, { value: 'linear', label: 'Linear' }] },
      showIf: (o) => o.chart === 'heatmap' || o.chart === 'lifespan',
    })
    .addTextInput({ path: 'title', name: 'Image title', description: 'Drawn inside the image (also in alert links); variables allowed.', defaultValue: DEFAULT_PANEL_OPTIONS.title })
    .addTextInput({ path: 'linkTtl', name: 'Alert link lifetime', description: 'How long a copied link stays valid, e.g. 7d or 12h.', defaultValue: DEFAULT_PANEL_OPTIONS.linkTtl }),
);
