import { loadEnv } from '../config/load.js';
import { createLogger } from '../shared/logger.js';
import { migrate, storeTemplateDirectory } from './migrate.js';
import { createPostgresDatabase, embeddedStoreDirectory, openPgliteDatabase } from './sql-database.js';
import { errorMessage } from '../shared/error-message.js';

// `npm run migrate`: applies pending migrations to DATABASE_URL, or to the embedded store
// under BOO_DATA_DIR when it is unset, then exits.
async function main(): Promise<void> {
  const env = loadEnv(process.env);
  const logger = createLogger(env.LOG_LEVEL);
  const db = env.DATABASE_URL
    ? createPostgresDatabase(env.DATABASE_URL, logger, { maxConnections: 1, statementTimeoutMs: 0, applicationName: 'boo-migrate' })
    : await openPgliteDatabase(embeddedStoreDirectory(env.BOO_DATA_DIR), storeTemplateDirectory());
  try {
    const applied = await migrate(db, logger);
    logger.info({ applied, store: db.kind }, applied.length > 0 ? 'migrations applied' : 'schema is current');
  } finally {
    await db.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`migrate: ${errorMessage(err)}\n`);
  process.exit(1);
});
