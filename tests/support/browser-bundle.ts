/**
 * Bundle a browser test page (src/test-page/*) with esbuild for Chromium: one IIFE, production React, the
 * assets Grafana's webpack inlines as data URLs. The caller's plugins decide where Grafana's shared modules
 * come from (the thin runtime of page.tsx, or the React 18 / React 19 module sets of host.tsx).
 */
import * as esbuild from 'esbuild';

export async function bundleTestPage(entry: string, outDir: string, name: string, plugins: esbuild.Plugin[]): Promise<void> {
  await esbuild.build({
    entryPoints: [entry],
    outdir: outDir,
    entryNames: name,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'es2020',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"', global: 'window' },
    banner: { js: 'var process = { env: { NODE_ENV: "production" } };' },
    loader: { '.svg': 'dataurl', '.png': 'dataurl', '.woff': 'empty', '.woff2': 'empty', '.ttf': 'empty', '.eot': 'empty' },
    plugins,
    logLevel: 'error',
  });
}
