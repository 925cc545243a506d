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
