/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access -- research scripts read untyped rows of pg_locks, SHOW …, pg_stat_replication */
// Questions 4 and 5 of docs/scaling-research.md: a streaming replica made with pg_basebackup, its lag
// read two ways, what node-postgres sees when it stops or hangs, and Sequelize's read replication.
// Run: node --import tsx bench/research/replica.ts
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { QueryTypes, Sequelize } from 'sequelize';
import { cleanup, makeSitelogDatabase, newLab, q, startPrimary, startReplica } from './lab.js';

const out = (label: string, value: unknown) => console.log(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
const errOf = (e: unknown) => `${(e as { name?: string }).name} ${(e as { code?: string }).code ?? (e as { parent?: { code?: string } }).parent?.code ?? '-'} ${(e as Error).message}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const lab = newLab();
  let stopped: number | undefined;
  try {
    const primary = await startPrimary(lab);
    await makeSitelogDatabase(primary, 20_000);
    out('primary settings', (await q(primary.url(), `SELECT name, setting FROM pg_settings WHERE name IN ('wal_level','max_wal_senders','hot_standby','max_replication_slots') ORDER BY 1`)).map((r) => `${String(r['name'])}=${String(r['setting'])}`));
    out('primary size', (await q(primary.url(), `SELECT pg_size_pretty(sum(pg_database_size(datname))) AS s FROM pg_database`))[0]);
    const { replica, basebackupSeconds, startSeconds } = await startReplica(lab, primary);
    out('pg_basebackup -R -X stream -c fast, then pg_ctl start', { basebackupSeconds: basebackupSeconds.toFixed(2), startSeconds: startSeconds.toFixed(2) });
    out('replica postgresql.auto.conf', fs.readFileSync(path.join(replica.data, 'postgresql.auto.conf'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#')));
    out('replica standby.signal exists', fs.existsSync(path.join(replica.data, 'standby.signal')));
    out('replica', (await q(replica.url('sitelog'), 'SELECT pg_is_in_recovery() AS recovery, (SELECT count(*) FROM system_logs)::int AS rows'))[0]);

    // lag, both ways, idle and during a write burst
    const PRIMARY_LAG = `SELECT application_name, state, sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS behind_bytes, replay_lag FROM pg_stat_replication`;
    const REPLICA_LAG = `SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS unreplayed_bytes,
      extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_last_replayed_xact_s,
      CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::float8 AS lag_s`;
    await sleep(2_000);
    out('idle 2 s: on the primary', (await q(primary.url(), PRIMARY_LAG))[0]);
    out('idle 2 s: on the replica', (await q(replica.url(), REPLICA_LAG))[0]);
    const p = new pg.Client({ connectionString: primary.url('sitelog') });
    const r = new pg.Client({ connectionString: replica.url('sitelog') });
    r.on('error', () => undefined); // it outlives the replica's stop below
    await Promise.all([p.connect(), r.connect()]);
    let maxBytes = 0;
    let maxLag = 0;
    let samples = 0;
    let bursting = true;
    // 8 writers, each 400 single-row transactions of 2 KB, beside one 100,000-row INSERT
    const writers = Array.from({ length: 8 }, async (_, w) => {
      const c = new pg.Client({ connectionString: primary.url('sitelog') });
      await c.connect();
      for (let i = 0; i < 400; i++) await c.query(`INSERT INTO system_logs (stype, description, host, request_id) VALUES ('app', repeat('y', 2000), 'burst', $1)`, [`w-${w}-${i}`]);
      await c.end();
    });
    const burst = Promise.all([
      ...writers,
      q(primary.url('sitelog'), `INSERT INTO system_logs (stype, description, host, request_id) SELECT 'app', repeat('x', 500), 'burst', 'b-' || i FROM generate_series(1, 100000) i`),
    ]).finally(() => (bursting = false));
    while (bursting) {
      const [a] = (await p.query(PRIMARY_LAG)).rows;
      const [b] = (await r.query(REPLICA_LAG)).rows;
      maxBytes = Math.max(maxBytes, Number(a?.behind_bytes ?? 0));
      maxLag = Math.max(maxLag, Number(b?.lag_s ?? 0));
      samples++;
      await sleep(50);
    }
    await burst;
    out('during the write burst', { samples, maxBehindBytesOnPrimary: maxBytes, maxLagSecondsOnReplica: maxLag.toFixed(3) });
    // a write on the primary, visible on the replica after
    const id = (await p.query<{ id: string }>(`INSERT INTO system_logs (stype, description, host, request_id) VALUES ('app', 'probe', 'lab', 'probe-1') RETURNING id`)).rows[0]!.id;
    let t = performance.now();
    while ((await r.query('SELECT 1 FROM system_logs WHERE id = $1', [id])).rowCount === 0) await sleep(1);
    out('a committed row (synchronous_commit off, as this lab runs) visible on the replica after', `${(performance.now() - t).toFixed(1)} ms`);
    const times: string[] = [];
    await p.query('SET synchronous_commit = on');
    for (let i = 0; i < 5; i++) {
      const id2 = (await p.query<{ id: string }>(`INSERT INTO system_logs (stype, description, host, request_id) VALUES ('app', 'probe', 'lab', $1) RETURNING id`, [`probe-on-${i}`])).rows[0]!.id;
      t = performance.now();
      while ((await r.query('SELECT 1 FROM system_logs WHERE id = $1', [id2])).rowCount === 0) await sleep(1);
      times.push((performance.now() - t).toFixed(1));
    }
    out('committed rows (synchronous_commit on) visible on the replica after, ms', times);
    await p.end();

    // Sequelize's read replication, before anything stops
    const conf = (port: number) => ({ host: '127.0.0.1', port, username: 'postgres', password: '', database: 'sitelog' });
    const sequelize = new Sequelize({
      dialect: 'postgres',
      logging: false,
      replication: { read: [conf(replica.port), conf(primary.port)], write: conf(primary.port) },
      pool: { max: 4, min: 0, acquire: 3_000, idle: 10_000, evict: 1_000 },
      retry: { max: 0 },
      dialectOptions: { connectionTimeoutMillis: 2_000 },
    });
    const where = async (type: string) => {
      const t0 = performance.now();
      try {
        const c = (await sequelize.connectionManager.getConnection({ type } as never)) as unknown as pg.Client & { queryType: string };
        try {
          const [row] = (await c.query('SELECT inet_server_port() AS port, pg_is_in_recovery() AS replica')).rows;
          return `${c.queryType} pool → ${row.replica ? 'replica' : 'primary'} (${Math.round(performance.now() - t0)} ms)`;
        } finally {
          sequelize.connectionManager.releaseConnection(c);
        }
      } catch (e) {
        return `${errOf(e)} (${Math.round(performance.now() - t0)} ms)`;
      }
    };
    out("getConnection({type: 'read'})", await where('read'));
    out("getConnection({type: 'write'})", await where('write'));
    out(`getConnection({type: QueryTypes.SELECT = '${QueryTypes.SELECT}'})`, await where(QueryTypes.SELECT));
    const held = await Promise.all([0, 1, 2, 3].map(() => sequelize.connectionManager.getConnection({ type: QueryTypes.SELECT } as never)));
    out('4 read connections created at once go to', await Promise.all(held.map(async (c) => ((await (c as unknown as pg.Client).query('SELECT pg_is_in_recovery() AS r')).rows[0].r ? 'replica' : 'primary'))));
    for (const c of held) sequelize.connectionManager.releaseConnection(c);

    // the replica stops (pg_ctl -m fast): an idle client, a busy one, a new one, Sequelize's read pool
    const idle = new pg.Client({ connectionString: replica.url('sitelog') });
    const busy = new pg.Client({ connectionString: replica.url('sitelog') });
    await Promise.all([idle.connect(), busy.connect()]);
    let idleError = '';
    const t0 = performance.now();
    idle.on('error', (e) => (idleError = `${errOf(e)} at ${Math.round(performance.now() - t0)} ms`));
    busy.on('error', () => undefined);
    const inFlight = busy.query('SELECT pg_sleep(10)').then(
      () => 'answered',
      (e) => `${errOf(e)} at ${Math.round(performance.now() - t0)} ms`,
    );
    replica.stop('fast');
    stopped = Math.round(performance.now() - t0);
    out('pg_ctl stop -m fast took', `${stopped} ms`);
    out('in-flight query on the replica', await inFlight);
    out("idle client's 'error' event", idleError || 'none');
    const t1 = performance.now();
    await idle.query('SELECT 1').catch((e) => out('next query on that idle client', `${errOf(e)} after ${Math.round(performance.now() - t1)} ms`));
    const fresh = new pg.Client({ connectionString: replica.url('sitelog'), connectionTimeoutMillis: 2_000 });
    const t2 = performance.now();
    await fresh.connect().catch((e) => out('new connection to the stopped replica', `${errOf(e)} after ${Math.round(performance.now() - t2)} ms`));
    await sleep(100);
    const pool = (sequelize.connectionManager as unknown as { pool: { read: { size: number; available: number } } }).pool.read;
    out('Sequelize read pool after the stop', { size: pool.size, available: pool.available });
    const seq: string[] = [];
    for (let i = 0; i < 6; i++) seq.push(await where(QueryTypes.SELECT));
    out('6 reads in a row through Sequelize after the stop', seq);
    // more at once than the pool holds idle: new connections are made, round robin over the read list
    const burstSeq = await Promise.all([0, 1, 2, 3].map(() => where(QueryTypes.SELECT)));
    out('4 reads at once through Sequelize after the stop', burstSeq);
    await sequelize.close();

    // a hung replica: its postmaster stopped with SIGSTOP (the kernel still accepts the TCP connection)
    replica.start();
    const before = new pg.Client({ connectionString: replica.url('sitelog') });
    before.on('error', () => undefined);
    await before.connect();
    const postmaster = Number(fs.readFileSync(path.join(replica.data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    process.kill(postmaster, 'SIGSTOP');
    const resume = () => {
      try {
        process.kill(postmaster, 'SIGCONT');
      } catch {
        /* already gone */
      }
    };
    process.once('exit', resume); // never leave it stopped
    try {
      for (const timeout of [500, 2_000]) {
        const hung = new pg.Client({ connectionString: replica.url('sitelog'), connectionTimeoutMillis: timeout });
        const t3 = performance.now();
        await hung.connect().then(
          () => out('hung replica', 'connected?!'),
          (e) => out(`new connection to a hung replica, connectionTimeoutMillis ${timeout}`, `${errOf(e)} after ${Math.round(performance.now() - t3)} ms`),
        );
      }
      const t4 = performance.now();
      // a plain statement (a parallel plan would wait for the stopped postmaster to start workers)
      await before.query({ text: 'SELECT id FROM system_logs WHERE id = 1', query_timeout: 3_000 } as pg.QueryConfig).then(
        () => out('a connection opened before the hang still answers', `${Math.round(performance.now() - t4)} ms`),
        (e) => out('old connection', errOf(e)),
      );
    } finally {
      resume();
      process.off('exit', resume);
    }
    await before.end();
    await r.end().catch(() => undefined);
  } finally {
    cleanup(lab);
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
