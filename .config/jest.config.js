/*
 * Jest for the Grafana plugins (after @grafana/create-plugin's .config/jest.config.js): jsdom, swc,
 * tests beside the code in src/. The root jest.config.js runs it as one of its projects.
 */
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');
// Packages Grafana's libraries pull in that ship only ES modules.
const ESM_MODULES = ['@wojtekmaj/date-utils', 'mimic-function', 'memoize', 'get-user-locale', 'react-calendar', 'marked', 'ol', 'react-colorful', 'd3', 'd3-[a-z-]+', 'internmap', 'delaunator', 'robust-predicates', 'uuid', '@grafana/schema'];

module.exports = {
  displayName: 'plugins',
  rootDir: ROOT,
  roots: ['<rootDir>/src'],
  testEnvironment: 'jest-environment-jsdom',
  // CommonJS builds of dependencies (jsdom would pick their ESM-only "browser" builds).
  testEnvironmentOptions: { customExportConditions: ['node', 'require', 'default'] },
  testMatch: ['**/*.test.{ts,tsx}'],
  setupFilesAfterEnv: ['<rootDir>/.config/jest-setup.js'],
  moduleNameMapper: {
    '\\.(css|scss|sass)$': 'identity-obj-proxy',
    '\\.(svg|png)$': '<rootDir>/.config/jest/file-stub.js',
    '^@tcplat/core$': '<rootDir>/pkg/core/src/index.ts',
  },
  transform: {
    '^.+\\.(m?js|tsx?|jsx)$': [
      '@swc/jest',
      {
        sourceMaps: true,
        jsc: {
          parser: { syntax: 'typescript', tsx: true, decorators: false, dynamicImport: true },
          transform: { react: { runtime: 'automatic' } },
        },
      },
    ],
  },
  transformIgnorePatterns: [`node_modules/(?!(${ESM_MODULES.join('|')})/)`],
};
