import type pg from 'pg';
import type { Sequelize } from 'sequelize';

/**
 * Sequelize's leanest path for the hot routes: a connection from its own pool (the same budget,
 * validation and acquire timeout as every other query) and a named prepared statement on it, so
 * PostgreSQL parses and plans the query once per connection. The models stay the schema's source.
 */
export type Statement = { readonly name: string; readonly text: string };

type PooledClient = pg.Client & { _invalid?: boolean };

export type Run = <R extends pg.QueryResultRow>(statement: Statement, values: unknown[]) => Promise<R[]>;

export async function withConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>): Promise<T> {
  const client = (await sequelize.connectionManager.getConnection({ type: 'write' })) as PooledClient;
  const run: Run = async (statement, values) => (await client.query({ name: statement.name, text: statement.text, values })).rows;
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

/** `work` in a transaction on a connection of its own: BEGIN, the work, COMMIT or ROLLBACK. */
export async function inTransaction<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>): Promise<T> {
  return withConnection(sequelize, async (run) => {
    await run(BEGIN, []);
    try {
      const result = await work(run);
      await run(COMMIT, []);
      return result;
    } catch (err) {
      await run(ROLLBACK, []).catch(() => undefined);
      throw err;
    }
  });
}

const BEGIN: Statement = { name: 'sitelog-begin', text: 'BEGIN' };
const COMMIT: Statement = { name: 'sitelog-commit', text: 'COMMIT' };
const ROLLBACK: Statement = { name: 'sitelog-rollback', text: 'ROLLBACK' };
