/** Jest runs every TypeScript test of the monorepo: unit tests beside the code, end-to-end tests in tests/. */
module.exports = {
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
  testTimeout: 30000,
};
