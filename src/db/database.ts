import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { databaseTrouble } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Run, Statement } from './lean.js';
import { LOCK_CREATE_DATABASE } from './locks.js';
import { IDLE_IN_TRANSACTION_MS, LOCK_WAIT_MS, STATEMENT_TIMEOUT_MS } from '../timeouts.js';

/** Startup fails for good (no retry) on these: a wrong password does not fix itself. */
export class FatalDatabaseError extends Error {}

/** A server that is gone (refused, starting up: 57P03) or busy (no slot left) now may be there soon. */
export function isRetryable(err: unknown): boolean {
  return databaseTrouble(err) !== undefined;
}

/** Whether the database answers: /readyz asks it on a pooled connection. */
const PING: Statement = { name: 'sitelog-ping', text: 'SELECT 1' };
export const ping = async (run: Run): Promise<void> => void (await run(PING, []));

export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1));
}

/** Session settings as a startup parameter (`options`), which only PostgreSQL itself accepts, not PgBouncer. */
export function sessionOptions(settings: Readonly<Record<string, number>>): string {
  return Object.entries(settings)
    .map(([name, value]) => `-c ${name}=${value}`)
    .join(' ');
}

/**
 * What every pooled connection runs under: startup parameters, so no round trip per request (behind
 * PgBouncer, this role's defaults in this database instead: db/pooler.ts). Migrations do not run on
 * this pool (db/sequelize.ts createMigrationSequelize).
 */
export const POOL_SESSION_SETTINGS = {
  statement_timeout: STATEMENT_TIMEOUT_MS,
  lock_timeout: LOCK_WAIT_MS,
  idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_MS,
} as const;

/**
 * What a session connection (liveness, migrations' lock) runs under: no timeouts, whatever this
 * role's defaults say (startup parameters override them). It waits on advisory locks other instances
 * hold for as long as they hold them: an instance reloading holds its liveness lock until it exits,
 * a migration the migrations lock until it is done.
 */
export const SESSION_SETTINGS = { statement_timeout: 0, lock_timeout: 0, idle_in_transaction_session_timeout: 0 } as const;

/**
 * A client of its own (never from a pool), optionally to another database of the same server.
 * With `settings`, a session on PostgreSQL itself (DATABASE_DIRECT_URL): they go as startup parameters.
 */
export function clientFor(
  url: string,
  database: string | undefined,
  applicationName: string,
  connectionTimeoutMillis = 2_000,
  settings?: Readonly<Record<string, number>>,
): pg.Client {
  const target = new URL(url);
  // pg lets the connection string win over a `database` option, so the name goes into the URL
  if (database) target.pathname = `/${encodeURIComponent(database)}`;
  const client = new pg.Client({
    connectionString: target.toString(),
    application_name: applicationName,
    connectionTimeoutMillis,
    keepAlive: true,
    ...(settings && { options: sessionOptions(settings) }),
  });
  // Without a listener a dropped connection is an uncaught 'error' that kills the process.
  client.on('error', () => undefined);
  return client;
}

/** A server that did not answer within a bound. */
export class NoAnswer extends Error {}

/** `work`, or a NoAnswer after `ms` unless it settles first (`what` names the server in the message). */
export function within<T>(ms: number, work: Promise<T>, what?: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NoAnswer(`${what ? `${what}: ` : ''}no answer within ${ms} ms`)), ms);
  });
  work.catch(() => undefined);
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

const codeOf = (err: unknown) => (err as { code?: string }).code;
const BAD_CREDENTIALS = new Set(['28P01', '28000']);

/**
 * Makes sure the application database exists before anything connects to it: connecting to a
 * missing database is what made PostgreSQL log `FATAL: database "…" does not exist` on the seed's
 * first start. Checked from the maintenance database `postgres`; instances starting at the same
 * moment serialise on an advisory lock there, so exactly one of them issues CREATE DATABASE.
 * A server whose maintenance database this role may not use (a managed service, PgBouncer) is not
 * checked: the application database must then exist, and connecting says so if it does not.
 */
async function ensureDatabase(url: string, logger: Logger): Promise<void> {
  const name = databaseName(url);
  const admin = clientFor(url, 'postgres', 'sitelog-create-database');
  try {
    await admin.connect();
  } catch (err) {
    await admin.end().catch(() => undefined);
    if (isRetryable(err) || BAD_CREDENTIALS.has(codeOf(err) ?? '')) throw err;
    logger.debug({ code: codeOf(err) }, 'maintenance database not available; not checking that the database exists');
    return;
  }
  const exists = async () => (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1;
  try {
    if (await exists()) return;
    await admin.query('SELECT pg_advisory_lock($1)', [LOCK_CREATE_DATABASE]);
    if (await exists()) return;
    await admin.query(`CREATE DATABASE ${admin.escapeIdentifier(name)}`);
    logger.info({ database: name }, 'database created');
  } catch (err) {
    if (codeOf(err) === '42501') {
      throw new FatalDatabaseError(`database "${name}" does not exist and this role may not create it`);
    }
    // 42P04: created by someone else between our check and our CREATE (another host, no lock shared).
    if (codeOf(err) !== '42P04') throw err;
  } finally {
    await admin.end().catch(() => undefined);
  }
}

/**
 * Connects a client of its own to the application database, creating the database on the first
 * start and waiting for the server with capped exponential backoff. A server that is still
 * starting is expected on a first start, so waiting is logged at info.
 */
export async function connectWithRetry(
  url: string,
  applicationName: string,
  logger: Logger,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<pg.Client> {
  const deadline = Date.now() + opts.timeoutMs;
  let delay = 100;
  let attempt = 0;
  let ensured = false;
  for (;;) {
    attempt += 1;
    const client = clientFor(url, undefined, applicationName, undefined, SESSION_SETTINGS);
    try {
      if (!ensured) await ensureDatabase(url, logger);
      ensured = true;
      await client.connect();
      if (attempt > 1) logger.info({ attempt }, 'database is reachable');
      return client;
    } catch (err) {
      await client.end().catch(() => undefined);
      if (err instanceof FatalDatabaseError) throw err;
      const code = codeOf(err);
      if (code === '3D000') throw new FatalDatabaseError(`database "${databaseName(url)}" does not exist (${(err as Error).message})`);
      if (code && BAD_CREDENTIALS.has(code)) throw new FatalDatabaseError(`database refused our credentials (${code})`);
      if (code === '08P01' && /unsupported startup parameter/.test((err as Error).message)) {
        throw new FatalDatabaseError(
          `${(err as Error).message}: this connection needs a session of its own, so its URL must be PostgreSQL itself, not PgBouncer; ` +
            'point DATABASE_URL at PgBouncer and DATABASE_DIRECT_URL at PostgreSQL',
        );
      }
      if (!isRetryable(err) || Date.now() + delay > deadline || opts.signal?.aborted) throw err;
      if (attempt === 1 || attempt % 40 === 0) {
        logger.info({ attempt, code, retryInMs: delay }, 'waiting for the database');
      }
      await sleep(delay);
      // capped low: one attempt per process every 250 ms costs the server nothing, and a database
      // that appears is used at once
      delay = Math.min(delay * 2, 250);
    }
  }
}

export class PoolBudgetError extends Error {}

/** Connections one instance holds beside its pool: its liveness connection. */
export const CONNECTIONS_BESIDE_POOL = 1;
/** Kept free for psql, migrations from deploy and monitoring. */
export const CONNECTION_RESERVE = 5;

/**
 * Whether this host's instances fit the server's connections. Directly, each holds its pool and
 * its liveness connection. Behind PgBouncer (`pooled`), the pools are PgBouncer's clients and its
 * own server connections are counted by `npm run doctor`; here only the liveness connections count.
 */
export async function checkPoolBudget(
  client: pg.Client,
  budget: { instances: number; poolMax: number; pooled: boolean },
): Promise<{ needed: number; available: number }> {
  const { rows } = await client.query<{ max: string; reserved: string }>(
    `SELECT current_setting('max_connections') AS max, current_setting('superuser_reserved_connections') AS reserved`,
  );
  const row = rows[0];
  const available = Number(row?.max) - Number(row?.reserved);
  const perInstance = (budget.pooled ? 0 : budget.poolMax) + CONNECTIONS_BESIDE_POOL;
  const needed = budget.instances * perInstance + CONNECTION_RESERVE;
  if (needed > available) {
    const sum = budget.pooled
      ? `WEB_INSTANCES ${budget.instances} × ${CONNECTIONS_BESIDE_POOL} liveness connection (the pools go through PgBouncer)`
      : `WEB_INSTANCES ${budget.instances} × (DB_POOL_MAX ${budget.poolMax} + ${CONNECTIONS_BESIDE_POOL})`;
    throw new PoolBudgetError(
      `pool budget exceeded: ${sum} + reserve ${CONNECTION_RESERVE} = ${needed} connections, but the server allows ${available} ` +
        `(max_connections ${row?.max} − superuser_reserved_connections ${row?.reserved}); ` +
        (budget.pooled ? 'lower WEB_INSTANCES or raise max_connections' : 'lower DB_POOL_MAX, put PgBouncer in front (docs/scaling.md) or raise max_connections'),
    );
  }
  return { needed, available };
}
