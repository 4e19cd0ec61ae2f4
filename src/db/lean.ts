import net from 'node:net';
import path from 'node:path';
import type pg from 'pg';
import { ConnectionAcquireTimeoutError, type Sequelize } from 'sequelize';
import { WRITE_SLOT_WAIT_MS } from '../timeouts.js';
import { Slots } from './slots.js';
import type { Cancellation } from '../in-flight.js';

/**
 * The one way sitelog runs SQL: a feature's queries module names its statements, and a runner
 * executes them on one connection. The connection is one of Sequelize's pool (the same budget,
 * validation and acquire timeout as everything else; `withConnection`) or a client of a process's own,
 * such as its liveness connection (`runOn`); reads that need not see their own writes may run on a
 * read replica's (`withReadConnection`, db/replicas.ts). A statement with a name is prepared once
 * per connection, so PostgreSQL parses and plans it once; one whose plan depends on its values has
 * the name ''.
 * The tables are described by the migrations (src/db/migrations/), not by models.
 */
export type Statement = { readonly name: string; readonly text: string };

type PooledClient = pg.Client & { _invalid?: boolean };

export type Run = <R extends pg.QueryResultRow>(statement: Statement, values: unknown[]) => Promise<R[]>;

/**
 * A runner on one client: the liveness connection, a migration's, or a pooled one. `named` false
 * sends every statement unnamed: through PgBouncer in transaction mode consecutive statements of
 * one client may reach different server connections, and a name prepared on one is unknown (or
 * already taken) on another (docs/scaling.md says what that costs).
 */
export function runOn(client: pg.Client, named = true): Run {
  return async <R extends pg.QueryResultRow>(statement: Statement, values: unknown[]) =>
    (await client.query<R>(named && statement.name ? { name: statement.name, text: statement.text, values } : { text: statement.text, values })).rows;
}

/** The pools behind PgBouncer in transaction mode. */
const behindPooler = new WeakSet<Sequelize>();

/** Statements on this Sequelize's pool go unnamed (what needs a session goes to DATABASE_DIRECT_URL, not this pool). */
export function sendUnnamed(sequelize: Sequelize): void {
  behindPooler.add(sequelize);
}

/** A request's work stopped before its next statement, because its client went away or its deadline passed. */
export class WorkAbandoned extends Error {}

/**
 * `work` on a connection of Sequelize's pool. With a `signal` (the request's client went away, or
 * its deadline passed), the statement running then is cancelled, and no further one starts: a slow
 * read stops costing the database anything once nobody waits for it.
 */
export async function withConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>, signal?: Cancellation): Promise<T> {
  const client = (await sequelize.connectionManager.getConnection({ type: 'write' })) as PooledClient;
  return onLent(
    client,
    work,
    signal,
    (reusable) => {
      if (!reusable) client._invalid = true;
      sequelize.connectionManager.releaseConnection(client);
    },
    !behindPooler.has(sequelize),
  );
}

/**
 * `work` on a client lent by a pool (Sequelize's, or a read replica's: db/replicas.ts), then
 * `release`, told whether the client may serve another request. `named`: see runOn.
 */
export async function onLent<T>(
  client: pg.Client,
  work: (run: Run) => Promise<T>,
  signal: Cancellation | undefined,
  release: (reusable: boolean) => void,
  named = true,
): Promise<T> {
  const run = runOn(client, named);
  let reusable = true;
  let cancelling: Promise<void> | undefined;
  const onAbort = (): void => {
    cancelling = cancelRunning(client).then((landed) => {
      // a cancel that may still arrive must not find the connection serving someone else
      if (!landed) reusable = false;
    });
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const guarded: Run = (statement, values) => (signal?.aborted ? Promise.reject(new WorkAbandoned('the request was abandoned')) : run(statement, values));
  try {
    return await work(signal ? guarded : run);
  } catch (err) {
    // An error PostgreSQL answered (it has a severity), or work stopped between statements, leaves
    // the connection usable; anything else (a dropped socket, a timeout) marks it for its pool to
    // destroy instead of reuse.
    if (!(err as { severity?: string }).severity && !(err instanceof WorkAbandoned)) reusable = false;
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // the cancel lands (or the connection is condemned) before the connection serves another request
    await cancelling;
    release(reusable);
  }
}

/**
 * `work` that writes the log, on a connection of Sequelize's pool. Such writes hold at most three
 * quarters of the pool at once, and never all of it: a write can wait on a lock somebody else holds
 * on its table (up to LOCK_WAIT_MS), which a read never waits on, so what is left is always there
 * for reads. A write that gets no slot within WRITE_SLOT_WAIT_MS fails as one that gets no
 * connection does (503, busy): under a locked table a slot frees within LOCK_WAIT_MS, so waiting
 * longer would only delay the answer.
 */
export async function withWriteConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>): Promise<T> {
  const slots = writeSlots(sequelize);
  await slots.take();
  try {
    return await withConnection(sequelize, work);
  } finally {
    slots.give();
  }
}

const writeSlotsByPool = new WeakMap<Sequelize, Slots>();

/** The write slots of a Sequelize's pool (made on the first write). */
function writeSlots(sequelize: Sequelize): Slots {
  let slots = writeSlotsByPool.get(sequelize);
  if (!slots) {
    const poolMax = sequelize.config.pool?.max ?? 1;
    const size = writeSlotCount(poolMax);
    slots = new Slots(size, WRITE_SLOT_WAIT_MS, () => new ConnectionAcquireTimeoutError(new Error(`no write slot of ${size} free within ${WRITE_SLOT_WAIT_MS} ms`)));
    writeSlotsByPool.set(sequelize, slots);
  }
  return slots;
}

/** Three quarters of the pool for writes, at least one, and one connection left for reads when the pool has two. */
export function writeSlotCount(poolMax: number): number {
  return poolMax <= 1 ? 1 : Math.max(1, Math.min(poolMax - 1, Math.floor((poolMax * 3) / 4)));
}

/** Writes waiting for a write slot now: waiting for a connection, as the pool's own waiters are. */
export function writesWaiting(sequelize: Sequelize): number {
  return writeSlotsByPool.get(sequelize)?.waiting ?? 0;
}

type Cancellable = { processID: number; secretKey: number; connectionParameters: { host: string; port: number } };

/**
 * Cancels whatever `client` runs now with the protocol's CancelRequest, on a connection of its own
 * (what psql's Ctrl-C sends); PostgreSQL ignores it when nothing runs. Whether it landed: PostgreSQL
 * closed that connection within a second.
 */
function cancelRunning(client: pg.Client): Promise<boolean> {
  const { processID, secretKey, connectionParameters: at } = client as unknown as Cancellable;
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(80877102, 4); // the CancelRequest code
  request.writeInt32BE(processID, 8);
  request.writeInt32BE(secretKey, 12);
  return new Promise((resolve) => {
    const socket = at.host.startsWith('/') ? net.connect(path.join(at.host, `.s.PGSQL.${at.port}`)) : net.connect(at.port, at.host);
    const done = (landed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(landed);
    };
    const timer = setTimeout(() => done(false), 1_000);
    // written, not end()ed: the server closes this connection once it has the request. A client
    // that half-closes first makes PgBouncer 1.18 exit (pgbouncer#801; docs/scaling-research.md).
    socket.once('connect', () => socket.write(request));
    socket.once('close', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** `work` in a transaction on the runner's connection: BEGIN, the work, COMMIT or ROLLBACK. */
export async function transaction<T>(run: Run, work: (run: Run) => Promise<T>): Promise<T> {
  await run(BEGIN, []);
  try {
    const result = await work(run);
    await run(COMMIT, []);
    return result;
  } catch (err) {
    await run(ROLLBACK, []).catch(() => undefined);
    throw err;
  }
}

const BEGIN: Statement = { name: 'sitelog-begin', text: 'BEGIN' };
const COMMIT: Statement = { name: 'sitelog-commit', text: 'COMMIT' };
const ROLLBACK: Statement = { name: 'sitelog-rollback', text: 'ROLLBACK' };
