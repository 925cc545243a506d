/*
 * Sets webpack's public path at run time from the location of the plugin's AMD module (the magic `module`
 * of the AMD loader), like @grafana/create-plugin's publicPath.ts; falls back to the plugin's folder.
 * PLUGIN_ID is defined per plugin by the webpack config.
 */
// eslint-disable-next-line import/no-unresolved
import amdMetaModule from 'amd-module';

// eslint-disable-next-line no-undef, camelcase
__webpack_public_path__ =
  amdMetaModule && amdMetaModule.uri ? amdMetaModule.uri.slice(0, amdMetaModule.uri.lastIndexOf('/') + 1) : `public/plugins/${PLUGIN_ID}/`;
