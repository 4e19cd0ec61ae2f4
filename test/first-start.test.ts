import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { Stack, uncleanLines } from './support/stack.js';
import { waitFor } from './support/wait.js';

// The seed's second failure: "database does not exist" on the first start.

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.stop();
});

describe('first start', { timeout: 120_000 }, () => {
  test('when 4 instances start at once and the database does not exist, then it is created, migrated once, and nothing is logged as an error', async () => {
    const migrations = fs.readdirSync(path.join(__dirname, '..', 'src', 'db', 'migrations')).length;
    const stack = await Stack.create({ instances: 4, databaseUrl: postgres.url('fresh_site') });
    try {
      assert.equal((await postgres.query('postgres', `SELECT 1 FROM pg_database WHERE datname = 'fresh_site'`)).length, 0);
      const serverLogBefore = postgres.log().length;
      await stack.start();

      const applied = await postgres.query<{ name: string }>('fresh_site', 'SELECT name FROM sitelog_migrations');
      assert.equal(applied.length, migrations);

      // every instance's log is complete once its last startup line reached PM2's file
      const lines = await waitFor('4 "ready" lines in the log', () => {
        const all = stack.webLogLines();
        return all.filter((l) => /^instance \d+ ready$/.test(String(l['msg']))).length === 4 && all;
      });
      const migrationLines = lines.filter((l) => l['msg'] === 'migration applied');
      assert.equal(migrationLines.length, migrations, 'each migration applied by exactly one instance');
      assert.equal(lines.filter((l) => l['msg'] === 'database created').length, 1);
      const errors = lines.filter((l) => Number(l['level']) >= 50);
      assert.deepEqual(errors, []);
      const stderr = fs
        .readdirSync(stack.logDir)
        .filter((f) => f.startsWith('web-error'))
        .map((f) => fs.readFileSync(path.join(stack.logDir, f), 'utf8'))
        .join('');
      assert.equal(stderr, '');
      const starts = await postgres.query('fresh_site', `SELECT 1 FROM system_logs WHERE description = 'server started'`);
      assert.equal(starts.length, 1);
      // the incident's words: nothing connected to the database before it existed
      assert.deepEqual(uncleanLines(postgres.log().slice(serverLogBefore)), [], 'PostgreSQL logged no FATAL or ERROR');
      assert.deepEqual(uncleanLines(stack.logText()), [], 'no app logged an error');
    } finally {
      await stack.stop();
    }
  });

  test('when the pool budget exceeds max_connections, then web stops with one clear line naming the numbers and PM2 does not restart it', async () => {
    const stack = await Stack.create({ instances: 1, databaseUrl: postgres.url('sitelog'), env: { DB_POOL_MAX: '500' } });
    try {
      await stack.pm2('start', 'ecosystem.config.js');
      const proc = await waitFor('web to stop', async () => {
        const [p] = await stack.processes('web');
        return p && p.pm2_env.status === 'stopped' ? p : undefined;
      });
      assert.equal(proc.pm2_env.exit_code, 78);
      assert.equal(proc.pm2_env.restart_time, 0);
      // PM2's daemon writes the pipe to its log file on its own time: the exit can be seen first.
      const fatal = await waitFor('the fatal line in the log', () => stack.webLogLines().find((l) => Number(l['level']) === 60));
      assert.match(String(fatal?.['msg']), /pool budget exceeded: WEB_INSTANCES 1 × \(DB_POOL_MAX 500 \+ 1\) \+ reserve 5 = 506 connections, but the server allows 97/);
    } finally {
      await stack.stop();
    }
  });
});
