/*
 * What Grafana provides to plugins at run time (SystemJS/AMD modules), after @grafana/create-plugin's
 * .config/bundler/externals.ts: these are never bundled.
 */
module.exports.externals = [
  // Required for dynamic publicPath resolution (see publicPath.js).
  { 'amd-module': 'module' },
  'lodash',
  'jquery',
  'moment',
  'slate',
  'emotion',
  '@emotion/react',
  '@emotion/css',
  'prismjs',
  'slate-plain-serializer',
  '@grafana/slate-react',
  'react',
  'react-dom',
  // Grafana >= 12.3 (and 11.6.11, 12.0.10, 12.1.7, 12.2.5) shares React's automatic-JSX runtime with plugins
  // (grafana/grafana#108478, grafana/plugin-tools#2448). Webpack matches string externals exactly, so
  // 'react' does not cover these subpaths: bundled, React 18's runtime reads React internals that React 19
  // (Grafana 13) removed, and the plugin fails to load there.
  'react/jsx-runtime',
  'react/jsx-dev-runtime',
  'react-redux',
  'redux',
  'rxjs',
  'i18next',
  'react-router',
  'react-router-dom',
  'd3',
  'angular',
  /^@grafana\/ui/i,
  /^@grafana\/runtime/i,
  /^@grafana\/data/i,
  // Legacy SDK imports ("grafana/app/...") are external without their prefix.
  ({ request }, callback) => {
    const prefix = 'grafana/';
    if (request && request.indexOf(prefix) === 0) return callback(undefined, request.slice(prefix.length));
    callback();
  },
];
