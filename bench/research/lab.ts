 
// Throwaway PostgreSQL 15 clusters, PgBouncer 1.18 and a streaming replica for the #12 research
// (docs/scaling-research.md). Everything lives in one temporary folder owned by `postgres`, on free
// 127.0.0.1 ports; `cleanup()` stops what was started (by pid file) and removes the folder.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../test/support/ports.js';

const BIN = '/usr/lib/postgresql/15/bin';
const asPostgres = (cmd: string, args: string[]) => {
  const root = process.getuid?.() === 0;
  const r = spawnSync(root ? 'runuser' : cmd, root ? ['-u', 'postgres', '--', cmd, ...args] : args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
};

export type Lab = { dir: string; started: Array<() => void> };

export function newLab(): Lab {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-research-'));
  fs.chmodSync(dir, 0o755);
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', dir]);
  return { dir, started: [] };
}

export function cleanup(lab: Lab): void {
  for (const stop of lab.started.reverse()) {
    try {
      stop();
    } catch {
      /* already stopped */
    }
  }
  fs.rmSync(lab.dir, { recursive: true, force: true });
}

export type Pg = { port: number; data: string; url: (db?: string) => string; stop: (mode?: 'fast' | 'immediate') => void; start: () => void };

function pgHandle(lab: Lab, data: string, port: number): Pg {
  const log = path.join(lab.dir, `pg-${port}.log`);
  const handle: Pg = {
    port,
    data,
    url: (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`,
    start: () => void asPostgres(`${BIN}/pg_ctl`, ['-D', data, '-l', log, '-w', 'start']),
    stop: (mode = 'fast') => void asPostgres(`${BIN}/pg_ctl`, ['-D', data, '-m', mode, '-w', 'stop']),
  };
  lab.started.push(() => handle.stop('immediate'));
  return handle;
}

const BASE_CONF = (port: number, maxConnections: number) =>
  [
    `port = ${port}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = ''`,
    `max_connections = ${maxConnections}`,
    `shared_buffers = 32MB`,
    `fsync = off`,
    `synchronous_commit = off`,
    // the replica's needs (15's defaults already are replica / 10 / on, said here to be explicit)
    `wal_level = replica`,
    `max_wal_senders = 5`,
    `hot_standby = on`,
  ].join('\n') + '\n';

/** A primary: initdb (trust on 127.0.0.1, replication included), started. */
export async function startPrimary(lab: Lab, maxConnections = 40): Promise<Pg> {
  const port = await freePort();
  const data = path.join(lab.dir, 'primary');
  asPostgres(`${BIN}/initdb`, ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C.UTF-8']);
  fs.appendFileSync(path.join(data, 'postgresql.conf'), BASE_CONF(port, maxConnections));
  const primary = pgHandle(lab, data, port);
  primary.start();
  return primary;
}

/** A streaming replica of `primary` made with pg_basebackup -R; returns it started and the seconds each step took. */
export async function startReplica(lab: Lab, primary: Pg): Promise<{ replica: Pg; basebackupSeconds: number; startSeconds: number }> {
  const port = await freePort();
  const data = path.join(lab.dir, 'replica');
  let t = performance.now();
  // -R writes standby.signal and primary_conninfo into postgresql.auto.conf; -X stream copies the WAL meanwhile
  asPostgres(`${BIN}/pg_basebackup`, ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', data, '-R', '-X', 'stream', '-c', 'fast']);
  const basebackupSeconds = (performance.now() - t) / 1000;
  fs.appendFileSync(path.join(data, 'postgresql.conf'), `port = ${port}\n`);
  t = performance.now();
  const replica = pgHandle(lab, data, port);
  replica.start();
  return { replica, basebackupSeconds, startSeconds: (performance.now() - t) / 1000 };
}

export type Bouncer = { port: number; url: (db?: string) => string; admin: () => string; stop: () => void; start: () => void; config: string; alive: () => boolean; reviveIfDead: () => boolean };

/** PgBouncer 1.18 in front of `primary`, in transaction mode unless told otherwise. */
export async function startBouncer(lab: Lab, primary: Pg, extra: Record<string, string | number> = {}): Promise<Bouncer> {
  const port = await freePort();
  const dir = path.join(lab.dir, `bouncer-${port}`);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'userlist.txt'), '"postgres" ""\n');
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'trust',
    auth_file: path.join(dir, 'userlist.txt'),
    admin_users: 'postgres',
    pool_mode: 'transaction',
    max_client_conn: 500,
    default_pool_size: 4,
    logfile: path.join(dir, 'pgbouncer.log'),
    pidfile: path.join(dir, 'pgbouncer.pid'),
    ...extra,
  };
  const ini =
    `[databases]\nsitelog = host=127.0.0.1 port=${primary.port} dbname=sitelog\npostgres = host=127.0.0.1 port=${primary.port} dbname=postgres\n\n[pgbouncer]\n` +
    Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') +
    '\n';
  const config = path.join(dir, 'pgbouncer.ini');
  fs.writeFileSync(config, ini);
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const pidfile = settings['pidfile'] as string;
  const bouncer: Bouncer = {
    port,
    config,
    url: (db = 'sitelog') => `postgres://postgres@127.0.0.1:${port}/${db}`,
    admin: () => `postgres://postgres@127.0.0.1:${port}/pgbouncer`,
    start: () => {
      asPostgres('/usr/sbin/pgbouncer', ['-d', config]);
      for (let i = 0; i < 50 && !fs.existsSync(pidfile); i++) execFileSync('sleep', ['0.05']);
    },
    alive: () => {
      try {
        process.kill(Number(fs.readFileSync(pidfile, 'utf8')), 0);
        return true;
      } catch {
        return false;
      }
    },
    /** Starts it again when it died (PgBouncer 1.18 exits on some cancel requests); whether it had. */
    reviveIfDead: () => {
      if (bouncer.alive()) return false;
      fs.rmSync(pidfile, { force: true });
      bouncer.start();
      return true;
    },
    stop: () => {
      if (!bouncer.alive()) return;
      const pid = Number(fs.readFileSync(pidfile, 'utf8'));
      process.kill(pid, 'SIGINT'); // SIGINT: safe shutdown… SIGTERM would be immediate in 1.18 (both fine here)
      for (let i = 0; i < 100 && fs.existsSync(pidfile); i++) execFileSync('sleep', ['0.05']);
    },
  };
  bouncer.start();
  lab.started.push(() => bouncer.stop());
  return bouncer;
}

export async function q<R extends pg.QueryResultRow = Record<string, unknown>>(url: string, sql: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

/** The `sitelog` database with sitelog's own migrations (run direct), and `rows` entries in system_logs. */
export async function makeSitelogDatabase(primary: Pg, rows: number): Promise<void> {
  await q(primary.url('postgres'), 'CREATE DATABASE sitelog');
  const { Sequelize } = await import('sequelize');
  const { createMigrator } = await import('../../src/db/migrate.js');
  const sequelize = new Sequelize(primary.url('sitelog'), { dialect: 'postgres', logging: false, pool: { max: 1 } });
  await createMigrator(sequelize).up();
  await sequelize.query(
    `INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id, "timestamp")
     SELECT (ARRAY['system','security','app','error'])[1 + i % 4], 'entry ' || i || ' ' || md5(i::text), '127.0.0.1', 'research', 'lab', i % 4,
            'req-' || i, now() - make_interval(secs => $1 - i)
     FROM generate_series(1, $1) i`,
    { bind: [rows] },
  );
  await sequelize.query('ANALYZE system_logs');
  await sequelize.close();
}
