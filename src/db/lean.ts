import pg from 'pg';
import type { Sequelize } from 'sequelize';

/**
 * The one way sitelog runs SQL: a feature's queries module names its statements, and a runner
 * executes them on one connection. The connection is one of Sequelize's pool (the same budget,
 * validation and acquire timeout as everything else; `withConnection`) or a client of a process's own,
 * such as its liveness connection (`runOn`). A statement with a name is prepared once per connection,
 * so PostgreSQL parses and plans it once; one whose plan depends on its values has the name ''.
 * The tables are described by the migrations (src/db/migrations/), not by models.
 */
export type Statement = { readonly name: string; readonly text: string };

type PooledClient = pg.Client & { _invalid?: boolean };

export type Run = <R extends pg.QueryResultRow>(statement: Statement, values: unknown[]) => Promise<R[]>;

/** A runner on one client: the liveness connection, a migration's, or a pooled one. */
export function runOn(client: pg.Client): Run {
  return async <R extends pg.QueryResultRow>(statement: Statement, values: unknown[]) =>
    (await client.query<R>(statement.name ? { name: statement.name, text: statement.text, values } : { text: statement.text, values })).rows;
}

/**
 * `work` on a connection of Sequelize's pool. With a `signal` (the request's client went away),
 * the statement running then is cancelled, and no further one starts: a slow read stops costing the
 * database anything once nobody waits for it.
 */
export async function withConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const client = (await sequelize.connectionManager.getConnection({ type: 'write' })) as PooledClient;
  const run = runOn(client);
  let cancelling: Promise<void> | undefined;
  const onAbort = (): void => {
    cancelling = cancelRunning(client);
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const guarded: Run = (statement, values) => (signal?.aborted ? Promise.reject(new Error('the client went away')) : run(statement, values));
  try {
    return await work(signal ? guarded : run);
  } catch (err) {
    // An error PostgreSQL answered (it has a severity) leaves the connection usable; anything else
    // (a dropped socket, a timeout) marks it for Sequelize's pool to destroy instead of reuse.
    if (!(err as { severity?: string }).severity) client._invalid = true;
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // a cancel still on its way must land before the connection serves another request
    await cancelling;
    sequelize.connectionManager.releaseConnection(client);
  }
}

type Cancellable = pg.Client & { activeQuery?: unknown; connectionParameters: pg.ClientConfig };
type Canceller = pg.Client & { connection: NodeJS.EventEmitter; cancel(client: pg.Client, query: unknown): void };

/**
 * Cancels the statement `client` runs now, with the protocol's CancelRequest on a connection of its
 * own (what psql's Ctrl-C sends). Settles when PostgreSQL closed that connection, or after a second.
 */
function cancelRunning(client: PooledClient): Promise<void> {
  const active = (client as Cancellable).activeQuery;
  if (!active) return Promise.resolve();
  const canceller = new pg.Client((client as Cancellable).connectionParameters) as Canceller;
  return new Promise<void>((resolve) => {
    const done = setTimeout(resolve, 1_000);
    done.unref();
    const finish = () => {
      clearTimeout(done);
      resolve();
    };
    canceller.connection.on('error', finish);
    canceller.connection.on('end', finish);
    canceller.cancel(client, active);
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
