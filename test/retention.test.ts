import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { LOCK_RETENTION } from '../src/db/locks.js';
import type { Stype } from '../src/logs/model.js';
import { BATCH_ROWS, retentionDays } from '../src/logs/retention.js';
import { encodeCursor } from '../src/logs/schema.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// LOG_RETENTION_DAYS (docs/retention.md) against a real PostgreSQL and real PM2 instances. The
// stacks offer a pass every 300 ms (LOG_RETENTION_INTERVAL_MS), so a pass follows each insert at once.

const DAYS = 30;
const RETENTION_ENV = { LOG_RETENTION_DAYS: String(DAYS), LOG_RETENTION_INTERVAL_MS: '300', LOG_LEVEL: 'debug' };
const DAY_MS = 86_400_000;

describe('the retention rule', () => {
  test('when LOG_RETENTION_DAYS is set, then app and error entries are kept that long, system and security at least 365 days', () => {
    const cases: Array<[number, Record<string, number>]> = [
      [1, { system: 365, security: 365, app: 1, error: 1 }],
      [30, { system: 365, security: 365, app: 30, error: 30 }],
      [365, { system: 365, security: 365, app: 365, error: 365 }],
      [3650, { system: 3650, security: 3650, app: 3650, error: 3650 }],
    ];
    for (const [days, expected] of cases) assert.deepEqual(retentionDays(days), expected, `LOG_RETENTION_DAYS=${days}`);
  });
});

let postgres: TestPostgres;
let stack: Stack;
before(async () => {
  postgres = await startPostgres();
  stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('retention'), env: RETENTION_ENV });
  await stack.start();
});
after(async () => {
  await stack?.stop();
  await postgres?.stop();
});

/**
 * `count` entries tagged `tag`, their types taken in turn from `stypes`, a second apart going back
 * from `ageDays` days ago: what a log of that age holds. One INSERT: a pass sees all of them or none.
 */
async function insertAged(database: string, entries: { tag: string; stypes: Stype[]; count: number; ageDays: number }): Promise<void> {
  await postgres.query(
    database,
    `INSERT INTO system_logs (stype, "timestamp", description, host)
     SELECT ($1::text[])[1 + g % cardinality($1::text[])], now() - make_interval(days => $2) - g * interval '1 second', $3::text || ' ' || g, 'retention-test'
     FROM generate_series(1, $4) g`,
    [entries.stypes, entries.ageDays, entries.tag, entries.count],
  );
}

/** How many entries tagged `tag` are left, by type. */
async function left(database: string, tag: string): Promise<Partial<Record<Stype, number>>> {
  const rows = await postgres.query<{ stype: Stype; n: number }>(
    database,
    `SELECT stype, count(*)::int AS n FROM system_logs WHERE description LIKE $1 || ' %' GROUP BY stype`,
    [tag],
  );
  return Object.fromEntries(rows.map((r) => [r.stype, r.n]));
}

const total = (counts: Partial<Record<Stype, number>>) => Object.values(counts).reduce((a, b) => a + b, 0);

/** Waits until no entry tagged `tag` is left. */
const allRemoved = (database: string, tag: string, timeoutMs = 60_000) =>
  waitFor(`every "${tag}" entry removed`, async () => total(await left(database, tag)) === 0, { timeoutMs });

/** Waits until the job has removed some, but not all, of the entries tagged `tag`: a pass is under way. */
const removalUnderWay = (database: string, tag: string, inserted: number) =>
  waitFor(`removal of "${tag}" under way`, async () => {
    const n = total(await left(database, tag));
    return n > 0 && n < inserted;
  });

type RunLine = { event: string; pid: number; rows: number; batches: number; ms: number; startedAt: string; stopped: boolean; time: string; byType: Partial<Record<Stype, number>> };

const retentionLines = (...stacks: Stack[]) => stacks.flatMap((s) => s.webLogLines()).filter((l) => String(l['event']).startsWith('log_retention')) as unknown as RunLine[];

describe('log retention', { timeout: 300_000 }, () => {
  test('when entries are older than LOG_RETENTION_DAYS, then app and error entries go and younger ones stay; system and security entries stay for 365 days', async () => {
    const stypes: Stype[] = ['app', 'error', 'system', 'security'];
    await insertAged('retention', { tag: 'expired', stypes, count: 40, ageDays: DAYS + 1 });
    await insertAged('retention', { tag: 'recent', stypes, count: 40, ageDays: DAYS - 1 });
    await insertAged('retention', { tag: 'year-old', stypes, count: 40, ageDays: 366 });
    await insertAged('retention', { tag: 'within-year', stypes, count: 40, ageDays: 364 });

    await waitFor('the expired app and error entries and the year-old ones removed', async () => {
      const expired = await left('retention', 'expired');
      return !expired.app && !expired.error && total(await left('retention', 'year-old')) === 0;
    });
    assert.deepEqual(await left('retention', 'expired'), { system: 10, security: 10 });
    assert.deepEqual(await left('retention', 'recent'), { app: 10, error: 10, system: 10, security: 10 });
    assert.deepEqual(await left('retention', 'within-year'), { system: 10, security: 10 });
  });

  test('when more entries expire than one batch holds, then one pass removes them all in several batches', async () => {
    const count = Math.round(BATCH_ROWS * 2.4);
    await insertAged('retention', { tag: 'many', stypes: ['app'], count, ageDays: DAYS + 5 });
    await allRemoved('retention', 'many');
    const pass = await waitFor('the pass logged', () => retentionLines(stack).find((l) => l.event === 'log_retention' && (l.byType.app ?? 0) >= count));
    assert.equal(pass.byType.app, count);
    assert.equal(pass.batches, Math.ceil(count / BATCH_ROWS));
    assert.ok(pass.ms > 0);
  });

  test('when entries are written while expired ones are removed, then every write is answered 201 and stored once', async () => {
    const inserted = 150_000;
    await insertAged('retention', { tag: 'under-writes', stypes: ['app'], count: inserted, ageDays: DAYS + 10 });
    await removalUnderWay('retention', 'under-writes', inserted);
    let removing = true;
    const watcher = allRemoved('retention', 'under-writes').finally(() => (removing = false));
    // 8 writers, each writing until the removal is over (and 20 entries at least)
    const writer = async (w: number) => {
      const answers: Array<{ status: number; id: number; description: string }> = [];
      for (let i = 0; removing || i < 20; i++) {
        const description = `write ${w}-${i} during retention`;
        const response = await fetch(stack.url('/api/logs'), {
          method: 'POST',
          headers: authHeaders({ 'content-type': 'application/json' }),
          body: JSON.stringify({ stype: 'app', description }),
        });
        answers.push({ status: response.status, id: ((await response.json()) as { id: number }).id, description });
      }
      return answers;
    };
    const answers = (await Promise.all(Array.from({ length: 8 }, (_, w) => writer(w)))).flat();
    await watcher;

    assert.deepEqual(answers.filter((a) => a.status !== 201), []);
    const stored = await postgres.query<{ id: string; description: string }>('retention', `SELECT id, description FROM system_logs WHERE description LIKE 'write %-% during retention'`);
    assert.equal(stored.length, answers.length, 'one row per write');
    const byId = new Map(stored.map((r) => [Number(r.id), r.description]));
    for (const a of answers) assert.equal(byId.get(a.id), a.description);
  });

  test('when pages are read with the before cursor while expired entries are removed, then no entry comes twice, none that stays is skipped, and the order holds', async () => {
    // the removal's old end and the reader's new end move towards each other through the same range:
    // four expired app entries for each system entry, which stays
    const inserted = 100_000;
    await insertAged('retention', { tag: 'paged', stypes: ['app', 'app', 'system', 'app', 'app'], count: inserted, ageDays: DAYS + 20 });
    const edge = new Date(Date.now() - (DAYS + 10) * DAY_MS).toISOString();
    const idsOlderThanEdge = async () =>
      new Set((await postgres.query<{ id: string }>('retention', `SELECT id FROM system_logs WHERE "timestamp" < $1`, [edge])).map((r) => Number(r.id)));
    await removalUnderWay('retention', 'paged', inserted);

    const before = await idsOlderThanEdge();
    const appLeftAtStart = (await left('retention', 'paged')).app ?? 0;
    const seen: Array<{ id: number; timestamp: string }> = [];
    let cursor: string | null = encodeCursor(edge, Number.MAX_SAFE_INTEGER);
    while (cursor) {
      const response: Response = await fetch(stack.url(`/api/logs?limit=200&before=${cursor}`), { headers: authHeaders() });
      assert.equal(response.status, 200);
      const page = (await response.json()) as { items: Array<{ id: number; timestamp: string }>; next: string | null };
      seen.push(...page.items);
      cursor = page.next;
    }
    const appLeftAtEnd = (await left('retention', 'paged')).app ?? 0;
    await waitFor('the expired "paged" entries removed', async () => !(await left('retention', 'paged')).app);
    const after = await idsOlderThanEdge();

    assert.ok(appLeftAtStart > 0 && appLeftAtEnd < appLeftAtStart, `entries were removed while the pages were read (${appLeftAtStart} → ${appLeftAtEnd})`);
    const ids = seen.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no entry twice');
    for (let i = 1; i < seen.length; i++) {
      const [a, b] = [seen[i - 1]!, seen[i]!];
      assert.ok(a.timestamp > b.timestamp || (a.timestamp === b.timestamp && a.id > b.id), `newest first at ${i}: ${JSON.stringify([a, b])}`);
    }
    const returned = new Set(ids);
    const skipped = [...after].filter((id) => before.has(id) && !returned.has(id));
    assert.deepEqual(skipped, [], 'every entry that stays was on a page');
    assert.deepEqual(ids.filter((id) => !before.has(id)), [], 'nothing but what was there');
    assert.equal((await left('retention', 'paged')).system, inserted / 5);
  });

  test('when two hosts of two instances each share the database, then one process at a time removes entries and the others skip', async () => {
    const other = await Stack.create({ instances: 2, databaseUrl: postgres.url('retention'), env: RETENTION_ENV });
    try {
      await other.start();
      const inserted = 100_000;
      const insertedAt = Date.now();
      await insertAged('retention', { tag: 'shared', stypes: ['app', 'error'], count: inserted, ageDays: DAYS + 30 });
      await allRemoved('retention', 'shared');
      const lines = await waitFor('the passes logged', () => {
        const all = retentionLines(stack, other).filter((l) => Date.parse(l.time) >= insertedAt);
        const passes = all.filter((l) => l.event === 'log_retention');
        return passes.reduce((n, l) => n + l.rows, 0) >= inserted ? all : undefined;
      });

      const passes = lines
        .filter((l) => l.event === 'log_retention')
        .map((l) => ({ pid: l.pid, from: Date.parse(l.startedAt), to: Date.parse(l.startedAt) + l.ms }))
        .sort((a, b) => a.from - b.from);
      for (let i = 1; i < passes.length; i++) {
        // startedAt and ms are both taken while the lock is held; 1 ms for their rounding
        assert.ok(passes[i]!.from >= passes[i - 1]!.to - 1, `passes overlap: ${JSON.stringify([passes[i - 1], passes[i]])}`);
      }
      // while the longest pass held the lock, other processes offered and stepped aside
      const longest = passes.reduce((a, b) => (b.to - b.from > a.to - a.from ? b : a));
      const skipped = lines.filter((l) => l.event === 'log_retention_busy' && l.pid !== longest.pid && Date.parse(l.time) > longest.from && Date.parse(l.time) < longest.to);
      assert.ok(new Set(skipped.map((l) => l.pid)).size >= 2, `at least two other processes skipped during the pass of ${longest.to - longest.from} ms (${skipped.length} skips)`);
    } finally {
      await other.stop();
    }
  });

  test('when the process running the removal is told to stop, then it stops after the batch in progress, says so, and another process removes the rest', async () => {
    const inserted = 150_000;
    await insertAged('retention', { tag: 'interrupted', stypes: ['app'], count: inserted, ageDays: DAYS + 40 });
    await removalUnderWay('retention', 'interrupted', inserted);
    const runner = await waitFor('the process holding the retention lock', async () => {
      // held on the process's liveness connection, whose backend its row in `instances` names
      const [holder] = await postgres.query<{ instance: number }>(
        'retention',
        `SELECT i.instance FROM pg_locks l JOIN instances i ON i.backend_pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2`,
        [Number(BigInt(LOCK_RETENTION) >> 32n), Number(BigInt(LOCK_RETENTION) & 0xffff_ffffn)],
      );
      return holder && (await stack.web()).get(holder.instance);
    });
    // what PM2 sends a process it stops or reloads (kill_signal); then it starts it again
    process.kill(runner.pid, 'SIGINT');
    await waitFor('the runner replaced', async () => (await stack.web()).get(Number(runner.pm2_env.NODE_APP_INSTANCE))?.pid !== runner.pid);
    await stack.waitReady(2);
    await allRemoved('retention', 'interrupted');

    const stopped = await waitFor('the stopped pass logged', () => retentionLines(stack).find((l) => l.pid === runner.pid && l.event === 'log_retention' && l.stopped));
    assert.ok(stopped.rows > 0 && stopped.rows < inserted, `${stopped.rows} removed before the stop`);
    const shutdownTrouble = stack.webLogLines().filter((l) => l['pid'] === runner.pid && Number(l['level']) >= 40);
    assert.deepEqual(shutdownTrouble, []);
  });

  test('when LOG_RETENTION_DAYS is unset, then nothing is removed, while a stack with it set removes the same entries', async () => {
    const off = await Stack.create({ instances: 1, databaseUrl: postgres.url('retention_off'), env: { LOG_RETENTION_INTERVAL_MS: '300', LOG_LEVEL: 'debug' } });
    try {
      await off.start();
      await waitFor('the instance says retention is off', () => off.webLogLines().some((l) => l['event'] === 'log_retention_off'));
      const stypes: Stype[] = ['app', 'error', 'system', 'security'];
      await insertAged('retention_off', { tag: 'kept-forever', stypes, count: 400, ageDays: 400 });
      await insertAged('retention', { tag: 'control', stypes, count: 400, ageDays: 400 });
      await allRemoved('retention', 'control');
      assert.deepEqual(await left('retention_off', 'kept-forever'), { app: 100, error: 100, system: 100, security: 100 });
      assert.deepEqual(retentionLines(off).map((l) => l.event), ['log_retention_off']);
    } finally {
      await off.stop();
    }
  });

  test('when the passes above are over, then the retention logged no warning and nothing at error level', () => {
    const bad = stack.webLogLines().filter((l) => Number(l['level']) >= 50 || (String(l['event']).startsWith('log_retention') && Number(l['level']) >= 40));
    assert.deepEqual(bad, []);
  });
});
