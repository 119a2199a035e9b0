import { existsSync, renameSync, rmSync } from 'node:fs';
import { storeTemplateDirectory } from './migrate.js';
import { openPgliteDatabase } from './sql-database.js';
import { errorMessage } from '../shared/error-message.js';

// Part of `npm run build`: a fresh, closed PGlite data directory that new embedded stores are
// copied from (see openPgliteDatabase), so that the first event of a first `npm start` does not
// wait for PGlite's initdb. Made once per build; migrations are applied when a store opens.
async function main(): Promise<void> {
  const template = storeTemplateDirectory();
  if (existsSync(`${template}/PG_VERSION`) && process.argv[2] !== '--force') return;
  const partial = `${template}.partial`;
  rmSync(partial, { recursive: true, force: true });
  const db = await openPgliteDatabase(partial);
  await db.close();
  rmSync(template, { recursive: true, force: true });
  renameSync(partial, template);
}

main().catch((err: unknown) => {
  process.stderr.write(`store template: ${errorMessage(err)}\n`);
  process.exit(1);
});
