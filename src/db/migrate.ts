import path from 'node:path';
import type pg from 'pg';
import type { QueryInterface, Sequelize } from 'sequelize';
import { SequelizeStorage, Umzug } from 'umzug';
import type { Logger } from '../logger.js';
import { LOCK_MIGRATIONS } from './locks.js';

type Migration = {
  up: (params: { context: QueryInterface }) => Promise<void>;
  down: (params: { context: QueryInterface }) => Promise<void>;
};

export function createMigrator(sequelize: Sequelize, logger?: Logger) {
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
    storage: new SequelizeStorage({ sequelize, tableName: 'sitelog_migrations' }),
    logger: undefined,
  });
  umzug.on('migrated', ({ name }) => logger?.info({ migration: name }, 'migration applied'));
  return umzug;
}

/**
 * Runs pending migrations exactly once however many instances (or hosts) start together: the first
 * to take the session advisory lock migrates, the others wait on it and then find nothing pending.
 */
export async function migrate(sequelize: Sequelize, lockClient: pg.Client, logger: Logger): Promise<string[]> {
  await lockClient.query('SELECT pg_advisory_lock($1)', [LOCK_MIGRATIONS]);
  try {
    const applied = await createMigrator(sequelize, logger).up();
    return applied.map((m) => path.basename(m.name));
  } finally {
    await lockClient.query('SELECT pg_advisory_unlock($1)', [LOCK_MIGRATIONS]);
  }
}
