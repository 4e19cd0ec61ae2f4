import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { findNginx } from '../src/ops/nginx.js';
import { STATEMENT_TIMEOUT_MS } from '../src/timeouts.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { seriesValue } from './support/scraper.js';
import { authHeaders, Stack } from './support/stack.js';
import { percentile, startTraffic, type Ack, type Sample } from './support/traffic.js';
import { waitFor } from './support/wait.js';

// Issue #13, "stuck queries degrade, nothing restarts": system_logs locked against writes (what an
// operator's LOCK TABLE, a long migration or a bulk job does) for 10 s, under steady traffic through
// nginx. Writes get a quick 503 and lose nothing; reads, the pool, the workers and the gate carry on.

const hasNginx = findNginx() !== undefined;
const LOCK_SECONDS = 10;
const GATE_CLOSED = 'database unavailable; answering 503 until it is back';
/** What docs/design.md ("A locked table") gives operators to find who holds the lock. */
const LOCK_HOLDERS = `SELECT pid, state, now() - xact_start AS held, query FROM pg_stat_activity
  WHERE pid IN (SELECT unnest(pg_blocking_pids(pid)) FROM pg_stat_activity WHERE application_name LIKE 'sitelog-web-%')`;

type WebState = Map<number, { pid: number; restarts: number }>;
type Answer = { status: number; ms: number; code: string | undefined; retryAfter: string | null; replayed: boolean };
type Scrape = { at: number; waiting: number; inUse: number };

/** What one run of the scenario saw, for the tests below to judge. */
type Outcome = {
  lockedAt: number;
  unlockedAt: number;
  traffic: { samples: Sample[]; acks: Ack[]; mismatches: string[] };
  reads: Sample[];
  probe: { key: string; duringLock: Answer; afterUnlock: Answer; again: Answer };
  scrapes: Scrape[];
  /** The pids LOCK_HOLDERS named during the lock, and the locker's. */
  holders: { named: number[]; locker: number };
  /** When the traffic stopped, and when the pool's waiting count was 0 after it. */
  trafficStoppedAt: number;
  waitingZeroAt: number;
  gateRefusals: number | undefined;
  webBefore: WebState;
  webAfter: WebState;
};

let postgres: TestPostgres;
let stack: Stack;
let outcome: Outcome;

async function webState(): Promise<WebState> {
  const web = await stack.web();
  return new Map([...web].map(([id, p]) => [id, { pid: p.pid, restarts: p.pm2_env.restart_time }]));
}

async function postEntry(key: string): Promise<Answer> {
  const started = performance.now();
  const response = await fetch(stack.url('/api/logs'), {
    method: 'POST',
    headers: authHeaders({ 'content-type': 'application/json', 'idempotency-key': key }),
    body: JSON.stringify({ stype: 'app', description: `written while locked ${key}` }),
  });
  const body = (await response.json()) as { error?: { code: string } };
  return {
    status: response.status,
    ms: performance.now() - started,
    code: body.error?.code,
    retryAfter: response.headers.get('retry-after'),
    replayed: response.headers.get('idempotent-replayed') === 'true',
  };
}

async function scrape(): Promise<{ text: string; at: number }> {
  const response = await fetch(stack.url('/metrics'));
  assert.equal(response.status, 200);
  return { text: await response.text(), at: Date.now() };
}

async function poolScrape(): Promise<Scrape> {
  const { text, at } = await scrape();
  return { at, waiting: seriesValue(text, 'sitelog_db_pool_waiting', {}) ?? Number.NaN, inUse: seriesValue(text, 'sitelog_db_pool_in_use', {}) ?? Number.NaN };
}

/** The pool's gauges, scraped through nginx every 250 ms (as Prometheus would, more often) until stopped. */
function startPoolScrapes() {
  const scrapes: Scrape[] = [];
  let stopped = false;
  const running = (async () => {
    while (!stopped) {
      scrapes.push(await poolScrape());
      await sleep(250);
    }
  })();
  return {
    scrapes,
    async stop() {
      stopped = true;
      await running;
      return scrapes;
    },
  };
}

/**
 * Readers only (an entry by id, a page), so reads go on while every traffic client is stuck
 * retrying its refused write: startTraffic's clients stop reading during the lock.
 */
function startReaders(base: string, ids: number[], clients: number) {
  const samples: Sample[] = [];
  let stopped = false;
  const reader = async (index: number) => {
    for (let i = 0; !stopped; i += 1) {
      const list = i % 3 === 2;
      const url = list ? `${base}/api/logs?limit=20` : `${base}/api/logs/${ids[(index + i) % ids.length]}`;
      const started = performance.now();
      let status = 0;
      try {
        const response = await fetch(url, { headers: authHeaders(), signal: AbortSignal.timeout(30_000) });
        status = response.status;
        await response.arrayBuffer();
      } catch {
        // no answer: status stays 0
      }
      samples.push({ at: Date.now(), ms: performance.now() - started, status, kind: list ? 'list' : 'read' });
    }
  };
  const running = Promise.all(Array.from({ length: clients }, (_, i) => reader(i)));
  return {
    samples,
    async stop() {
      stopped = true;
      await running;
      return samples;
    },
  };
}

/**
 * The scenario: traffic flowing, then system_logs locked IN EXCLUSIVE MODE (writes blocked, reads
 * allowed) from a client of the test's own for 10 s, then traffic on until writes flow again.
 */
async function lockUnderTraffic(): Promise<Outcome> {
  const traffic = startTraffic(stack.url(''), { connections: 48, maxMs: 120_000 });
  let readers: ReturnType<typeof startReaders> | undefined;
  let pool: ReturnType<typeof startPoolScrapes> | undefined;
  const locker = new pg.Client({ connectionString: postgres.url('sitelog'), application_name: 'stuck-queries-test' });
  try {
    await waitFor('traffic flowing', () => traffic.acks.length >= 50, { timeoutMs: 30_000 });
    readers = startReaders(stack.url(''), traffic.acks.slice(0, 50).map((a) => a.id), 8);
    const scraping = startPoolScrapes();
    pool = scraping;
    // two seconds of the gauges under the traffic alone, to compare with
    await waitFor('scrapes before the lock', () => scraping.scrapes.length >= 8);
    const webBefore = await webState();

    await locker.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE system_logs IN EXCLUSIVE MODE');
    const lockedAt = Date.now();
    const holding = locker.query(`SELECT pg_sleep(${LOCK_SECONDS})`).then(async () => {
      await locker.query('COMMIT');
      return Date.now();
    });
    const key = `stuck-probe-${crypto.randomBytes(4).toString('hex')}`;
    const lockerPid = (locker as unknown as { processID: number }).processID; // pg sets it, its types do not say so
    const holdersNamed = waitFor('a write waiting on the lock, and its holder', async () => {
      const named = (await postgres.query<{ pid: number }>('sitelog', LOCK_HOLDERS)).map((r) => r.pid);
      return named.length > 0 && named;
    });
    const [duringLock, named, unlockedAt] = await Promise.all([postEntry(key), holdersNamed, holding]);

    const afterUnlock = await postEntry(key);
    const again = await postEntry(key);
    const writesAfter = () => traffic.samples.filter((s) => s.kind === 'write' && s.at - s.ms > unlockedAt).length;
    const scrapesAfter = () => scraping.scrapes.filter((s) => s.at > unlockedAt).length;
    await waitFor('writes sent and scrapes after the unlock', () => writesAfter() >= 100 && scrapesAfter() >= 8, { timeoutMs: 30_000 });

    // Under 56 clients the pool's 20 connections are often all busy, lock or not, so "nothing
    // waits" is judged once the load stops: a write or a slot left waiting on the lock would show.
    const reads = await readers.stop();
    const finished = await traffic.stop();
    const trafficStoppedAt = Date.now();
    const waitingZeroAt = (await waitFor('the pool waiting for nothing', async () => (await poolScrape()).waiting === 0 && { at: Date.now() }, { timeoutMs: 10_000 })).at;
    const scrapes = await scraping.stop();
    const gateRefusals = seriesValue((await scrape()).text, 'sitelog_db_gate_refusals_total', {});
    return {
      lockedAt,
      unlockedAt,
      traffic: finished,
      reads,
      probe: { key, duringLock, afterUnlock, again },
      scrapes,
      holders: { named, locker: lockerPid },
      trafficStoppedAt,
      waitingZeroAt,
      gateRefusals,
      webBefore,
      webAfter: await webState(),
    };
  } finally {
    await pool?.stop();
    await readers?.stop();
    await traffic.stop();
    await locker.end().catch(() => undefined);
  }
}

const during = (s: Sample) => s.at > outcome.lockedAt && s.at - s.ms < outcome.unlockedAt;
const ms = (n: number) => `${Math.round(n)} ms`;

describe('when system_logs is locked IN EXCLUSIVE MODE for 10 s under traffic through nginx', { skip: !hasNginx && 'nginx is not installed', timeout: 240_000 }, () => {
  before(async () => {
    postgres = await startPostgres();
    stack = await Stack.create({ instances: 2, proxy: true, databaseUrl: postgres.url('sitelog') });
    await stack.start();
    outcome = await lockUnderTraffic();
  });
  after(async () => {
    await stack?.stop();
    await postgres?.stop();
  });

  test('then every read answers 200, while the lock is held too', (t) => {
    const reads = [...outcome.reads, ...outcome.traffic.samples.filter((s) => s.kind !== 'write')];
    const whileLocked = reads.filter(during);
    const failed = reads.filter((s) => s.status !== 200);
    const times = whileLocked.map((s) => s.ms);
    t.diagnostic(`${whileLocked.length} reads during the lock, ${failed.length} not 200; p50 ${ms(percentile(times, 50))}, p99 ${ms(percentile(times, 99))}, max ${ms(Math.max(...times))}`);
    assert.deepEqual(failed.slice(0, 5), []);
    assert.ok(whileLocked.length >= 100, `reads while locked: ${whileLocked.length}`);
    assert.deepEqual(outcome.traffic.mismatches.slice(0, 5), [], 'every answer matches its request');
  });

  test('then writes answer 503 SITELOG_DB_BUSY with Retry-After, each within the statement budget', (t) => {
    const { duringLock } = outcome.probe;
    const writes = outcome.traffic.samples.filter((s) => s.kind === 'write');
    const refused = writes.filter((s) => s.status !== 201);
    const times = refused.map((s) => s.ms);
    const codes = [...new Set(refused.map((s) => `${s.status} ${s.code ?? ''}`))].join(', ');
    t.diagnostic(`${refused.length} writes refused (${codes}): p50 ${ms(percentile(times, 50))}, p99 ${ms(percentile(times, 99))}, max ${ms(Math.max(...times))}; the probe ${duringLock.status} ${duringLock.code ?? ''} after ${ms(duringLock.ms)}`);
    assert.equal(duringLock.status, 503);
    assert.equal(duringLock.code, 'SITELOG_DB_BUSY');
    assert.equal(duringLock.retryAfter, '1');
    assert.ok(duringLock.ms <= STATEMENT_TIMEOUT_MS, `the probe write answered after ${ms(duringLock.ms)}`);
    assert.ok(refused.length > 0, 'the lock refused writes');
    assert.deepEqual(refused.filter((s) => s.status !== 503 || s.code !== 'SITELOG_DB_BUSY').slice(0, 5), [], 'every refusal is 503 SITELOG_DB_BUSY');
    assert.deepEqual(refused.filter((s) => s.ms > STATEMENT_TIMEOUT_MS).slice(0, 5), [], `every refusal within ${STATEMENT_TIMEOUT_MS} ms`);
  });

  test('then a write refused during the lock and sent again with its Idempotency-Key after the unlock is stored once', async () => {
    const { key, afterUnlock, again } = outcome.probe;
    assert.equal(afterUnlock.status, 201);
    assert.equal(afterUnlock.replayed, false, 'stored by the retry, not before');
    assert.equal(again.status, 201);
    assert.equal(again.replayed, true);
    const rows = await postgres.query<{ n: number }>('sitelog', 'SELECT count(*)::int AS n FROM system_logs WHERE request_id = $1', [key]);
    assert.equal(rows[0]?.n, 1);
  });

  test('then every write the traffic had acknowledged is stored exactly once', async () => {
    const { acks } = outcome.traffic;
    const rows = await postgres.query<{ request_id: string; n: number; id: string }>(
      'sitelog',
      'SELECT request_id, count(*)::int AS n, min(id) AS id FROM system_logs WHERE request_id = ANY($1) GROUP BY request_id',
      [acks.map((a) => a.key)],
    );
    const stored = new Map(rows.map((r) => [r.request_id, r]));
    const wrong = acks.filter((a) => stored.get(a.key)?.n !== 1 || Number(stored.get(a.key)?.id) !== a.id);
    assert.deepEqual(wrong.slice(0, 5), []);
    assert.ok(acks.length > 200, `acknowledged writes: ${acks.length}`);
  });

  test("then the pool's waiting count returns to 0 after the unlock", (t) => {
    const { scrapes, lockedAt, unlockedAt, trafficStoppedAt, waitingZeroAt } = outcome;
    const phase = (from: number, to: number) => scrapes.filter((s) => s.at > from && s.at <= to).map((s) => s.waiting);
    const [before, locked, after] = [phase(0, lockedAt), phase(lockedAt, unlockedAt), phase(unlockedAt, trafficStoppedAt)];
    const firstZero = scrapes.find((s) => s.at > unlockedAt && s.waiting === 0)?.at;
    t.diagnostic(
      `pool waiting (host, 2 instances), median/max: before the lock ${percentile(before, 50)}/${Math.max(...before)}, during it ${percentile(locked, 50)}/${Math.max(...locked)}, ` +
        `after it under the same traffic ${percentile(after, 50)}/${Math.max(...after)}, first 0 ${firstZero === undefined ? 'not seen' : ms(firstZero - unlockedAt)} after the unlock; ` +
        `in use max ${Math.max(...scrapes.map((s) => s.inUse))}; 0 ${ms(waitingZeroAt - trafficStoppedAt)} after the traffic stopped`,
    );
    assert.ok(locked.length >= 10 && locked.every(Number.isFinite), `the gauge during the lock: ${locked.length} scrapes`);
    assert.ok(Math.max(...locked) > 0, 'writes waited during the lock');
    assert.ok(waitingZeroAt - trafficStoppedAt < 2_000, `0 within 2 s of the traffic's end (${ms(waitingZeroAt - trafficStoppedAt)})`);
  });

  test('then the query operators are given names the session holding the lock, and only it', () => {
    assert.deepEqual([...new Set(outcome.holders.named)], [outcome.holders.locker]);
  });

  test('then no worker restarts and the database gate never closes', () => {
    assert.deepEqual(outcome.webAfter, outcome.webBefore, 'same pids, same restart counts');
    assert.equal(outcome.webAfter.size, 2);
    assert.equal(outcome.gateRefusals, 0, 'the gate refused nothing');
    assert.deepEqual(stack.webLogLines().filter((line) => line['msg'] === GATE_CLOSED).slice(0, 3), [], 'the gate never closed');
  });

  test('then writes sent after the unlock succeed at once', (t) => {
    const after = outcome.traffic.samples.filter((s) => s.kind === 'write' && s.at - s.ms > outcome.unlockedAt);
    assert.deepEqual(after.filter((s) => s.status !== 201).slice(0, 5), []);
    const first = Math.min(...after.map((s) => s.at)) - outcome.unlockedAt;
    t.diagnostic(`${after.length} writes sent after the unlock, all 201, the first answered ${ms(first)} after it; p99 ${ms(percentile(after.map((s) => s.ms), 99))}`);
  });
});
