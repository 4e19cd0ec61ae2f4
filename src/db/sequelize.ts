import { Sequelize } from 'sequelize';
import type { Config } from '../config.js';
import { writesWaiting } from './lean.js';
import { DB_CONNECT_TIMEOUT_MS, LOCK_WAIT_MS, POOL_ACQUIRE_MS, STATEMENT_TIMEOUT_MS } from '../timeouts.js';

/**
 * Each web instance builds its own Sequelize inside its startup path, never at import time:
 * a connection opened before PM2 forks would be shared by workers (the seed's incident). Sequelize
 * is the pool (and umzug's storage for the migrations); statements go through db/lean.ts.
 */
export function createSequelize(config: Config): Sequelize {
  return new Sequelize(config.DATABASE_URL, {
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
      statement_timeout: STATEMENT_TIMEOUT_MS,
      // startup parameters, like statement_timeout: no round trip per request. Migrations run on
      // this pool too, so a migration waiting for its lock behind traffic gives up (and its instance
      // retries at its restart) instead of queueing every read and write behind it.
      lock_timeout: LOCK_WAIT_MS,
      idle_in_transaction_session_timeout: 10_000,
      keepAlive: true,
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
