import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import pg from 'pg';
import { LOCK_RETENTION } from '../src/db/locks.js';
import { DELETE_EXPIRED } from '../src/logs/queries.js';
import { BATCH_ROWS } from '../src/logs/retention.js';
import { pm2 } from '../src/ops/pm2.js';
import type { TestPostgres } from '../test/support/postgres.js';
import type { Stack } from '../test/support/stack.js';
import { waitFor } from '../test/support/wait.js';
import { ENDPOINTS, endpointRequest, type Endpoint } from './endpoints.js';

// The bench's retention phase (issue #13: "the cost at 10M rows"): with a large share of the log
// older than LOG_RETENTION_DAYS, how fast the job removes it, and what the same load through nginx
// gets during the removal against just before it, in the same run and on the same processes.

const DAYS = 30;
/** split over the three endpoints, loaded at once: every window sees the same moment of the removal */
const CONNECTIONS = 66;

type Load = { endpoint: string; rps: number; p99: number; non2xx: number; errors: number };
export type RetentionResult = {
  date: string;
  seconds: number;
  rows: number;
  expired: number;
  days: number;
  run: { rows: number; batches: number; ms: number; rowsPerSecond: number };
  /** rows removed per second while the load ran, and while nothing else did */
  rowsPerSecondUnderLoad: number;
  loadCoveredByRemoval: boolean;
  before: Load[];
  during: Array<Load & { rpsRatio: number; p99Ratio: number }>;
  /** the same load once the run is over: how far the machine drifted (a shared machine does) */
  after: Load[];
  plan: string[];
};

async function load(url: string, endpoint: Endpoint, id: string, seconds: number): Promise<Load> {
  const r = await autocannon({ ...endpointRequest(url, endpoint, id), connections: CONNECTIONS / ENDPOINTS.length, duration: seconds });
  return { endpoint, rps: r.requests.average, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors };
}

/** Entries removed from system_logs so far (PostgreSQL's statistics: cheap, about a second behind). */
async function removedSoFar(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ n: string }>(`SELECT pg_stat_get_tuples_deleted('system_logs'::regclass) + pg_stat_get_xact_tuples_deleted('system_logs'::regclass) AS n`);
  return Number(rows[0]!.n);
}

/** Whether a web process holds the retention lock: a run is under way. */
async function removing(db: pg.Client): Promise<boolean> {
  const key = BigInt(LOCK_RETENTION);
  const { rows } = await db.query(
    `SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1 AND objid = $2`,
    [Number(key >> 32n), Number(key & 0xffff_ffffn)],
  );
  return rows.length > 0;
}

type RunLine = { event: string; time: string; rows: number; batches: number; ms: number; startedAt: string };

/** What LOG_RETENTION_DAYS=30 removes from this table (app and error older than 30 days, the rest older than 365). */
async function expiredNow(db: pg.Client): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `SELECT count(*) AS n FROM system_logs WHERE ("timestamp" < now() - interval '${DAYS} days' AND stype IN ('app', 'error')) OR "timestamp" < now() - interval '365 days'`,
  );
  return Number(rows[0]!.n);
}

/** The plan of one batch, executed and rolled back. */
async function batchPlan(db: pg.Client): Promise<string[]> {
  await db.query('BEGIN');
  try {
    const { rows } = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${DELETE_EXPIRED.text}`, ['app', DAYS, '-infinity', BATCH_ROWS]);
    return rows.map((r) => r['QUERY PLAN']);
  } finally {
    await db.query('ROLLBACK');
  }
}

/**
 * The phase: the web instances started again with LOG_RETENTION_DAYS, offering every second, while
 * the bench itself holds the retention lock, so every offer steps aside; a warm-up and the baseline
 * load; the lock let go, the same load once the removal is under way; the run's own figures from its
 * log line; the same load again once it is over, to show how much the machine drifted meanwhile.
 */
export async function retentionPhase(opts: { stack: Stack; postgres: TestPostgres; url: string; seconds: number; log: (line: string) => void }): Promise<RetentionResult> {
  const { stack, postgres, url, seconds, log } = opts;
  const db = new pg.Client({ connectionString: postgres.url('sitelog') });
  await db.connect();
  try {
    const [{ rows: total }] = (await db.query<{ rows: string }>('SELECT count(*) AS rows FROM system_logs')).rows as [{ rows: string }];
    const expired = await expiredNow(db);
    // Executed and rolled back, before the phase: the 5,000 rows it touched are back by the time the job starts.
    const plan = await batchPlan(db);
    // the newest entry: one the removal keeps
    const [{ id }] = (await db.query<{ id: string }>('SELECT id::text FROM system_logs ORDER BY "timestamp" DESC LIMIT 1')).rows as [{ id: string }];
    log(`retention: ${total} rows, ${expired} older than the retention (${DAYS} days)`);

    await db.query('SELECT pg_advisory_lock($1)', [LOCK_RETENTION]);
    const env = { ...stack.env, LOG_RETENTION_DAYS: String(DAYS), LOG_RETENTION_INTERVAL_MS: '1000' };
    // started again rather than reloaded: a reload keeps the environment the apps were started with
    await pm2(['delete', 'web'], env);
    await pm2(['start', 'ecosystem.config.js', '--only', 'web'], env);
    await stack.waitReady(2);
    const reloaded = Date.now();
    const runs = () => (stack.webLogLines() as unknown as RunLine[]).filter((l) => l.event === 'log_retention' && Date.parse(l.time) > reloaded);
    const on = (stack.webLogLines() as unknown as RunLine[]).filter((l) => l.event === 'log_retention_on');
    if (on.length < 2) throw new Error(`retention: ${on.length} of 2 web instances started with LOG_RETENTION_DAYS`);

    const measure = async (when: string) => {
      const loads = await Promise.all(ENDPOINTS.map((endpoint) => load(url, endpoint, id, seconds)));
      for (const l of loads) log(`retention, ${when}: ${l.endpoint.padEnd(24)} ${Math.round(l.rps)} req/s p99 ${l.p99} ms non2xx ${l.non2xx}`);
      return loads;
    };
    // warm-up of the new processes (JIT, pools, nginx keepalive): three seconds of the same load
    await Promise.all(ENDPOINTS.map((endpoint) => load(url, endpoint, id, 3)));
    const before = await measure('before');
    if (runs().length > 0) throw new Error('retention: a removal ran while the bench held the lock');

    await db.query('SELECT pg_advisory_unlock($1)', [LOCK_RETENTION]);
    await waitFor('the removal under way', () => removing(db), { timeoutMs: 30_000, everyMs: 100 });
    const loadStarted = { at: performance.now(), removed: await removedSoFar(db) };
    const during = (await measure('during')).map((d) => {
      const b = before.find((x) => x.endpoint === d.endpoint)!;
      return { ...d, rpsRatio: d.rps / b.rps, p99Ratio: d.p99 / b.p99 };
    });
    const loadEnded = { at: performance.now(), wall: Date.now() };
    // the statistics run about a second behind the removal: the count a second later is the one at the end of the load
    await sleep(1_100);
    const removedUnderLoad = (await removedSoFar(db)) - loadStarted.removed;
    const runLine = await waitFor('the retention run logged', () => runs()[0], { timeoutMs: 3_600_000, everyMs: 1_000 });
    const loadCoveredByRemoval = Date.parse(runLine.startedAt) + runLine.ms >= loadEnded.wall;
    const after = await measure('after');
    const result: RetentionResult = {
      date: new Date().toISOString(),
      seconds,
      rows: Number(total),
      expired,
      days: DAYS,
      run: { rows: runLine.rows, batches: runLine.batches, ms: runLine.ms, rowsPerSecond: Math.round(runLine.rows / (runLine.ms / 1000)) },
      rowsPerSecondUnderLoad: Math.round(removedUnderLoad / ((loadEnded.at - loadStarted.at) / 1000)),
      loadCoveredByRemoval,
      before,
      during,
      after,
      plan,
    };
    log(`retention: removed ${result.run.rows} rows in ${result.run.batches} batches, ${(result.run.ms / 1000).toFixed(1)} s: ${result.run.rowsPerSecond} rows/s (${result.rowsPerSecondUnderLoad} rows/s under load)`);
    return result;
  } finally {
    await db.end();
  }
}

/** bench/results/retention/: results.md and results.json of this run; every run kept in runs/. */
export function writeRetentionResults(out: string, r: RetentionResult): string {
  const dir = path.join(out, 'retention');
  fs.mkdirSync(path.join(dir, 'runs'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'results.json'), `${JSON.stringify(r, null, 2)}\n`);
  fs.writeFileSync(path.join(dir, 'runs', `${r.date.replace(/[:.]/g, '-')}.json`), `${JSON.stringify(r)}\n`);
  const fence = '```';
  const md = [
    `# sitelog bench: log retention (${r.date})`,
    '',
    `${r.rows.toLocaleString('en')} rows over the past year, ${r.expired.toLocaleString('en')} of them (${Math.round((100 * r.expired) / r.rows)} %) older than LOG_RETENTION_DAYS=${r.days}. Load through nginx: the three endpoints below at once, ${CONNECTIONS / ENDPOINTS.length} connections each, ${r.seconds} s a window, 2 web instances, everything on this machine.`,
    '',
    `- removed: ${r.run.rows.toLocaleString('en')} rows in ${r.run.batches} batches, ${(r.run.ms / 1000).toFixed(1)} s: **${r.run.rowsPerSecond.toLocaleString('en')} rows/s** over the whole run, ${r.rowsPerSecondUnderLoad.toLocaleString('en')} rows/s while the load below ran`,
    `- the removal ${r.loadCoveredByRemoval ? 'ran through the whole load window' : 'ended before the load window did: the "during" figures are partly without it'}`,
    '',
    '| endpoint | req/s before | req/s during | × | p99 before | p99 during | × | non-2xx during | req/s after | p99 after |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...r.during.map((d) => {
      const b = r.before.find((x) => x.endpoint === d.endpoint)!;
      const a = r.after.find((x) => x.endpoint === d.endpoint)!;
      return `| ${d.endpoint} | ${Math.round(b.rps)} | ${Math.round(d.rps)} | ${d.rpsRatio.toFixed(2)} | ${b.p99} ms | ${d.p99} ms | ${d.p99Ratio.toFixed(2)} | ${d.non2xx} | ${Math.round(a.rps)} | ${a.p99} ms |`;
    }),
    '',
    '"after": the same load once the run is over (the instances still offer every second, finding nothing), to tell the removal\'s cost from the drift of a shared machine.',
    '',
    'One batch (the first), executed and rolled back:',
    '',
    `${fence}\n${r.plan.join('\n')}\n${fence}`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'results.md'), md);
  return md;
}
