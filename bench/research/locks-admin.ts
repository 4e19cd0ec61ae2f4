/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument -- research scripts read untyped rows of pg_locks, SHOW …, pg_stat_replication */
// Questions 2 and 3 of docs/scaling-research.md: advisory locks through PgBouncer 1.18 in transaction
// mode, its admin console (SHOW POOLS / DATABASES / CONFIG), and what a client sees while PostgreSQL or
// PgBouncer is away. Run: node --import tsx bench/research/locks-admin.ts
import pg from 'pg';
import { cleanup, newLab, q, startBouncer, startPrimary } from './lab.js';

const out = (label: string, value: unknown) => console.log(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
const errOf = (e: unknown) => `${(e as { code?: string }).code ?? '-'} ${(e as Error).message}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const connect = async (url: string) => {
  const c = new pg.Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  return c;
};
const LIVE = `hashtext('sitelog:live:lab'), 4242`;

async function main(): Promise<void> {
  const lab = newLab();
  try {
    const primary = await startPrimary(lab);
    await q(primary.url(), 'CREATE DATABASE sitelog');
    const direct = primary.url('sitelog');
    const bouncer = await startBouncer(lab, primary, { default_pool_size: 2 });
    const held = async () => q(direct, `SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242`);

    // 1. a liveness lock (session) taken through PgBouncer, then the client leaves
    const a = await connect(bouncer.url());
    const [taken] = (await a.query(`SELECT pg_advisory_lock(${LIVE}), pg_backend_pid() AS pid`)).rows;
    out('liveness lock via pgbouncer, taken on server pid', taken.pid);
    out('pg_locks right after', await held());
    await a.end();
    await sleep(300);
    out('pg_locks 300 ms after that client disconnected from pgbouncer', await held());
    const c = await connect(bouncer.url());
    out('another client: pg_try_advisory_lock of the same key', (await c.query(`SELECT pg_try_advisory_lock(${LIVE}) AS got, pg_backend_pid() AS pid`)).rows[0]);
    await c.end();

    // 2. a migration-style session lock, unlocked by the same client on another server connection
    const m = await connect(bouncer.url());
    const notices: string[] = [];
    m.on('notice', (n) => notices.push(`${n.severity} ${n.message}`));
    const lockPid = (await m.query('SELECT pg_advisory_lock(1, 1), pg_backend_pid() AS pid')).rows[0].pid;
    const x = await connect(bouncer.url());
    await x.query('BEGIN');
    const xPid = (await x.query('SELECT pg_backend_pid() AS pid')).rows[0].pid; // holds a server connection
    const unlock = (await m.query('SELECT pg_advisory_unlock(1, 1) AS released, pg_backend_pid() AS pid')).rows[0];
    await sleep(50);
    out('session lock then unlock by one client', { lockedOn: lockPid, otherClientInTransactionOn: xPid, unlock, notices });
    await x.query('COMMIT');
    await Promise.all([m.end(), x.end()]);
    out('advisory locks still held after both clients left', await q(direct, `SELECT classid, objid, objsubid, pid FROM pg_locks WHERE locktype = 'advisory'`));

    // 3. the login throttle's transaction lock (src/console/queries.ts) through PgBouncer
    const LOGIN = `SELECT pg_advisory_xact_lock(hashtext('sitelog:login:' || '203.0.113.7'))::text AS locked`;
    const t1 = await connect(bouncer.url());
    const t2 = await connect(bouncer.url());
    await t1.query('BEGIN');
    await t1.query({ text: LOGIN, values: [] });
    await t2.query('BEGIN');
    const t = performance.now();
    const waited = t2.query({ text: LOGIN, values: [] }).then(() => Math.round(performance.now() - t));
    await sleep(300);
    await t1.query('COMMIT');
    const waitedMs = await waited;
    const during = await q(direct, `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = (hashtext('sitelog:login:203.0.113.7'))::oid`);
    await t2.query('COMMIT');
    const after = await q(direct, `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = (hashtext('sitelog:login:203.0.113.7'))::oid`);
    out('pg_advisory_xact_lock via pgbouncer: second transaction waited (first committed after 300 ms)', { waitedMs, heldWhileSecondOpen: during[0], heldAfterCommit: after[0] });
    await Promise.all([t1.end(), t2.end()]);
    bouncer.stop();

    // 4. the admin console under load: 12 clients in 300 ms transactions, a pool of 4, max_db_connections 6
    const admin = await startBouncer(lab, primary, { default_pool_size: 4, max_db_connections: 6, reserve_pool_size: 1, reserve_pool_timeout: 1, max_client_conn: 100 });
    const load = await Promise.all(Array.from({ length: 12 }, () => connect(admin.url())));
    const busy = load.map(async (cl) => {
      for (let i = 0; i < 4; i++) {
        await cl.query('BEGIN');
        await cl.query('SELECT pg_sleep(0.3)');
        await cl.query('COMMIT');
      }
    });
    await sleep(1_500);
    const console_ = await connect(admin.admin());
    for (const cmd of ['SHOW POOLS', 'SHOW DATABASES', 'SHOW LISTS']) {
      const r = await console_.query(cmd);
      out(`${cmd} columns`, r.fields.map((f) => f.name).join(', '));
      out(`${cmd} rows`, cmd === 'SHOW LISTS' ? r.rows : r.rows.filter((row) => row.database === 'sitelog'));
    }
    const cfg = await console_.query('SHOW CONFIG');
    out('SHOW CONFIG columns', cfg.fields.map((f) => f.name).join(', '));
    const keys = ['pool_mode', 'max_client_conn', 'default_pool_size', 'min_pool_size', 'reserve_pool_size', 'max_db_connections', 'max_user_connections', 'server_login_retry', 'query_wait_timeout', 'query_timeout', 'idle_transaction_timeout', 'server_reset_query', 'server_reset_query_always', 'ignore_startup_parameters', 'server_lifetime', 'server_idle_timeout'];
    out('SHOW CONFIG rows', cfg.rows.filter((row) => keys.includes(row.key)).map((row) => `${row.key}=${row.value}${row.value === row.default ? '' : ` (default ${row.default})`}`));
    for (const cmd of ['SHOW CLIENTS', 'SHOW SERVERS', 'SHOW STATS']) out(`${cmd} columns`, (await console_.query(cmd)).fields.map((f) => f.name).join(', '));
    out('on PostgreSQL meanwhile: connections from pgbouncer', (await q(primary.url(), `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = 'sitelog'`))[0]);
    try {
      await console_.query({ text: 'SHOW POOLS', values: [] });
    } catch (e) {
      out('admin console with an extended-protocol query', errOf(e));
    }
    await Promise.all(busy);
    await Promise.all(load.map((cl) => cl.end()));
    await console_.end();
    admin.stop();

    // 5. PostgreSQL away behind PgBouncer: defaults against short retry/wait settings
    for (const extra of [{}, { server_login_retry: 1, query_wait_timeout: 2 }] as Array<Record<string, number>>) {
      const b = await startBouncer(lab, primary, extra);
      const warm = await connect(b.url());
      await warm.query('SELECT 1');
      primary.stop('fast');
      const tries: string[] = [];
      for (const [label, client] of [['connected client', warm], ['new client', undefined]] as const) {
        const t0 = performance.now();
        try {
          const cl = client ?? new pg.Client({ connectionString: b.url(), connectionTimeoutMillis: 6_000, query_timeout: 6_000 });
          cl.on('error', () => undefined);
          if (!client) await cl.connect();
          await cl.query({ text: 'SELECT 1', query_timeout: 6_000 } as pg.QueryConfig);
          tries.push(`${label}: answered?!`);
          if (!client) await cl.end();
        } catch (e) {
          tries.push(`${label}: ${errOf(e)} after ${Math.round(performance.now() - t0)} ms`);
        }
      }
      // back: how long until a query through PgBouncer succeeds again, after a 3 s outage
      await sleep(1_500);
      primary.start();
      const t1s = performance.now();
      let backMs = -1;
      while (performance.now() - t1s < 20_000) {
        try {
          await q(b.url(), 'SELECT 1');
          backMs = Math.round(performance.now() - t1s);
          break;
        } catch {
          await sleep(100);
        }
      }
      out(`PostgreSQL stopped behind pgbouncer ${JSON.stringify(extra)}`, { tries, backAfterPgStartedMs: backMs });
      await warm.end().catch(() => undefined);
      b.stop();
    }
    // 6. PgBouncer itself restarted under a connected client
    const b = await startBouncer(lab, primary);
    const cl = await connect(b.url());
    b.stop();
    const t0 = performance.now();
    try {
      await cl.query('SELECT 1');
    } catch (e) {
      out('PgBouncer stopped: a connected client\'s next query', `${errOf(e)} after ${Math.round(performance.now() - t0)} ms`);
    }
    const n = new pg.Client({ connectionString: b.url() });
    const t2s = performance.now();
    await n.connect().catch((e) => out('PgBouncer stopped: a new connection', `${errOf(e)} after ${Math.round(performance.now() - t2s)} ms`));
  } finally {
    cleanup(lab);
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
