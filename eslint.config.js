// `npm run lint`: typescript-eslint with the type-aware rules that catch real bugs here (a
// promise nobody awaits, a promise where a callback is expected), type-only imports kept apart,
// and the layering of docs/architecture.md as import bans per folder. Formatting is Prettier's.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

/** Builtins must be imported as `node:x`, so that no package can shadow them. */
const builtins = [
  'assert',
  'buffer',
  'child_process',
  'crypto',
  'events',
  'fs',
  'fs/promises',
  'http',
  'https',
  'net',
  'os',
  'path',
  'perf_hooks',
  'stream',
  'timers',
  'timers/promises',
  'url',
  'util',
  'worker_threads',
  'zlib',
];
const nodeProtocol = builtins.map((name) => ({ name, message: `import from 'node:${name}'` }));

/** Folders, each with what it must not import: lower layers never reach up (docs/architecture.md, "Layers"). */
const layers = {
  'src/shared/**': [
    '**/config/**',
    '**/upstream/**',
    '**/routing/**',
    '**/breakers/**',
    '**/fleet/**',
    '**/dispatch/**',
    '**/http/**',
    '**/events/**',
    '**/dispatch-log/**',
    '**/metrics/**',
  ],
  'src/config/**': [
    '**/upstream/**',
    '**/routing/**',
    '**/breakers/**',
    '**/fleet/**',
    '**/dispatch/**',
    '**/http/**',
    '**/events/**',
    '**/dispatch-log/**',
    '**/metrics/**',
  ],
  'src/upstream/**': ['**/routing/**', '**/breakers/**', '**/fleet/**', '**/dispatch/**', '**/http/**', '**/events/**', '**/dispatch-log/**', '**/metrics/**'],
  'src/routing/**': [
    '**/upstream/**',
    '**/dispatch/**',
    '**/http/**',
    '**/events/**',
    '**/dispatch-log/**',
    '**/metrics/**',
    'express',
    'ioredis',
    'bullmq',
    'postgres',
    'undici',
    'prom-client',
  ],
  'src/breakers/**': ['**/upstream/**', '**/routing/**', '**/dispatch/**', '**/http/**', '**/events/**', '**/dispatch-log/**'],
  'src/fleet/**': ['**/routing/**', '**/breakers/**', '**/dispatch/**', '**/http/**', '**/events/**', '**/dispatch-log/**'],
  'src/events/**': ['**/upstream/**', '**/routing/**', '**/breakers/**', '**/fleet/**', '**/dispatch/**', '**/http/**'],
  'src/dispatch-log/**': ['**/upstream/**', '**/routing/**', '**/breakers/**', '**/fleet/**', '**/dispatch/**', '**/http/**'],
  'src/metrics/**': ['**/upstream/**', '**/routing/**', '**/breakers/**', '**/fleet/**', '**/dispatch/**', '**/http/**', '**/events/**', '**/dispatch-log/**'],
  'src/protocols/**': [
    '**/upstream/**',
    '**/routing/**',
    '**/breakers/**',
    '**/fleet/**',
    '**/dispatch/**',
    '**/http/**',
    '**/events/**',
    '**/dispatch-log/**',
  ],
  // Capacity (slots, lines, rate limits) sits below dispatch and beside breakers: it is told what to hold, never how a request is sent.
  'src/capacity/**': [
    '**/upstream/**',
    '**/routing/**',
    '**/breakers/**',
    '**/fleet/**',
    '**/dispatch/**',
    '**/http/**',
    '**/events/**',
    '**/dispatch-log/**',
    '**/metrics/**',
  ],
  'src/dispatch/**': ['**/http/**'],
  'workers/**': ['**/src/http/**', '**/src/dispatch/**', '**/src/upstream/**', '**/src/routing/**', '**/src/breakers/**', '**/src/fleet/**'],
};
/** Nothing in the product imports tests, the bench, or (but for its own entry) the simulator. */
const outside = ['**/test/**', '**/bench/**', '**/simulator/**', '**/workers/**'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'data/**', 'coverage/**', '.scratch/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
      // A variable set once, after closures that read it were made (a shutdown handler installed early), stays `let`.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      'no-restricted-imports': ['error', { paths: nodeProtocol }],
    },
  },
  ...Object.entries(layers).map(([folder, banned]) => ({
    files: [`${folder}/*.ts`],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeProtocol,
          patterns: [
            { group: [...banned, ...(folder.startsWith('src/') ? outside : [])], message: 'a lower layer does not import a higher one (docs/architecture.md)' },
          ],
        },
      ],
    },
  })),
  {
    files: ['src/**/*.ts', 'workers/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-console': 'error',
      // The environment is read where the config is validated; entry points hand process.env over.
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'read the environment through config/schema.ts (loadEnv)' }],
    },
  },
  {
    files: ['src/main.ts', 'workers/main.ts', 'src/dispatch-log/migrate-cli.ts', 'src/dispatch-log/query-cli.ts'],
    rules: { 'no-restricted-properties': 'off' },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['scripts/**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
  prettier,
);
