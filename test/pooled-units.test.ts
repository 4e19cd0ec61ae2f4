import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type pg from 'pg';
import { loadConfig } from '../src/config.js';
import { checkPoolBudget, PoolBudgetError, sessionOptions } from '../src/db/database.js';
import { ADMIN_PASSWORD, API_TOKEN } from './support/stack.js';

// The pure parts of running behind PgBouncer; test/scaling.test.ts runs the real thing.

const env = { DATABASE_URL: 'postgres://sitelog:pw@pgbouncer:6432/sitelog', API_TOKEN, ADMIN_PASSWORD };

describe('configuration behind PgBouncer', () => {
  test('when DATABASE_DIRECT_URL is unset, then sessions use DATABASE_URL and statements stay named', () => {
    const config = loadConfig(env);
    assert.equal(config.DATABASE_DIRECT_URL, env.DATABASE_URL);
    assert.equal(config.DATABASE_POOLED, false);
    assert.deepEqual(config.DATABASE_READ_URLS, []);
  });

  test('when DATABASE_DIRECT_URL repeats DATABASE_URL, then nothing is pooled', () => {
    assert.equal(loadConfig({ ...env, DATABASE_DIRECT_URL: env.DATABASE_URL }).DATABASE_POOLED, false);
  });

  test('when DATABASE_DIRECT_URL is set apart, then DATABASE_URL is taken for a transaction pool', () => {
    const config = loadConfig({ ...env, DATABASE_DIRECT_URL: 'postgres://sitelog:pw@db:5432/sitelog' });
    assert.equal(config.DATABASE_POOLED, true);
    assert.equal(config.DATABASE_DIRECT_URL, 'postgres://sitelog:pw@db:5432/sitelog');
  });

  test('when DATABASE_READ_URLS lists replicas with spaces and a trailing comma, then each is one entry', () => {
    const config = loadConfig({ ...env, DATABASE_READ_URLS: ' postgres://r:pw@replica-1/sitelog ,postgres://r:pw@replica-2:5433/sitelog,' });
    assert.deepEqual(config.DATABASE_READ_URLS, ['postgres://r:pw@replica-1/sitelog', 'postgres://r:pw@replica-2:5433/sitelog']);
  });

  test('when session settings are rendered, then they are one startup parameter PostgreSQL reads as -c pairs', () => {
    assert.equal(sessionOptions({ statement_timeout: 0, lock_timeout: 1000 }), '-c statement_timeout=0 -c lock_timeout=1000');
  });
});

describe('the connection budget checked at startup', () => {
  // the two settings checkPoolBudget reads, as PostgreSQL answers them
  const server = (max: number) => ({ query: () => Promise.resolve({ rows: [{ max: String(max), reserved: '3' }] }) }) as unknown as pg.Client;

  test('when 12 instances of pool 3 go straight to a server of 40, then startup refuses and names PgBouncer as a way out', async () => {
    await assert.rejects(
      checkPoolBudget(server(40), { instances: 12, poolMax: 3, pooled: false }),
      (err: Error) => err instanceof PoolBudgetError && /= 53 connections, but the server allows 37/.test(err.message) && /PgBouncer/.test(err.message),
    );
  });

  test('when the same 12 instances go through PgBouncer, then only their liveness connections count', async () => {
    assert.deepEqual(await checkPoolBudget(server(40), { instances: 12, poolMax: 3, pooled: true }), { needed: 17, available: 37 });
  });

  test('when even the liveness connections do not fit, then startup refuses and says which numbers to change', async () => {
    await assert.rejects(
      checkPoolBudget(server(20), { instances: 16, poolMax: 3, pooled: true }),
      (err: Error) => /16 × 1 liveness connection/.test(err.message) && /lower WEB_INSTANCES or raise max_connections/.test(err.message),
    );
  });
});
