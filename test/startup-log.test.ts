import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// The six rules of SPEC "Startup log", against real PM2 cluster instances and a real PostgreSQL.

type Entry = { description: string; instance: number | null };

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.stop();
});

async function entries(host: string): Promise<Entry[]> {
  return postgres.query<Entry>(
    'sitelog',
    `SELECT description, instance FROM system_logs WHERE host = $1 AND stype = 'system' ORDER BY id`,
    [host],
  );
}

const serverStarts = (rows: Entry[]) => rows.filter((r) => r.description === 'server started').length;
const instanceEntries = (rows: Entry[], event: string) =>
  rows.filter((r) => new RegExp(`^instance \\d+ ${event} \\(pid \\d+\\)$`).test(r.description));

async function waitForEntries(host: string, count: number): Promise<Entry[]> {
  return waitFor(`${count} startup entries for ${host}`, async () => {
    const rows = await entries(host);
    return rows.length >= count ? rows : undefined;
  });
}

describe('startup log', { timeout: 240_000 }, () => {
  let stack: Stack;
  after(async () => {
    await stack?.stop();
  });

  test('when a cluster of 2 starts, then one "server started" and one entry per instance naming its id and pid', async () => {
    stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('sitelog') });
    await stack.start();
    const rows = await waitForEntries(stack.host, 3);
    assert.equal(serverStarts(rows), 1);
    const web = await stack.web();
    const started = instanceEntries(rows, 'started').map((r) => r.description).sort();
    assert.deepEqual(started, [0, 1].map((i) => `instance ${i} started (pid ${web.get(i)!.pid})`).sort());
  });

  test('when a worker is killed with SIGKILL, then PM2 restarts it and it logs "restarted", no new start', async () => {
    const victim = (await stack.web()).get(1)!;
    process.kill(victim.pid, 'SIGKILL');
    await waitFor('instance 1 back with a new pid', async () => {
      const p = (await stack.web()).get(1);
      return p !== undefined && p.pid !== victim.pid;
    });
    const rows = await waitForEntries(stack.host, 4);
    assert.equal(serverStarts(rows), 1);
    const restarted = instanceEntries(rows, 'restarted');
    assert.equal(restarted.length, 1);
    assert.match(restarted[0]!.description, /^instance 1 restarted/);
    assert.equal(rows.length, 4);
  });

  test('when pm2 reload runs, then each instance logs "reloaded" once and the server did not start again', async () => {
    const before = await stack.web();
    await stack.pm2('reload', 'ecosystem.config.js');
    await stack.waitReady(2);
    const rows = await waitForEntries(stack.host, 6);
    assert.equal(serverStarts(rows), 1);
    const reloaded = instanceEntries(rows, 'reloaded').map((r) => r.instance).sort();
    assert.deepEqual(reloaded, [0, 1]);
    const after = await stack.web();
    for (const id of [0, 1]) assert.notEqual(after.get(id)!.pid, before.get(id)!.pid);
  });

  test('when web is scaled from 2 to 4, then two new instance entries and no "server started"', async () => {
    await stack.pm2('scale', 'web', '4');
    await stack.waitReady(4);
    const rows = await waitForEntries(stack.host, 8);
    assert.equal(serverStarts(rows), 1);
    const startedIds = instanceEntries(rows, 'started').map((r) => r.instance).sort();
    assert.deepEqual(startedIds, [0, 1, 2, 3]);
    assert.equal(rows.length, 8);
  });

  test('when every instance stops and starts again, then exactly one new "server started"', async () => {
    await stack.pm2('stop', 'web');
    await waitFor('web stopped', async () => (await stack.web()).size === 0);
    await stack.pm2('start', 'web');
    await stack.waitReady(4);
    const rows = await waitForEntries(stack.host, 13);
    assert.equal(serverStarts(rows), 2);
    const lastStart = rows.map((r) => r.description).lastIndexOf('server started');
    assert.equal(instanceEntries(rows.slice(lastStart), 'started').length, 4);
    assert.equal(rows.length, 13);
  });

  test('when the PM2 daemon is killed and the stack started again, then one new "server started"', async () => {
    await stack.pm2('kill');
    await stack.start();
    const rows = await waitForEntries(stack.host, 16);
    assert.equal(serverStarts(rows), 3);
    assert.equal(rows.length, 16);
  });

  test('when 4 instances of another host start in parallel on the same database, then that host has its own one start', async () => {
    const other = await Stack.create({ instances: 4, databaseUrl: postgres.url('sitelog') });
    try {
      const before = (await entries(stack.host)).length;
      await other.start();
      const rows = await waitForEntries(other.host, 5);
      assert.equal(serverStarts(rows), 1);
      assert.deepEqual(
        instanceEntries(rows, 'started').map((r) => r.instance).sort(),
        [0, 1, 2, 3],
      );
      assert.equal((await entries(stack.host)).length, before, 'the first host logged nothing');
      const response = await fetch(other.url('/api/instances'), {
        headers: { authorization: 'Bearer test-token-0123456789abcdef' },
      });
      const { items } = (await response.json()) as { items: Array<{ host: string }> };
      assert.equal(items.filter((i) => i.host === other.host).length, 4);
      assert.equal(items.filter((i) => i.host === stack.host).length, 2);
    } finally {
      await other.stop();
    }
  });
});
