import os from 'node:os';
import { z } from 'zod';
import { ConfigError, envFields, EXIT_CONFIG, parseEnv } from '../config.js';
import { createLogger } from '../logger.js';
import { connectWithRetry } from './database.js';
import { migrate } from './migrate.js';

// `npm run migrate`: the migrations of this build, once, before a deploy reloads the instances
// (deploy/deploy.sh). The instances would run them at startup too, under the same lock; running them
// first keeps a failing migration from ever reaching a reload.

async function main(): Promise<void> {
  let env: { DATABASE_URL: string; DATABASE_DIRECT_URL?: string | undefined; LOG_LEVEL: string };
  try {
    env = parseEnv(
      z.object({ DATABASE_URL: envFields.DATABASE_URL, DATABASE_DIRECT_URL: envFields.DATABASE_DIRECT_URL, LOG_LEVEL: envFields.LOG_LEVEL }),
      process.env,
    );
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  const logger = createLogger({ host: os.hostname(), instance: -1, level: env.LOG_LEVEL });
  // PostgreSQL itself, never PgBouncer: the lock is a session's
  const directUrl = env.DATABASE_DIRECT_URL ?? env.DATABASE_URL;
  const client = await connectWithRetry(directUrl, 'sitelog-migrate', logger, { timeoutMs: 30_000 });
  try {
    const applied = await migrate(directUrl, client, logger);
    logger.info({ applied }, applied.length ? `applied ${applied.length} migration(s)` : 'migrations up to date');
  } finally {
    await client.end();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`migrate: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
