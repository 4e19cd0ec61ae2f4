import type pg from 'pg';
import type { Logger } from '../logger.js';
import { POOL_SESSION_SETTINGS } from './database.js';
import { LOCK_ROLE_DEFAULTS } from './locks.js';

// Behind PgBouncer in transaction mode (DATABASE_URL PgBouncer's, DATABASE_DIRECT_URL PostgreSQL's)
// a pooled connection cannot carry its timeouts as startup parameters: PgBouncer refuses them, and
// a `SET` would stay on the server connection for the next client. They become this role's defaults
// in this database instead, which PostgreSQL applies to every server connection PgBouncer opens.
// The session connections (liveness, migrations) set their own at connect (db/database.ts).

/** How pg_db_role_setting spells a setting ALTER ROLE … SET name = value stored. */
const spelled = ([name, value]: [string, number]) => `${name}=${value}`;
const wanted = Object.entries(POOL_SESSION_SETTINGS);

const ROLE_DEFAULTS = `SELECT coalesce(s.setconfig, '{}') AS config, current_database() AS database
  FROM pg_database d
  LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
  WHERE d.datname = current_database()`;

/** The settings of POOL_SESSION_SETTINGS this role's defaults in this database lack, and the database's name. */
async function missingDefaults(client: pg.Client): Promise<{ missing: Array<[string, number]>; database: string }> {
  const { rows } = await client.query<{ config: string[]; database: string }>(ROLE_DEFAULTS);
  const config = new Set(rows[0]?.config ?? []);
  return { missing: wanted.filter((setting) => !config.has(spelled(setting))), database: rows[0]?.database ?? '' };
}

/**
 * Makes POOL_SESSION_SETTINGS this role's defaults in this database, unless they already are (every
 * start after the first). Instances starting together take turns on a lock: concurrent ALTER ROLEs
 * of one role fail with "tuple concurrently updated". Server connections PgBouncer opened before
 * keep their old values until it replaces them (server_lifetime).
 */
export async function setPooledDefaults(client: pg.Client, urls: { pooled: string; direct: string }, logger: Logger): Promise<void> {
  if ((await missingDefaults(client)).missing.length === 0) return;
  // ALTER ROLE CURRENT_USER reaches the pool only when both URLs log in as one role (PgBouncer's
  // force_user aside, which npm run doctor sees). Read from the URLs, not asked through the pool: a
  // server connection PgBouncer opened now would keep no timeouts for its whole life.
  const [poolRole, directRole] = [urls.pooled, urls.direct].map((url) => decodeURIComponent(new URL(url).username));
  if (poolRole !== directRole) {
    logger.warn(
      { poolRole, directRole },
      `behind PgBouncer the pool logs in as ${poolRole}, the direct URL as ${directRole}: set ${wanted.map(spelled).join(', ')} for ${poolRole} in this database yourself (npm run doctor gives the ALTER ROLE lines)`,
    );
    return;
  }
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ROLE_DEFAULTS]);
    const { missing, database } = await missingDefaults(client);
    for (const [name, value] of missing) {
      await client.query(`ALTER ROLE CURRENT_USER IN DATABASE ${client.escapeIdentifier(database)} SET ${client.escapeIdentifier(name)} = ${value}`);
    }
    await client.query('COMMIT');
    if (missing.length) logger.info({ settings: missing.map(spelled) }, 'behind PgBouncer: the pooled connections\' timeouts set as this role\'s defaults in this database');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
