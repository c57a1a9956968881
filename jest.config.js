'use strict';

// ts-jest in full type-checking mode: a test with a type error fails, it does not
// silently run. (ts-jest's speed-up, `isolatedModules`, is transpile-only and skips type
// checking, so it is deliberately not used for our own code.)
//
// jose 6 and commander 15 ship only ES modules. Node >= 22 loads them from `require` (the
// built CLI and broker do exactly that), but jest keeps its own module registry, so for the
// tests their files are compiled to CommonJS (transpile-only, tsconfig.esm-deps.json).
const ESM_ONLY = ['jose', 'commander'];

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src', '<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json', diagnostics: true }],
    [`/node_modules/(${ESM_ONLY.join('|')})/.+\\.js$`]: [
      'ts-jest',
      { tsconfig: '<rootDir>/tsconfig.esm-deps.json', diagnostics: false },
    ],
  },
  transformIgnorePatterns: [`/node_modules/(?!(${ESM_ONLY.join('|')})/)`],
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  testTimeout: 30000,
  maxWorkers: 2,
};
