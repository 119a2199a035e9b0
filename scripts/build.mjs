// `npm run build`: compiles the project to dist/ (tsc), then makes the template data directory
// of the embedded store (dist/pglite-template, see src/dispatch-log/store-template-cli.ts).
//
// With --if-stale (npm's prepare, prestart, preworker, ...): does nothing when dist/ is newer
// than every source, so a start is `node dist/…` after a check of a few milliseconds. Starts
// that find it stale build one at a time under a lock (dist.lock) and the others wait, then find
// it fresh: no start loads a file that another start is rewriting.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const stamp = join(root, 'dist', '.built');
const lock = join(root, 'dist.lock');
const sourceDirs = ['src', 'workers', 'test', 'bench', 'migrations'];
const sourceFiles = ['tsconfig.json', 'package-lock.json', 'vitest.config.ts'];

function newestSource() {
  let newest = 0;
  const consider = (path) => {
    newest = Math.max(newest, statSync(path).mtimeMs);
  };
  for (const file of sourceFiles) if (existsSync(join(root, file))) consider(join(root, file));
  for (const dir of sourceDirs) {
    if (!existsSync(join(root, dir))) continue;
    for (const entry of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
      if (entry.isFile() && /\.(ts|sql)$/.test(entry.name)) consider(join(entry.parentPath ?? entry.path, entry.name));
    }
  }
  return newest;
}

const isFresh = () => existsSync(stamp) && statSync(stamp).mtimeMs >= newestSource();

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

/** Takes dist.lock, waiting for a live holder; a lock left by a dead process is taken over. */
function acquireLock() {
  const deadline = Date.now() + 300_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    let holder = NaN;
    try {
      holder = Number(readFileSync(join(lock, 'pid'), 'utf8'));
    } catch {
      // Its holder is between mkdir and writing its pid.
    }
    if (Number.isInteger(holder) && holder > 0 && !isAlive(holder)) {
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${lock} held for 5 minutes by process ${holder}; remove it if no build runs`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  if (result.error) throw result.error;
  if (result.status !== 0) process.exit(result.status ?? 1);
}

const ifStale = process.argv.includes('--if-stale');
if (!existsSync(join(root, 'tsconfig.json')) || !existsSync(join(root, 'src'))) {
  // An install without the sources (a container's runtime stage copies dist/ in): nothing to build.
  process.exit(0);
}
if (ifStale && isFresh()) process.exit(0);
acquireLock();
try {
  if (!(ifStale && isFresh())) {
    if (ifStale) process.stderr.write('boo-gateway: dist/ is missing or older than the sources; building it\n');
    const builtAt = Date.now();
    run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json']);
    run(process.execPath, [join(root, 'dist', 'src', 'dispatch-log', 'store-template-cli.js')]);
    // Dated from the start: a source saved during the build makes the next check build again.
    writeFileSync(stamp, '');
    utimesSync(stamp, builtAt / 1000, builtAt / 1000);
  }
} finally {
  rmSync(lock, { recursive: true, force: true });
}
