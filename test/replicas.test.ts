import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { REPLICA_MAX_LAG_MS } from '../src/timeouts.js';
import { startApp } from './support/app.js';
import { ConsoleClient } from './support/console.js';
import { startPrimary, startReplica } from './support/cluster.js';
import { seriesValue } from './support/scraper.js';
import { authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// Issue #12's read replica, for real: a PostgreSQL 15 primary and a streaming replica made with
// pg_basebackup (test/support/cluster.ts), and one web process (its real startup path) with
// DATABASE_URL on the primary and DATABASE_READ_URLS on the replica. What a request read from
// shows in what it answers: with the replica's replay paused, an entry written now is on the
// primary only, so a list without it came from the replica, and one with it from the primary.

type Server = Awaited<ReturnType<typeof startPrimary>>;
let primary: Server;
let replica: Server;
let app: Awaited<ReturnType<typeof startApp>>;
let label: { replica: string };

before(async () => {
  primary = await startPrimary();
  replica = await startReplica(primary);
  app = await startApp(primary.url('sitelog'), { DATABASE_READ_URLS: replica.url('sitelog'), DB_POOL_MAX: '4' });
  label = { replica: `127.0.0.1:${replica.port}` };
});
after(async () => {
  await app?.stop();
  await replica?.remove();
  await primary?.remove();
});

type Entry = { id: number; description: string };

async function post(description: string): Promise<Entry> {
  const response = await fetch(`${app.base}/api/logs`, {
    method: 'POST',
    headers: authHeaders({ 'content-type': 'application/json' }),
    body: JSON.stringify({ stype: 'app', description }),
  });
  assert.equal(response.status, 201);
  return (await response.json()) as Entry;
}

async function listed(word: string): Promise<{ status: number; items: number }> {
  const response = await fetch(`${app.base}/api/logs?limit=5&q=${word}`, { headers: authHeaders() });
  const body = (await response.json()) as { items?: Entry[] };
  return { status: response.status, items: body.items?.length ?? -1 };
}

const metric = async (name: string) => seriesValue(await (await fetch(`${app.base}/metrics`)).text(), name, label);

const onReplica = async (id: number) => (await replica.query('sitelog', 'SELECT 1 FROM system_logs WHERE id = $1', [id])).length === 1;

const resumeReplay = () => replica.query('postgres', 'SELECT pg_wal_replay_resume()');

/**
 * An entry only the primary has: a commit the replica has replayed first (so its lag counts from
 * now), then its replay paused, then the entry. The caller resumes the replay.
 */
async function entryOnPrimaryOnly(): Promise<{ word: string; id: number }> {
  const fresh = await post(`fresh ${crypto.randomUUID()}`);
  await waitFor('the replica to replay a fresh commit', () => onReplica(fresh.id), { timeoutMs: 10_000, everyMs: 20 });
  await replica.query('postgres', 'SELECT pg_wal_replay_pause()');
  const word = `primaryonly${crypto.randomBytes(6).toString('hex')}`;
  const { id } = await post(`written while the replica does not replay: ${word}`).catch(async (err: unknown) => {
    await resumeReplay();
    throw err;
  });
  return { word, id };
}

test('when replicas are set, then the list and the log browser are read from the replica, an entry by its id from the primary, and the lag shows in /metrics', async (t) => {
  await waitFor('the replica up in /metrics', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000 });
  const { word, id } = await entryOnPrimaryOnly();
  try {
    // read-your-write: the id a POST answered is found at once
    const byId = await fetch(`${app.base}/api/logs/${id}`, { headers: authHeaders() });
    assert.equal(byId.status, 200);
    assert.equal(((await byId.json()) as Entry).id, id);
    assert.deepEqual(await listed(word), { status: 200, items: 0 }, 'the list came from the replica, which has not replayed the entry');
    // the console's log browser: its list and chart from the replica, an entry's page from the primary
    const browser = new ConsoleClient(app.base);
    assert.equal((await browser.login()).status, 303);
    const page = await browser.request(`/console/logs?q=${word}`);
    const html = await page.text();
    assert.equal(page.status, 200);
    assert.match(html, /<svg class="chart"/);
    assert.doesNotMatch(html, /written while the replica does not replay/);
    assert.match(await (await browser.request(`/console/logs/${id}`)).text(), /written while the replica does not replay/);
    const readers = await replica.query<{ n: number }>('postgres', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'sitelog-web-0-read'`);
    assert.ok(readers[0]!.n >= 1, 'the read pool is connected to the replica under its own application_name');
    const lag = await waitFor(
      'the lag in /metrics',
      async () => {
        const [seconds, bytes] = [await metric('sitelog_replica_lag_seconds'), await metric('sitelog_replica_lag_bytes')];
        return seconds !== undefined && seconds > 0 && bytes !== undefined && bytes > 0 && { seconds, bytes };
      },
      { timeoutMs: 6_000 },
    );
    t.diagnostic(`replay paused: sitelog_replica_lag_seconds ${lag.seconds.toFixed(2)}, sitelog_replica_lag_bytes ${lag.bytes}`);
  } finally {
    await resumeReplay();
  }
  await waitFor('the lag back to 0', async () => (await metric('sitelog_replica_lag_seconds')) === 0, { timeoutMs: 6_000 });
});

type Answer = { sent: number; at: number; status: number; items: number };

/** 8 clients listing the entries with `word` one after another until stopped. */
function streamLists(word: string): { answers: Answer[]; stop: () => Promise<void> } {
  const answers: Answer[] = [];
  let streaming = true;
  const clients = Array.from({ length: 8 }, async () => {
    while (streaming) {
      const sent = Date.now();
      const { status, items } = await listed(word).catch(() => ({ status: 0, items: -1 }));
      answers.push({ sent, at: Date.now(), status, items });
    }
  });
  return {
    answers,
    async stop() {
      streaming = false;
      await Promise.all(clients);
    },
  };
}

/** The replica's server processes: its postmaster (postmaster.pid) and the postmaster's children. */
function replicaProcesses(): number[] {
  const postmaster = Number(fs.readFileSync(path.join(replica.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        // the 4th field of /proc/PID/stat (after the parenthesised name) is the parent's pid
        return Number(fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]) === postmaster;
      } catch {
        return false;
      }
    })
    .map(Number);
  return [postmaster, ...children];
}

test('when the replica stops under a stream of lists, then none fails and the lists come from the primary within a second; started again, reads go back to it', async (t) => {
  await waitFor('the replica up in /metrics', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000 });
  const { word } = await entryOnPrimaryOnly();
  const stream = streamLists(word);
  const { answers } = stream;
  let stopping = 0;
  let stopped = 0;
  try {
    await waitFor('lists served by the replica', () => answers.filter((a) => a.items === 0).length >= 40, { timeoutMs: 10_000, everyMs: 20 });
    stopping = Date.now();
    await replica.stop('fast');
    stopped = Date.now();
    await waitFor('lists from the primary', () => answers.some((a) => a.sent >= stopped && a.items === 1), { timeoutMs: 5_000, everyMs: 20 });
    // the stream goes on a while on the primary alone
    const until = Date.now() + 1_500;
    await waitFor('1.5 s more of lists', () => Date.now() > until, { timeoutMs: 3_000, everyMs: 50 });
  } finally {
    await stream.stop();
  }
  const failed = answers.filter((a) => a.status !== 200);
  assert.deepEqual(failed, [], 'no list failed');
  const firstFromPrimary = Math.min(...answers.filter((a) => a.items === 1).map((a) => a.at));
  const window = answers.filter((a) => a.at >= stopping && a.sent <= stopped + 1_000);
  t.diagnostic(
    `${answers.length} lists, ${failed.length} non-200; pg_ctl stop -m fast took ${stopped - stopping} ms; first list from the primary ${firstFromPrimary - stopping} ms after the stop began; ` +
      `slowest list around the stop ${Math.max(...window.map((a) => a.at - a.sent))} ms`,
  );
  assert.ok(firstFromPrimary - stopping <= 1_000, 'the lists come from the primary within a second');
  assert.deepEqual(answers.filter((a) => a.sent >= stopped && a.items !== 1), [], 'once the replica is stopped, every list comes from the primary');
  await waitFor('the replica down in /metrics', async () => (await metric('sitelog_replica_up')) === 0, { timeoutMs: 5_000 });

  const starting = Date.now();
  await replica.start();
  const started = Date.now();
  await waitFor('the replica up in /metrics again', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000, everyMs: 50 });
  t.diagnostic(`pg_ctl start took ${started - starting} ms; up again ${Date.now() - started} ms after`);
  const { word: again } = await entryOnPrimaryOnly();
  try {
    assert.deepEqual(await listed(again), { status: 200, items: 0 }, 'the list came from the replica again');
  } finally {
    await resumeReplay();
  }
});

test('when the replica hangs (every process stopped) under a stream of lists, then none fails and the lists come from the primary within seconds', async (t) => {
  await waitFor('the replica up in /metrics', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000 });
  const { word } = await entryOnPrimaryOnly();
  const stream = streamLists(word);
  const { answers } = stream;
  let hung: number[] = [];
  let hanging = 0;
  try {
    await waitFor('lists served by the replica', () => answers.filter((a) => a.items === 0).length >= 40, { timeoutMs: 10_000, everyMs: 20 });
    hung = replicaProcesses();
    hanging = Date.now();
    for (const pid of hung) process.kill(pid, 'SIGSTOP');
    await waitFor('lists from the primary', () => answers.some((a) => a.sent >= hanging && a.items === 1), { timeoutMs: 10_000, everyMs: 20 });
    const until = Date.now() + 1_000;
    await waitFor('1 s more of lists', () => Date.now() > until, { timeoutMs: 3_000, everyMs: 50 });
  } finally {
    for (const pid of hung) process.kill(pid, 'SIGCONT');
    await stream.stop();
    await resumeReplay();
  }
  const failed = answers.filter((a) => a.status !== 200);
  assert.deepEqual(failed, [], 'no list failed');
  const firstFromPrimary = Math.min(...answers.filter((a) => a.items === 1).map((a) => a.at));
  const slowest = Math.max(...answers.filter((a) => a.at >= hanging).map((a) => a.at - a.sent));
  t.diagnostic(`${answers.length} lists, ${failed.length} non-200; first list from the primary ${firstFromPrimary - hanging} ms after the replica hung; slowest list ${slowest} ms`);
  // found out by the lag read (every 2 s, 1 s to answer), the reads waiting on it cut then
  assert.ok(firstFromPrimary - hanging <= 4_000, 'the lists come from the primary within 4 s');
  await waitFor('the replica up again once it runs', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000, everyMs: 50 });
});

test('when the replica falls further behind than REPLICA_MAX_LAG_MS, then its reads go to the primary until it has caught up', async (t) => {
  await waitFor('the replica up in /metrics', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 15_000 });
  const paused = Date.now();
  const { word } = await entryOnPrimaryOnly();
  let downAfter: number;
  try {
    assert.deepEqual(await listed(word), { status: 200, items: 0 }, 'within the bound, the list comes from the replica');
    await waitFor('the list from the primary', async () => (await listed(word)).items === 1, { timeoutMs: REPLICA_MAX_LAG_MS + 8_000, everyMs: 100 });
    downAfter = Date.now() - paused;
    assert.equal(await metric('sitelog_replica_up'), 0);
    assert.ok((await metric('sitelog_replica_lag_seconds'))! > REPLICA_MAX_LAG_MS / 1000);
  } finally {
    await resumeReplay();
  }
  const resumed = Date.now();
  await waitFor('the replica up again once it has caught up', async () => (await metric('sitelog_replica_up')) === 1, { timeoutMs: 10_000, everyMs: 50 });
  t.diagnostic(`replay paused: reads on the primary ${downAfter} ms after the pause (bound ${REPLICA_MAX_LAG_MS} ms); up again ${Date.now() - resumed} ms after the replay resumed`);
  assert.ok(downAfter >= REPLICA_MAX_LAG_MS, 'not before the lag passes the bound');
});

test('when a PM2 cluster of two instances reads from the replica, then /metrics shows each instance\'s lag and the host\'s as the worst, not the sum', async (t) => {
  const stack = await Stack.create({ instances: 2, databaseUrl: primary.url('sitelog'), env: { DATABASE_READ_URLS: replica.url('sitelog'), DB_POOL_MAX: '3' } });
  const scrape = async () => (await fetch(stack.url('/metrics'))).text();
  /** The host's series (no `instance` label), then instance 0's and 1's. */
  const HOST_AND_EACH: Array<Record<string, string>> = [{}, { instance: '0' }, { instance: '1' }];
  try {
    await stack.start();
    await waitFor('the replica up for the host and both instances', async () => {
      const text = await scrape();
      return HOST_AND_EACH.every((l) => seriesValue(text, 'sitelog_replica_up', { ...label, ...l }) === 1);
    });
    await entryOnPrimaryOnly();
    try {
      const lags = await waitFor(
        'both instances to read a lag',
        async () => {
          const text = await scrape();
          const [host, zero, one] = HOST_AND_EACH.map((l) => seriesValue(text, 'sitelog_replica_lag_seconds', { ...label, ...l }) ?? 0);
          return zero! > 0 && one! > 0 && { host: host!, zero: zero!, one: one! };
        },
        { timeoutMs: 8_000 },
      );
      t.diagnostic(`sitelog_replica_lag_seconds: host ${lags.host}, instance 0 ${lags.zero}, instance 1 ${lags.one}`);
      assert.equal(lags.host, Math.max(lags.zero, lags.one));
    } finally {
      await resumeReplay();
    }
    // (the in-process app of the tests above is instance 0 too: its read pool may be there as well)
    const readers = await replica.query<{ name: string }>('postgres', `SELECT DISTINCT application_name AS name FROM pg_stat_activity WHERE application_name LIKE 'sitelog-web-%-monitor'`);
    assert.deepEqual(
      readers.map((r) => r.name).sort(),
      ['sitelog-web-0-read-monitor', 'sitelog-web-1-read-monitor'],
      'each instance reads the lag on a connection of its own',
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${await stack.diagnosis()}`, { cause: err });
  } finally {
    await stack.stop();
  }
});
