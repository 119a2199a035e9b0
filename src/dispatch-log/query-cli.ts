import { loadEnv } from '../config/load.js';
import { createLogger } from '../shared/logger.js';
import { migrate, storeTemplateDirectory } from './migrate.js';
import { embeddedStoreDirectory, openPgliteDatabase } from './sql-database.js';
import { errorMessage } from '../shared/error-message.js';

// `npm run query -- "SELECT …"`: runs one SQL statement on the embedded store under BOO_DATA_DIR
// and prints the rows tab-separated under a header (the 20 newest dispatches when no statement
// is given). The store opens in one process at a time: a gateway holds it while it writes and
// for a minute after, and this command then says so and exits 1.
const newest = `SELECT created_at, status, virtual_model, chosen_provider_id, chosen_model, duration_ms, ttfb_ms, source
  FROM route_dispatch_log ORDER BY created_at DESC LIMIT 20`;

const cell = (value: unknown) =>
  value === null || value === undefined ? '' : value instanceof Date ? value.toISOString() : typeof value === 'object' ? JSON.stringify(value) : String(value);

async function main(): Promise<void> {
  const env = loadEnv(process.env);
  const db = await openPgliteDatabase(embeddedStoreDirectory(env.BOO_DATA_DIR), storeTemplateDirectory());
  try {
    // A store the gateway never wrote to has no table yet.
    await migrate(db, createLogger('warn'));
    const { rows } = await db.query<Record<string, unknown>>(process.argv[2] ?? newest);
    const columns = Object.keys(rows[0] ?? {});
    const lines = [columns.join('\t'), ...rows.map((row) => columns.map((column) => cell(row[column]).replace(/[\t\n]/g, ' ')).join('\t'))];
    process.stdout.write(`${lines.join('\n')}\n(${rows.length} rows)\n`);
  } finally {
    await db.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`query: ${errorMessage(err)}\n`);
  process.exit(1);
});
