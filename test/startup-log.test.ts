import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// The six rules of SPEC "Startup log", against real PM2 cluster instances and a real PostgreSQL.

type Entry = { description: string; instance: number | null };
type Start = { host: string; timestamp: string; entries: Array<{ instance: number; pid: number; event: string; timestamp: string }> };

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.stop();
});

/** The host's startup log; empty before the first start made the database (3D000) or its tables (42P01). */
async function entries(host: string): Promise<Entry[]> {
  return postgres
    .query<Entry>('sitelog', `SELECT description, instance FROM system_logs WHERE host = $1 AND stype = 'system' ORDER BY id`, [host])
    .catch((err: { code?: string }) => {
      if (err.code === '3D000' || err.code === '42P01') return [];
      throw err;
    });
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

/** A stack of its own (its own host name), started, its first start's entries written. */
async function startedStack(instances = 2): Promise<Stack> {
  const stack = await Stack.create({ instances, databaseUrl: postgres.url('sitelog') });
  try {
    await stack.start();
    await waitForEntries(stack.host, instances + 1);
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}

/** `check` on a started stack of its own, which is stopped afterwards whatever happens. */
async function onStartedStack(check: (stack: Stack) => Promise<void>): Promise<void> {
  const stack = await startedStack();
  try {
    await check(stack);
  } finally {
    await stack.stop();
  }
}

/** The entries `step` adds to the host's log: waits for `added` of them, then takes what is there. */
async function entriesAddedBy(host: string, added: number, step: () => Promise<unknown>): Promise<Entry[]> {
  const before = (await entries(host)).length;
  await step();
  return (await waitForEntries(host, before + added)).slice(before);
}

// Each test starts a stack of its own, so it asserts only on what its own steps wrote.
describe('startup log', { timeout: 240_000 }, () => {
  test('when a cluster of 2 starts, then one "server started" and one entry per instance naming its id and pid', async () => {
    const stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('sitelog') });
    try {
      const rows = await entriesAddedBy(stack.host, 3, () => stack.start());
      assert.equal(serverStarts(rows), 1);
      const web = await stack.web();
      const started = instanceEntries(rows, 'started').map((r) => r.description).sort();
      assert.deepEqual(started, [0, 1].map((i) => `instance ${i} started (pid ${web.get(i)!.pid})`).sort());
      assert.equal(rows.length, 3);
    } finally {
      await stack.stop();
    }
  });

  test('when a worker is killed with SIGKILL, then PM2 restarts it and it logs "restarted", no new start', () =>
    onStartedStack(async (stack) => {
      const victim = (await stack.web()).get(1)!;
      const rows = await entriesAddedBy(stack.host, 1, async () => {
        process.kill(victim.pid, 'SIGKILL');
        await waitFor('instance 1 back with a new pid', async () => {
          const p = (await stack.web()).get(1);
          return p !== undefined && p.pid !== victim.pid;
        });
      });
      assert.deepEqual(rows.map((r) => r.description), [`instance 1 restarted (pid ${(await stack.web()).get(1)!.pid})`]);
    }));

  test('when pm2 reload runs, then each instance logs "reloaded" once, /api/starts shows them under the same start, and the server did not start again', () =>
    onStartedStack(async (stack) => {
      const before = await stack.web();
      const rows = await entriesAddedBy(stack.host, 2, async () => {
        await stack.pm2('reload', 'ecosystem.config.js');
        await stack.waitReady(2);
      });
      assert.equal(serverStarts(rows), 0);
      assert.deepEqual(instanceEntries(rows, 'reloaded').map((r) => r.instance).sort(), [0, 1]);
      assert.equal(rows.length, 2);
      const after = await stack.web();
      for (const id of [0, 1]) assert.notEqual(after.get(id)!.pid, before.get(id)!.pid);

      // SPEC "GET /api/starts": the host's one start, its instances "started" with their first pids,
      // then "reloaded" with the pids that replaced them
      const response = await fetch(stack.url(`/api/starts?host=${encodeURIComponent(stack.host)}`), { headers: authHeaders() });
      assert.equal(response.status, 200);
      const { items } = (await response.json()) as { items: Start[] };
      assert.deepEqual(items.map((s) => s.host), [stack.host], 'one start of this host, not two');
      const entries = items[0]!.entries.map((e) => [e.event, e.instance, e.pid]);
      const expected = [0, 1].flatMap((id) => [
        ['started', id, before.get(id)!.pid],
        ['reloaded', id, after.get(id)!.pid],
      ]);
      const byEventThenId = (a: Array<string | number>, b: Array<string | number>) => JSON.stringify(a).localeCompare(JSON.stringify(b));
      assert.deepEqual(entries.sort(byEventThenId), expected.sort(byEventThenId));
      const reloaded = items[0]!.entries.filter((e) => e.event === 'reloaded');
      const started = items[0]!.entries.filter((e) => e.event === 'started');
      for (const e of reloaded) assert.ok(started.every((s) => s.timestamp <= e.timestamp), 'reloaded after the start');
    }));

  test('when web is scaled from 2 to 4, then two new instance entries and no "server started"', () =>
    onStartedStack(async (stack) => {
      const rows = await entriesAddedBy(stack.host, 2, async () => {
        await stack.pm2('scale', 'web', '4');
        await stack.waitReady(4);
      });
      assert.equal(serverStarts(rows), 0);
      assert.deepEqual(instanceEntries(rows, 'started').map((r) => r.instance).sort(), [2, 3]);
      assert.equal(rows.length, 2);
    }));

  test('when every instance stops and starts again, then exactly one new "server started" and one entry per instance', () =>
    onStartedStack(async (stack) => {
      const rows = await entriesAddedBy(stack.host, 3, async () => {
        await stack.pm2('stop', 'web');
        await waitFor('web stopped', async () => (await stack.web()).size === 0);
        await stack.pm2('start', 'web');
        await stack.waitReady(2);
      });
      assert.equal(serverStarts(rows), 1);
      assert.equal(instanceEntries(rows, 'started').length, 2);
      assert.equal(rows.length, 3);
    }));

  test('when the PM2 daemon is killed and the stack started again, then one new "server started"', () =>
    onStartedStack(async (stack) => {
      const rows = await entriesAddedBy(stack.host, 3, async () => {
        await stack.pm2('kill');
        await stack.start();
      });
      assert.equal(serverStarts(rows), 1);
      assert.equal(rows.length, 3);
    }));

  test('when 4 instances of another host start in parallel on the same database, then that host has its own one start', async () => {
    const stack = await startedStack();
    const other = await Stack.create({ instances: 4, databaseUrl: postgres.url('sitelog') });
    try {
      const first = (await entries(stack.host)).length;
      const rows = await entriesAddedBy(other.host, 5, () => other.start());
      assert.equal(serverStarts(rows), 1);
      assert.deepEqual(instanceEntries(rows, 'started').map((r) => r.instance).sort(), [0, 1, 2, 3]);
      assert.equal((await entries(stack.host)).length, first, 'the first host logged nothing');
      const response = await fetch(other.url('/api/instances'), { headers: authHeaders() });
      const { items } = (await response.json()) as { items: Array<{ host: string }> };
      assert.equal(items.filter((i) => i.host === other.host).length, 4);
      assert.equal(items.filter((i) => i.host === stack.host).length, 2);
    } finally {
      await other.stop();
      await stack.stop();
    }
  });
});
