import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import type { QueryInterface, Sequelize } from 'sequelize';
import type { Logger } from '../logger.js';
import { LOCK_MIGRATIONS } from './locks.js';
import { createMigrationSequelize } from './sequelize.js';

type Migration = {
  up: (params: { context: QueryInterface }) => Promise<void>;
  down: (params: { context: QueryInterface }) => Promise<void>;
};

export const MIGRATIONS_TABLE = 'sitelog_migrations';

/** The migrations this build ships, named without extension (0001-initial, …). */
export function knownMigrations(): string[] {
  return fs
    .readdirSync(path.join(__dirname, 'migrations'))
    .filter((f) => /\.[jt]s$/.test(f) && !f.endsWith('.d.ts'))
    .map((f) => f.replace(/\.[jt]s$/, ''))
    .sort();
}

/** Migrations not yet recorded in the database (all of them when the table is not there yet). */
export async function pendingMigrations(client: pg.Client): Promise<string[]> {
  // looked up first rather than caught: a failed SELECT is an ERROR line in PostgreSQL's log
  const { rows } = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [MIGRATIONS_TABLE]);
  const applied = rows[0]?.present
    ? new Set((await client.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE}`)).rows.map((row) => row.name))
    : new Set<string>();
  return knownMigrations().filter((name) => !applied.has(name));
}

export function createMigrator(sequelize: Sequelize, logger?: Logger) {
  // umzug costs a fifth of a second to load: only an instance that has something to migrate pays it
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { SequelizeStorage, Umzug } = require('umzug') as typeof import('umzug');
  const umzug = new Umzug({
    // .ts when the tests run the sources through tsx, .js when PM2 runs dist/
    migrations: {
      glob: ['migrations/*.{js,ts}', { cwd: __dirname, ignore: ['**/*.d.ts'] }],
      // named without the extension, so dist/ (.js) and the sources under test (.ts) agree
      resolve: ({ name, path: file, context }) => {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const migration = require(file!) as Migration;
        return {
          name: name.replace(/\.[jt]s$/, ''),
          up: () => migration.up({ context }),
          down: () => migration.down({ context }),
        };
      },
    },
    context: sequelize.getQueryInterface(),
    storage: new SequelizeStorage({ sequelize, tableName: MIGRATIONS_TABLE }),
    logger: undefined,
  });
  umzug.on('migrated', ({ name }) => logger?.info({ migration: name }, 'migration applied'));
  return umzug;
}

/**
 * Runs pending migrations exactly once however many instances (or hosts) start together: the first
 * to take the session advisory lock migrates, the others wait on it and then find nothing pending.
 * Both the lock and the migrations are on PostgreSQL itself (`directUrl`), never through PgBouncer.
 */
export async function migrate(directUrl: string, lockClient: pg.Client, logger: Logger, onPending: () => Promise<void> | void = () => undefined): Promise<string[]> {
  // Up to date (every start after the first): nothing to lock for. Migrations only ever get added,
  // so a pending one seen here is still checked under the lock by umzug itself.
  if ((await pendingMigrations(lockClient)).length === 0) return [];
  // from here it may take long: waiting for another instance's migrations, or running them
  await onPending();
  await lockClient.query('SELECT pg_advisory_lock($1)', [LOCK_MIGRATIONS]);
  const sequelize = createMigrationSequelize(directUrl);
  try {
    const applied = await createMigrator(sequelize, logger).up();
    return applied.map((m) => path.basename(m.name));
  } finally {
    try {
      await lockClient.query('SELECT pg_advisory_unlock($1)', [LOCK_MIGRATIONS]);
    } finally {
      await sequelize.close();
    }
  }
}
