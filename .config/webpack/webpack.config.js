/*
 * The plugins' webpack build, after @grafana/create-plugin's .config/webpack/webpack.config.ts; the root
 * webpack.config.js extends it. One configuration per plugin folder (src/<name>/plugin.json): each is
 * built side by side into dist/<plugin id>/ (module.js, plugin.json, img/, README.md, CHANGELOG.md), which is what
 * Grafana loads. Grafana's own modules are AMD externals (externals.js); @tcplat/core is bundled from its
 * TypeScript source. The build prints the size of every module.js.
 */
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const webpack = require('webpack');
const CopyWebpackPlugin = require('copy-webpack-plugin');
const { externals } = require('./externals');

const ROOT = path.resolve(__dirname, '../..');
const SOURCE_DIR = path.join(ROOT, 'src');
const DIST_DIR = path.join(ROOT, 'dist');
const CORE_SRC = path.join(ROOT, 'pkg/core/src');

/** Plugin folders: src/<dir>/plugin.json. */
function getPlugins() {
  return fs
    .readdirSync(SOURCE_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(SOURCE_DIR, d.name, 'plugin.json')))
    .map((d) => {
      const dir = path.join(SOURCE_DIR, d.name);
      const pluginJson = JSON.parse(fs.readFileSync(path.join(dir, 'plugin.json'), 'utf8'));
      return { dir, pluginJson };
    });
}

function getPackageJson() {
  return JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
}

/** Prints `bundle: dist/<id>/module.js N kB (N kB gzip)` once the plugin is emitted. */
class BundleSizePlugin {
  apply(compiler) {
    compiler.hooks.done.tap('BundleSizePlugin', (stats) => {
      if (stats.hasErrors()) return;
      const file = path.join(compiler.options.output.path, 'module.js');
      if (!fs.existsSync(file)) return;
      const buf = fs.readFileSync(file);
      const gz = zlib.gzipSync(buf, { level: 9 }).length;
      // eslint-disable-next-line no-console
      console.log(`bundle: ${path.relative(ROOT, file)} ${(buf.length / 1024).toFixed(1)} kB (${(gz / 1024).toFixed(1)} kB gzip)`);
    });
  }
}

function pluginConfig({ dir, pluginJson }, env) {
  const production = Boolean(env.production);
  const today = new Date().toISOString().substring(0, 10);
  const replace = (content) =>
    content
      .toString()
      .replace(/%VERSION%/g, getPackageJson().version)
      .replace(/%TODAY%/g, today)
      .replace(/%PLUGIN_ID%/g, pluginJson.id);
  return {
    name: pluginJson.id,
    cache: { type: 'filesystem', name: `${pluginJson.id}-${production ? 'production' : 'development'}`, buildDependencies: { config: [__filename] } },
    context: dir,
    devtool: production ? 'source-map' : 'eval-source-map',
    entry: { module: [path.join(__dirname, 'publicPath.js'), './module.ts'] },
    externals,
    mode: production ? 'production' : 'development',
    module: {
      rules: [
        {
          exclude: /node_modules/,
          test: /\.[tj]sx?$/,
          use: {
            loader: 'swc-loader',
            options: {
              jsc: {
                target: 'es2015',
                loose: false,
                parser: { syntax: 'typescript', tsx: true, decorators: false, dynamicImport: true },
                transform: { react: { runtime: 'automatic' } },
              },
            },
          },
        },
        // @tcplat/core is a library of pure modules: what a plugin does not import is left out (the
        // Node-only config loader and its YAML parser among them).
        { test: (p) => p.startsWith(CORE_SRC), sideEffects: false },
        {
          test: /\.(png|jpe?g|gif|svg)$/,
          type: 'asset/resource',
          generator: {
            publicPath: `public/plugins/${pluginJson.id}/img/`,
            outputPath: 'img/',
            filename: production ? '[hash][ext]' : '[file]',
          },
        },
      ],
    },
    output: {
      clean: true,
      // Source paths relative to src/ (./panel/render.ts, ../pkg/core/src/...): where Grafana's plugin
      // validator looks them up to check that the archive's source map matches the source code.
      devtoolModuleFilenameTemplate: (info) => {
        const abs = info.absoluteResourcePath;
        if (!path.isAbsolute(abs)) return `webpack://${pluginJson.id}/${info.resourcePath}`;
        const rel = path.relative(SOURCE_DIR, abs).split(path.sep).join('/');
        return `webpack://${pluginJson.id}/${rel.startsWith('..') ? rel : `./${rel}`}`;
      },
      filename: '[name].js',
      library: { type: 'amd' },
      path: path.join(DIST_DIR, pluginJson.id),
      publicPath: `public/plugins/${pluginJson.id}/`,
      uniqueName: pluginJson.id,
    },
    performance: { hints: false },
    plugins: [
      new webpack.DefinePlugin({ PLUGIN_ID: JSON.stringify(pluginJson.id) }),
      // node:fs and friends are only reached by Node-only code of @tcplat/core, never run in a browser.
      new webpack.NormalModuleReplacementPlugin(/^node:/, (r) => {
        r.request = r.request.replace(/^node:/, '');
      }),
      new CopyWebpackPlugin({
        patterns: [
          { from: 'README.md', to: '.', transform: replace },
          { from: 'CHANGELOG.md', to: '.' },
          { from: 'plugin.json', to: '.', transform: replace },
          { from: 'img/**/*', to: '.', noErrorOnMissing: true },
        ],
      }),
      new BundleSizePlugin(),
    ],
    resolve: {
      extensions: ['.js', '.jsx', '.ts', '.tsx'],
      alias: { '@tcplat/core$': path.join(CORE_SRC, 'index.ts') },
      fallback: { fs: false, path: false, os: false, crypto: false, zlib: false },
      modules: [SOURCE_DIR, 'node_modules'],
      unsafeCache: true,
    },
    stats: 'errors-warnings',
  };
}

/** One configuration per plugin; `webpack --env production` builds them all. */
module.exports = async (env = {}) => getPlugins().map((p) => pluginConfig(p, env));
module.exports.getPlugins = getPlugins;
