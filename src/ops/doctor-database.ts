import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { envFields } from '../config.js';
import { clientFor, CONNECTION_RESERVE, CONNECTIONS_BESIDE_POOL, POOL_SESSION_SETTINGS, within } from '../db/database.js';
import { CONNECTIONS_BESIDE_READ_POOL, LAG, replicaLag as lagOf, type LagFacts } from '../db/replicas.js';
import { POOL_ACQUIRE_MS, REPLICA_MAX_LAG_MS } from '../timeouts.js';
import { asConfig, envOf, fail, ok, warn, type Finding, type Pm2App } from './findings.js';
import type { Facts, PgSetting } from './doctor.js';

// The doctor's checks of the database tier past one server: PgBouncer in front of PostgreSQL
// (DATABASE_URL) with the sessions going straight to it (DATABASE_DIRECT_URL), and the streaming
// replicas of DATABASE_READ_URLS. Facts first (each server asked within ASK_MS, so a missing
// PgBouncer or replica is a finding, not a hang), then the checks, pure functions of them.

/** `SHOW CONFIG` of PgBouncer 1.18's admin console. */
export type BouncerConfigRow = { key: string; value: string; default: string; changeable: string };
/** `SHOW DATABASES`: pool_size and reserve_pool are the effective ones; max_connections 0 = no limit. */
export type BouncerDatabaseRow = {
  name: string;
  host: string | null;
  port: number;
  database: string;
  force_user: string | null;
  pool_size: number;
  min_pool_size: number;
  reserve_pool: number;
  pool_mode: string | null;
  max_connections: number;
  current_connections: number;
  paused: number;
  disabled: number;
};
/** `SHOW POOLS`: one pool per (database, user); a client's wait is maxwait s + maxwait_us µs. */
export type BouncerPoolRow = {
  database: string;
  user: string;
  cl_active: number;
  cl_waiting: number;
  cl_active_cancel_req: number;
  cl_waiting_cancel_req: number;
  sv_active: number;
  sv_active_cancel: number;
  sv_being_canceled: number;
  sv_idle: number;
  sv_used: number;
  sv_tested: number;
  sv_login: number;
  maxwait: number;
  maxwait_us: number;
  pool_mode: string;
};
/** What a client of DATABASE_URL gets through PgBouncer: the settings the app relies on, as role defaults. */
export type SessionFacts =
  | { state: 'answered'; role: string; database: string; settings: PgSetting[] }
  | { state: 'failed'; error: string };

/** A server as the doctor names it: host:port/database, never with its password. */
export type Endpoint = { host: string; port: number; database: string };

export type PoolerFacts =
  /** DATABASE_URL is PostgreSQL itself: no DATABASE_DIRECT_URL set apart, and no PgBouncer found at it. */
  | { state: 'none' }
  | { state: 'unreachable'; setApart: boolean; console: Endpoint; error: string }
  | {
      state: 'reachable';
      /** DATABASE_DIRECT_URL differs from DATABASE_URL: the sessions (liveness, migrations) bypass PgBouncer. */
      setApart: boolean;
      console: Endpoint;
      /** PostgreSQL, by the names it goes by (DATABASE_DIRECT_URL's host, its own address): PgBouncer's databases that lead there count. */
      server: Server;
      /** The PgBouncer database DATABASE_URL names. */
      database: string;
      config: BouncerConfigRow[];
      databases: BouncerDatabaseRow[];
      pools: BouncerPoolRow[];
      session: SessionFacts;
    };

export type ReplicaFacts = { replica: Endpoint } & (
  | { state: 'unreachable'; error: string }
  | { state: 'reachable'; inRecovery: boolean; lagBytes: number | null; lagMs: number | null; connections?: { max: number; reserved: number } }
);

export type Server = { hosts: string[]; port: number };

export const endpoint = (url: string): Endpoint => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432), database: decodeURIComponent(u.pathname.slice(1)) };
};
export const shown = (e: Endpoint) => `${e.host}:${e.port}/${e.database}`;

/** The direct URL set apart from DATABASE_URL, as config.ts's DATABASE_POOLED decides. */
export function directUrlOf(web: Pm2App, databaseUrl: string | undefined): { url: string | undefined; setApart: boolean } {
  const direct = envOf(web, 'DATABASE_DIRECT_URL');
  return { url: direct ?? databaseUrl, setApart: direct !== undefined && direct !== databaseUrl };
}

export const readUrlsOf = (web: Pm2App): readonly string[] => asConfig(envFields.DATABASE_READ_URLS, envOf(web, 'DATABASE_READ_URLS')) ?? [];

// ---- checks ----

const configValue = (pooler: { config: BouncerConfigRow[] }, key: string) => pooler.config.find((row) => row.key === key);
const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/**
 * Whether PgBouncer's database row leads to `server`. A loopback host (or NULL, a Unix socket) is
 * PgBouncer's own machine: it leads there when PgBouncer runs where PostgreSQL does.
 */
function leadsTo(row: BouncerDatabaseRow, server: Server, bouncerHost: string): boolean {
  if (row.name === 'pgbouncer' && row.host === null) return false; // the admin console itself
  const local = (host: string | null) => host === null || LOOPBACK.has(host);
  const rowHosts = local(row.host) ? [bouncerHost] : [row.host];
  const sameHost = server.hosts.some((host) => rowHosts.some((h) => h === host || (local(h) && local(host))));
  return sameHost && Number(row.port) === server.port;
}

/** The server connections PgBouncer may open to PostgreSQL, database by database. */
function serverSide(pooler: Extract<PoolerFacts, { state: 'reachable' }>) {
  const globalCap = Number(configValue(pooler, 'max_db_connections')?.value ?? 0);
  return pooler.databases
    .filter((row) => leadsTo(row, pooler.server, pooler.console.host))
    .map((row) => {
      // each user gets a pool of its own; the ones that exist now are in SHOW POOLS
      const users = Math.max(1, pooler.pools.filter((p) => p.database === row.name).length);
      const perPool = Number(row.pool_size) + Number(row.reserve_pool);
      const cap = Number(row.max_connections) || globalCap || Infinity;
      return { name: row.name, users, perPool, cap, connections: Math.min(users * perPool, cap) };
    });
}

/** Runs before the other PgBouncer checks: without its admin console they have nothing to judge. */
export function pgbouncer({ pooler }: Facts): Finding | Finding[] {
  if (pooler.state === 'none') return [];
  if (pooler.state === 'unreachable') {
    const detail = `DATABASE_DIRECT_URL is set apart from DATABASE_URL, so DATABASE_URL should lead to PgBouncer, but its admin console ${shown(pooler.console)} does not answer: ${pooler.error}`;
    return fail('pgbouncer', detail, "start PgBouncer, add DATABASE_URL's user to stats_users in pgbouncer.ini, or unset DATABASE_DIRECT_URL when DATABASE_URL is PostgreSQL itself");
  }
  const databases = serverSide(pooler).map((d) => d.name);
  const at = `PgBouncer ${pooler.console.host}:${pooler.console.port}`;
  const postgres = `PostgreSQL ${pooler.server.hosts.join(' / ')}:${pooler.server.port}`;
  if (databases.length > 0) return ok('pgbouncer', `${at} answers (${databases.join(', ')} → ${postgres})`);
  const detail = `${at} answers, but none of its databases leads to ${postgres} by those names: the connection budget cannot be counted`;
  return warn('pgbouncer', detail, "name PostgreSQL in pgbouncer.ini's [databases] as DATABASE_DIRECT_URL does (host and port)");
}

/**
 * PostgreSQL's side, §3 of docs/scaling-research.md: PgBouncer's server connections, plus each live
 * instance's liveness connection when those go straight to PostgreSQL, plus the reserve, within
 * max_connections − superuser_reserved_connections. Only this PgBouncer is seen: with one per app
 * host, each of them counts.
 */
export function pgbouncerBudget({ database: db, pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable' || db.state !== 'reachable') return [];
  const setting = (name: string) => Number(db.settings.find((row) => row.name === name)?.setting);
  const [max, reserved] = [setting('max_connections'), setting('superuser_reserved_connections')];
  const databases = serverSide(pooler);
  const server = databases.reduce((sum, d) => sum + d.connections, 0);
  const perLiveInstance = pooler.setApart ? CONNECTIONS_BESIDE_POOL : 0;
  const direct = db.liveInstances * perLiveInstance;
  const needed = server + direct + CONNECTION_RESERVE;
  const available = max - reserved;
  const each = databases.map((d) =>
    d.connections < d.users * d.perPool
      ? `${d.name}: max_db_connections ${d.cap}`
      : `${d.name}: ${d.users > 1 ? `${d.users} pools × ` : ''}pool_size + reserve_pool ${d.perPool}`,
  );
  const sum =
    `PgBouncer's server connections ${server} (${each.join(', ') || 'none'}) + ${db.liveInstances} live instances × ${perLiveInstance} liveness connection` +
    ` + reserve ${CONNECTION_RESERVE} = ${needed} of ${available} connections (max_connections ${max} − superuser_reserved_connections ${reserved})`;
  if (needed <= available) return ok('pgbouncer-budget', sum);
  const fits = available - direct - CONNECTION_RESERVE;
  const raise = `raise max_connections to ${max + needed - available}`;
  // max_db_connections holds per database: several must share what fits
  const cap = databases.length > 1 ? `max_db_connections on ${databases.map((d) => d.name).join(', ')} adding up to ${fits}` : `max_db_connections = ${fits}`;
  const fix =
    fits > 0
      ? `${cap} in pgbouncer.ini (or default_pool_size + reserve_pool_size down to ${fits} in all), or ${raise}`
      : `${raise}: the liveness connections and the reserve alone take ${direct + CONNECTION_RESERVE}`;
  return fail('pgbouncer-budget', `budget exceeded: ${sum}`, fix);
}

/** PgBouncer's client side: every live instance's pool at once. Only this host's DB_POOL_MAX is known here. */
export function pgbouncerClients({ web, database: db, pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable' || db.state !== 'reachable') return [];
  const poolMax = asConfig(envFields.DB_POOL_MAX, envOf(web[0], 'DB_POOL_MAX'));
  // without a direct URL the liveness connections come through PgBouncer too
  const perInstance = poolMax + (pooler.setApart ? 0 : CONNECTIONS_BESIDE_POOL);
  const clients = db.liveInstances * perInstance;
  const maxClients = Number(configValue(pooler, 'max_client_conn')?.value);
  const sum = `${db.liveInstances} live instances × ${perInstance} (this host's DB_POOL_MAX${pooler.setApart ? '' : ' + liveness'}, taken for every host) = ${clients} clients of max_client_conn ${maxClients}`;
  if (clients <= maxClients) return ok('pgbouncer-clients', sum);
  const poolFits = Math.floor(maxClients / Math.max(1, db.liveInstances)) - (perInstance - poolMax);
  const fix = `max_client_conn = ${clients} or more in pgbouncer.ini${poolFits > 0 ? `, or DB_POOL_MAX ≤ ${poolFits}` : ''}`;
  return fail('pgbouncer-clients', `too many clients: ${sum}`, fix);
}

/** Live load: clients queued for a server connection now, or one that waited over a second. */
export function pgbouncerWaits({ pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable') return [];
  const pools = pooler.pools.filter((p) => p.database !== 'pgbouncer');
  const waitMs = (p: BouncerPoolRow) => Number(p.maxwait) * 1000 + Number(p.maxwait_us) / 1000;
  const waiting = pools.filter((p) => Number(p.cl_waiting) > 0 || waitMs(p) > 1000);
  if (waiting.length === 0) return ok('pgbouncer-waits', `no client waits for a server connection (${pools.length} pool${pools.length === 1 ? '' : 's'})`);
  const each = waiting.map((p) => `${p.database}/${p.user}: ${p.cl_waiting} waiting, longest ${Math.round(waitMs(p))} ms, ${p.sv_active} server connections busy`);
  const detail = `clients queue in PgBouncer: ${each.join('; ')}`;
  return warn('pgbouncer-waits', detail, 'raise default_pool_size (within pgbouncer-budget), or find the slow transactions (pg_stat_activity)');
}

/** Whether the app's database is pooled per transaction (or statement): no session survives there. */
export function sessionPooling({ pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable') return [];
  const mode = pooler.databases.find((row) => row.name === pooler.database)?.pool_mode ?? configValue(pooler, 'pool_mode')?.value ?? 'session';
  const what = `PgBouncer pools ${pooler.database} in ${mode} mode`;
  if (mode === 'statement') return fail('session-pooling', `${what}: no transaction can work`, 'pool_mode = transaction in pgbouncer.ini');
  if (mode === 'session' || pooler.setApart) return ok('session-pooling', `${what}; liveness locks and migrations ${pooler.setApart ? 'go to DATABASE_DIRECT_URL' : 'keep their session'}`);
  const detail = `${what}, and DATABASE_DIRECT_URL is not set apart: liveness locks and migrations go through PgBouncer and lose their session`;
  return fail('session-pooling', detail, "DATABASE_DIRECT_URL=<PostgreSQL's own URL> in web's environment");
}

/** The app's values, per setting (ms); PgBouncer refuses them as startup parameters, so they are the role's defaults. */
const SESSION_SETTINGS: Record<string, number> = POOL_SESSION_SETTINGS;

export function sessionSettings({ pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable') return [];
  const { session } = pooler;
  if (session.state === 'failed') {
    return fail('session-settings', `a client of DATABASE_URL through PgBouncer fails: ${session.error}`, 'npx pm2 logs web tells whether the instances fail the same way');
  }
  const zero = Object.keys(SESSION_SETTINGS).filter((name) => (session.settings.find((s) => s.name === name)?.setting ?? '0') === '0');
  if (zero.length === 0) return ok('session-settings', `through PgBouncer, ${Object.keys(SESSION_SETTINGS).join(', ')} are set`);
  const ignored = (configValue(pooler, 'ignore_startup_parameters')?.value ?? '').split(',').map((p) => p.trim());
  const dropped = zero.filter((name) => ignored.includes(name));
  const detail =
    `through PgBouncer ${zero.join(', ')} ${zero.length === 1 ? 'is' : 'are'} 0 (no limit): PgBouncer takes no timeouts as startup parameters` +
    (dropped.length > 0 ? ` (ignore_startup_parameters drops ${dropped.join(', ')} silently)` : '');
  const role = `ALTER ROLE "${session.role}" IN DATABASE "${session.database}" SET`;
  // a server connection keeps the values it started with
  const alter = zero.map((name) => `${role} ${name} = ${SESSION_SETTINGS[name]};`).join(' ');
  return fail('session-settings', detail, `the instances set them at their start behind PgBouncer (reload web), or: ${alter} then RECONNECT in PgBouncer's admin console`);
}

/** How long an outage of PostgreSQL lasts for the app through PgBouncer (research §3: 7.5 s more with the defaults). */
export function pgbouncerOutage({ pooler }: Facts): Finding | Finding[] {
  if (pooler.state !== 'reachable') return [];
  const seconds = (key: string) => {
    const row = configValue(pooler, key);
    return { value: Number(row?.value), text: `${key} ${row?.value ?? '?'} s${row && row.value === row.default ? " (PgBouncer's default)" : ''}` };
  };
  const [retry, wait] = [seconds('server_login_retry'), seconds('query_wait_timeout')];
  const acquireS = POOL_ACQUIRE_MS / 1000;
  const problems = [
    ...(retry.value > 1 ? [`${retry.text}: after PostgreSQL is back, new server connections are refused that long`] : []),
    ...(wait.value === 0 || wait.value > acquireS ? [`${wait.text}: while PostgreSQL is away, queries hang that long instead of failing`] : []),
  ];
  if (problems.length === 0) return ok('pgbouncer-outage', `${retry.text}, ${wait.text}: an outage ends for the app within seconds`);
  return warn('pgbouncer-outage', problems.join('; '), `server_login_retry = 1 and query_wait_timeout = ${acquireS} (the app's pool acquire wait) in pgbouncer.ini`);
}

/**
 * Each replica holds every live instance's read pool (DB_POOL_MAX, direct: no PgBouncer in front of
 * a replica) and its lag connection. Only this host's DB_POOL_MAX is known here.
 */
export function replicaBudget({ web, database: db, replicas }: Facts): Finding[] {
  if (db.state !== 'reachable') return [];
  const poolMax = asConfig(envFields.DB_POOL_MAX, envOf(web[0], 'DB_POOL_MAX'));
  const perInstance = poolMax + CONNECTIONS_BESIDE_READ_POOL;
  const needed = db.liveInstances * perInstance + CONNECTION_RESERVE;
  return replicas.flatMap((r) => {
    if (r.state !== 'reachable' || !r.connections) return [];
    const available = r.connections.max - r.connections.reserved;
    const sum =
      `${db.liveInstances} live instances × (DB_POOL_MAX ${poolMax} + ${CONNECTIONS_BESIDE_READ_POOL} for the lag, this host's taken for every host) + reserve ${CONNECTION_RESERVE} = ${needed} ` +
      `of ${available} connections on replica ${shown(r.replica)} (max_connections ${r.connections.max} − superuser_reserved_connections ${r.connections.reserved})`;
    if (needed <= available) return [ok('replica-budget', sum)];
    return [fail('replica-budget', `too many connections: ${sum}`, `max_connections = ${needed + r.connections.reserved} or more on the replica (a replica needs at least its primary's), or a smaller DB_POOL_MAX`)];
  });
}

export function replicaLag({ replicas }: Facts): Finding[] {
  return replicas.map((r) => {
    const name = shown(r.replica);
    if (r.state === 'unreachable') {
      return fail('replica-lag', `replica ${name} does not answer: ${r.error}`, 'start it, or take it out of DATABASE_READ_URLS (its reads go to the primary meanwhile)');
    }
    if (!r.inRecovery) {
      return fail('replica-lag', `${name} is not in recovery: it is no replica (promoted, or a primary)`, "take it out of DATABASE_READ_URLS, or make it a replica again (pg_basebackup -R)");
    }
    if (r.lagMs === null) {
      const detail = `replica ${name} has replayed no transaction since it started, and has WAL left to replay: its lag is unknown`;
      return fail('replica-lag', detail, 'check that it streams from its primary (SELECT status FROM pg_stat_wal_receiver on it)');
    }
    const lag = `${(r.lagMs / 1000).toFixed(1)} s behind (${r.lagBytes ?? 0} bytes received not yet replayed)`;
    if (r.lagMs <= REPLICA_MAX_LAG_MS) return ok('replica-lag', `replica ${name} is ${lag}`);
    return fail('replica-lag', `replica ${name} is ${lag}, over the bound of ${REPLICA_MAX_LAG_MS / 1000} s`, 'find what holds its replay back (long queries on it: max_standby_streaming_delay; disk; network)');
  });
}

// ---- facts ----

/** Each server the doctor asks answers within this, connection included. */
export const ASK_MS = 2_000;

/** `work` on a client of its own, given up after ASK_MS whatever the server does. */
async function ask<T>(url: string, work: (client: pg.Client) => Promise<T>, database?: string): Promise<T> {
  const client = clientFor(url, database, 'sitelog-doctor', ASK_MS);
  try {
    return await within(ASK_MS, client.connect().then(() => work(client)));
  } finally {
    // end() waits for the server to close its side, which a hung server never does
    const ended = await Promise.race([client.end().then(() => true, () => true), sleep(200, false, { ref: false })]);
    if (!ended) client.connection.stream.destroy();
  }
}

const message = (err: unknown) => (err as Error).message;

async function collectSession(url: string): Promise<SessionFacts> {
  try {
    return await ask(url, async (client) => {
      // no parameters: one plain statement, as PgBouncer in transaction mode takes any
      const names = Object.keys(SESSION_SETTINGS).map((n) => `'${n}'`).join(', ');
      const { rows } = await client.query<PgSetting & { role: string; database: string }>(
        `SELECT name, setting, current_user AS role, current_database() AS database FROM pg_settings WHERE name IN (${names})`,
      );
      return { state: 'answered', role: rows[0]?.role ?? '?', database: rows[0]?.database ?? '?', settings: rows.map(({ name, setting }) => ({ name, setting })) };
    });
  } catch (err) {
    return { state: 'failed', error: message(err) };
  }
}

/**
 * PgBouncer's admin console: database `pgbouncer` on DATABASE_URL's host and port, same user; it
 * takes only the simple query protocol (a query without parameters). Without a direct URL set apart,
 * it is looked for only when PostgreSQL's port is not DATABASE_URL's: something sits between them.
 */
export async function collectPooler(opts: {
  databaseUrl: string | undefined;
  direct: ReturnType<typeof directUrlOf>;
  /** What PostgreSQL said of itself over the direct URL, when it answered. */
  postgres: { port: number; address: string | null } | undefined;
}): Promise<PoolerFacts> {
  const { databaseUrl, direct, postgres } = opts;
  const setApart = direct.setApart;
  if (!databaseUrl || !direct.url || !postgres) return { state: 'none' };
  // PostgreSQL by the names PgBouncer may know it by: DATABASE_DIRECT_URL's host, the address it answered on
  const hosts = new Set([...(setApart ? [endpoint(direct.url).host] : []), ...(postgres.address ? [postgres.address] : [])]);
  const server: Server = { hosts: [...hosts], port: postgres.port };
  const admin = { ...endpoint(databaseUrl), database: 'pgbouncer' };
  if (!setApart && server.port === admin.port) return { state: 'none' };
  try {
    const shows = await ask(
      databaseUrl,
      async (client) => ({
        config: (await client.query<BouncerConfigRow>('SHOW CONFIG')).rows,
        databases: (await client.query<BouncerDatabaseRow>('SHOW DATABASES')).rows,
        pools: (await client.query<BouncerPoolRow>('SHOW POOLS')).rows,
      }),
      'pgbouncer',
    );
    const session = await collectSession(databaseUrl);
    return { state: 'reachable', setApart, console: admin, server, database: endpoint(databaseUrl).database, ...shows, session };
  } catch (err) {
    // a port forward, not PgBouncer: nothing to say unless a direct URL promised one
    if (!setApart) return { state: 'none' };
    return { state: 'unreachable', setApart, console: admin, error: message(err) };
  }
}

async function collectReplica(url: string): Promise<ReplicaFacts> {
  const replica = endpoint(url);
  try {
    // the app's own lag rule (src/db/replicas.ts): a replica whose receiver is down is as old as its
    // last replayed commit, not 0 behind because nothing new arrived
    const { facts, settings } = await ask(url, async (client) => ({
      facts: (await client.query<LagFacts>(LAG.text)).rows[0]!,
      settings: (await client.query<{ max: number; reserved: number }>(REPLICA_CONNECTIONS)).rows[0]!,
    }));
    const lag = lagOf(facts);
    const connections = { max: settings.max, reserved: settings.reserved };
    return { replica, state: 'reachable', inRecovery: facts.recovery, lagBytes: lag.bytes, lagMs: lag.seconds === undefined ? null : lag.seconds * 1000, connections };
  } catch (err) {
    return { replica, state: 'unreachable', error: message(err) };
  }
}

const REPLICA_CONNECTIONS = `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved`;

export const collectReplicas = (urls: readonly string[]): Promise<ReplicaFacts[]> => Promise.all(urls.map(collectReplica));
