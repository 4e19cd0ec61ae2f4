import type pg from 'pg';
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

export async function withConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>): Promise<T> {
  const client = (await sequelize.connectionManager.getConnection({ type: 'write' })) as PooledClient;
  const run = runOn(client);
  try {
    return await work(run);
  } catch (err) {
    // An error PostgreSQL answered (it has a severity) leaves the connection usable; anything else
    // (a dropped socket, a timeout) marks it for Sequelize's pool to destroy instead of reuse.
    if (!(err as { severity?: string }).severity) client._invalid = true;
    throw err;
  } finally {
    sequelize.connectionManager.releaseConnection(client);
  }
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
