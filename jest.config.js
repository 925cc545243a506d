/**
 * Jest runs every test of the monorepo as two projects: `node` (TypeScript unit tests beside the code in
 * pkg/, agent/, renderer/ and end-to-end tests in tests/) and `plugins` (the Grafana plugins in src/,
 * jsdom, from .config/jest.config.js).
 */
const node = {
  displayName: 'node',
  testEnvironment: 'node',
  roots: ['<rootDir>/pkg', '<rootDir>/agent', '<rootDir>/renderer', '<rootDir>/tests'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  transform: {
    // Type errors are caught once by `npm run typecheck` (tsc over tests and sources); here we only transpile.
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }],
  },
  moduleNameMapper: {
    '^@tcplat/core$': '<rootDir>/pkg/core/src/index.ts',
  },
};

module.exports = {
  projects: [node, require('./.config/jest.config.js')],
  testTimeout: 30000,
};
