import { Sequelize } from 'sequelize';
import type { Config } from '../config.js';
import { POOL_SESSION_SETTINGS, SESSION_SETTINGS, sessionOptions } from './database.js';
import { sendUnnamed, writesWaiting } from './lean.js';
import { DB_CONNECT_TIMEOUT_MS, LOCK_WAIT_MS, POOL_ACQUIRE_MS } from '../timeouts.js';

/**
 * Each web instance builds its own Sequelize inside its startup path, never at import time:
 * a connection opened before PM2 forks would be shared by workers (the seed's incident). Sequelize
 * is the pool; statements go through db/lean.ts.
 */
export function createSequelize(config: Config): Sequelize {
  const sequelize = new Sequelize(config.DATABASE_URL, {
    dialect: 'postgres',
    logging: false,
    benchmark: false,
    pool: {
      max: config.DB_POOL_MAX,
      min: 0,
      idle: 10_000,
      // A saturated pool answers 503 after this rather than queueing a request forever.
      acquire: POOL_ACQUIRE_MS,
      evict: 1_000,
    },
    retry: { max: 0 },
    dialectOptions: {
      application_name: `sitelog-web-${config.INSTANCE}`,
      connectionTimeoutMillis: DB_CONNECT_TIMEOUT_MS,
      keepAlive: true,
      // Through PgBouncer in transaction mode a session setting would leak to whichever client gets
      // the server connection next, and PgBouncer refuses the timeouts as startup parameters: they
      // are this role's defaults in this database instead (db/pooler.ts), and Sequelize's own
      // `SET client_min_messages` is not sent.
      ...(config.DATABASE_POOLED ? { clientMinMessages: 'ignore' } : POOL_SESSION_SETTINGS),
    },
  });
  if (config.DATABASE_POOLED) sendUnnamed(sequelize);
  return sequelize;
}

/**
 * A Sequelize of one connection to PostgreSQL itself (DATABASE_DIRECT_URL), for umzug while it
 * migrates: DDL and its lock never go through PgBouncer. A migration waiting for a table lock behind
 * traffic gives up after LOCK_WAIT_MS (its instance retries at its restart) instead of queueing
 * every read and write behind it; a long one (an index on a big table) is not cut short.
 */
export function createMigrationSequelize(directUrl: string): Sequelize {
  return new Sequelize(directUrl, {
    dialect: 'postgres',
    logging: false,
    pool: { max: 1, min: 0 },
    retry: { max: 0 },
    dialectOptions: {
      application_name: 'sitelog-migrate',
      connectionTimeoutMillis: DB_CONNECT_TIMEOUT_MS,
      options: sessionOptions({ ...SESSION_SETTINGS, lock_timeout: LOCK_WAIT_MS }),
    },
  });
}

/** What Sequelize's pool holds now: connections open, lent out, and requests queued for one. */
export type PoolState = { size: number; using: number; waiting: number };

/**
 * The pool's state, summed over its read and write pools when Sequelize replicates reads; writes
 * waiting for a write slot (db/lean.ts) wait for a connection too.
 */
export function poolState(sequelize: Sequelize): PoolState {
  const pool = (sequelize.connectionManager as unknown as { pool: PoolState | { read: PoolState; write: PoolState } }).pool;
  const pools = 'read' in pool ? [pool.read, pool.write] : [pool];
  const total = pools.reduce((sum, p) => ({ size: sum.size + p.size, using: sum.using + p.using, waiting: sum.waiting + p.waiting }), { size: 0, using: 0, waiting: 0 });
  return { ...total, waiting: total.waiting + writesWaiting(sequelize) };
}
