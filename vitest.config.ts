import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globals: false,
    include: ['src/**/*.test.ts', 'test/**/*.test.ts', 'workers/**/*.test.ts', 'simulator/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests start real servers and time failovers; on a 2-core machine
    // running files side by side makes those timings flaky.
    fileParallelism: false,
  },
});
