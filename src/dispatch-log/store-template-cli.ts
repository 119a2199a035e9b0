import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createLogger } from '../shared/logger.js';
import { findMigrationsDirectory, migrate, readMigrations, storeTemplateDirectory } from './migrate.js';
import { openPgliteDatabase } from './sql-database.js';
import { errorMessage } from '../shared/error-message.js';

// Part of `npm run build`: a fresh, closed and migrated PGlite data directory that new embedded
// stores are copied from (see openPgliteDatabase), so that the first event of a first `npm start`
// waits neither for PGlite's initdb (about 5 s of CPU) nor for the migrations (0.2-0.3 s). Made
// again when the migrations differ from those it was made with (`<template>.migrations` lists
// them); a store opened from an older template applies the missing ones when it opens.
async function main(): Promise<void> {
  const template = storeTemplateDirectory();
  const stamp = `${template}.migrations`;
  const migrations = readMigrations(findMigrationsDirectory())
    .map(({ version, name }) => `${version}_${name}\n`)
    .join('');
  const current = existsSync(`${template}/PG_VERSION`) && existsSync(stamp) && readFileSync(stamp, 'utf8') === migrations;
  if (current && process.argv[2] !== '--force') return;
  const partial = `${template}.partial`;
  rmSync(partial, { recursive: true, force: true });
  const db = await openPgliteDatabase(partial);
  try {
    await migrate(db, createLogger('warn'));
  } finally {
    await db.close();
  }
  rmSync(template, { recursive: true, force: true });
  renameSync(partial, template);
  writeFileSync(stamp, migrations);
}

main().catch((err: unknown) => {
  process.stderr.write(`store template: ${errorMessage(err)}\n`);
  process.exit(1);
});
