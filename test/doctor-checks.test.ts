import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  checks,
  clock,
  clockSkewMs,
  clusterMode,
  database,
  instancesOnline,
  judge,
  keepaliveOrder,
  killTimeout,
  listenTimeout,
  logDisk,
  migrations,
  nginxConfig,
  nginxDurationMs,
  pm2,
  poolBudget,
  trustedProxy,
  waitReady,
  type ClockSample,
  type DatabaseFacts,
  type Facts,
  type Finding,
  type PgSetting,
  type Pm2App,
  type Pm2Facts,
} from '../src/ops/doctor.js';
import {
  directUrlOf,
  endpoint,
  pgbouncer,
  pgbouncerBudget,
  pgbouncerClients,
  pgbouncerOutage,
  pgbouncerWaits,
  readUrlsOf,
  replicaBudget,
  replicaLag,
  sessionPooling,
  sessionSettings,
  shown,
  type BouncerConfigRow,
  type BouncerDatabaseRow,
  type BouncerPoolRow,
  type PoolerFacts,
  type ReplicaFacts,
} from '../src/ops/doctor-database.js';
import { envFields } from '../src/config.js';
import { isWebApp } from '../src/ops/stack.js';
import { LOCK_WAIT_MS, POOL_ACQUIRE_MS, REPLICA_MAX_LAG_MS, SHUTDOWN_MS, STARTUP_DEADLINE_MS, STATEMENT_TIMEOUT_MS } from '../src/timeouts.js';

// The doctor's checks, pure functions of facts. The facts of a sound local stack come from samples
// of what the doctor collects (test/fixtures/doctor/: `pm2 jlist`, `nginx -T`, pg_settings rows,
// PgBouncer 1.18's SHOW CONFIG / DATABASES / POOLS); each case changes one of them.

const fixture = (name: string) => fs.readFileSync(path.join(__dirname, 'fixtures', 'doctor', name), 'utf8');
const jlist = JSON.parse(fixture('pm2-jlist.json')) as Pm2App[];
const pgSettings = JSON.parse(fixture('pg-settings.json')) as PgSetting[];
const nginxT = fixture('nginx-T.stdout.txt');
const bouncerConfig = JSON.parse(fixture('pgbouncer-show-config.json')) as BouncerConfigRow[];
const bouncerDatabases = JSON.parse(fixture('pgbouncer-show-databases.json')) as BouncerDatabaseRow[];
const bouncerPools = JSON.parse(fixture('pgbouncer-show-pools.json')) as BouncerPoolRow[];
const LOCAL_CONF = '/home/sitelog/sitelog/.data/nginx/local.conf';

/** The sample's web processes, each with `settings` over its pm2_env and `env` where PM2 puts the environment (both places). */
function web(settings: Record<string, unknown> = {}, env: Record<string, string> = {}): Facts['web'] {
  const [first, ...rest] = jlist.filter(isWebApp).map((p) => ({
    ...p,
    pm2_env: { ...p.pm2_env, ...settings, ...env, env: { ...p.pm2_env.env, ...env } },
  }));
  assert.ok(first, 'the jlist sample has web processes');
  return [first, ...rest];
}

const scaled = (processes: Facts['web'], count: number): Facts['web'] => [processes[0], ...Array.from({ length: count - 1 }, () => processes[0])];

function reachable(over: Partial<Omit<Extract<DatabaseFacts, { state: 'reachable' }>, 'state'>> = {}): DatabaseFacts {
  return {
    state: 'reachable',
    settings: pgSettings,
    pending: [],
    clock: [{ sentMs: 1_000, serverMs: 1_012, receivedMs: 1_020 }],
    liveInstances: 2,
    address: '127.0.0.1',
    ...over,
  };
}

const unreachable: DatabaseFacts = { state: 'unreachable', error: 'connect ECONNREFUSED 127.0.0.1:5433' };
const nginxFailing = (stderr: string, asRoot = false): Facts['nginx'] => ({ installed: true, config: undefined, asRoot, test: { passed: false, stderr } });
const nginxPassing = (stdout: string, config?: string): Facts['nginx'] => ({ installed: true, config, asRoot: false, test: { passed: true, stdout } });

function facts(over: Partial<Facts> = {}): Facts {
  return {
    web: web(),
    database: reachable(),
    pooler: { state: 'none' },
    replicas: [],
    nginx: nginxPassing(nginxT, LOCAL_CONF),
    disk: { dir: '/home/sitelog/.pm2/logs', freeMb: 20_480 },
    limits: { minFreeMb: 256, maxSkewMs: 1_000 },
    ...over,
  };
}

/** A finding as the doctor prints it, its fix on the same line. */
const line = (f: Finding) => `${f.ok ? 'ok' : f.warning ? 'WARN' : 'FAIL'} ${f.id}: ${f.detail}${f.fix ? ` | fix: ${f.fix}` : ''}`;

type Case<F> = { when: string; then: string; facts: F; expect: RegExp[] };

/** One test per case: the check's findings, as printed, match `expect` one for one (none: the check does not apply). */
function table<F = Facts>(check: (facts: F) => Finding | Finding[], cases: Case<F>[]): void {
  for (const c of cases) {
    test(`when ${c.when}, then ${c.then}`, () => {
      const lines = [check(c.facts)].flat().map(line);
      assert.equal(lines.length, c.expect.length, lines.join('\n'));
      lines.forEach((l, i) => assert.match(l, c.expect[i]!));
    });
  }
}

describe('pm2', () => {
  const home = '/home/sitelog/.pm2';
  table<Pm2Facts>(pm2, [
    { when: 'no daemon runs', then: 'pm2 fails naming PM2_HOME', facts: { home, daemon: false, processes: [] }, expect: [/^FAIL pm2: no PM2 daemon runs for PM2_HOME=\/home\/sitelog\/\.pm2 \| fix: npm start/] },
    {
      when: 'PM2 runs db and proxy but no web',
      then: 'pm2 fails',
      facts: { home, daemon: true, processes: jlist.filter((p) => !isWebApp(p)) },
      expect: [/^FAIL pm2: PM2 runs no web app in the sitelog namespace/],
    },
    { when: 'PM2 runs web', then: 'pm2 has nothing to say', facts: { home, daemon: true, processes: jlist }, expect: [] },
    { when: 'PM2 runs a blue/green slot', then: 'pm2 has nothing to say', facts: { home, daemon: true, processes: web().map((p) => ({ ...p, name: 'web-green' })) }, expect: [] },
  ]);
});

describe('cluster-mode', () => {
  table(clusterMode, [
    { when: 'web runs in cluster mode', then: 'it passes with the instance count', facts: facts(), expect: [/^ok cluster-mode: web runs in cluster mode \(2 instances\)$/] },
    { when: 'web runs in fork mode', then: 'it fails naming the mode', facts: facts({ web: web({ exec_mode: 'fork_mode' }) }), expect: [/^FAIL cluster-mode: web runs in fork_mode mode: .* \| fix: exec_mode: 'cluster'/] },
    { when: 'PM2 reports no exec_mode', then: 'it fails as fork', facts: facts({ web: web({ exec_mode: undefined }) }), expect: [/^FAIL cluster-mode: web runs in fork mode:/] },
  ]);
});

describe('wait-ready', () => {
  table(waitReady, [
    { when: 'wait_ready is on', then: 'it passes', facts: facts(), expect: [/^ok wait-ready: wait_ready is on/] },
    { when: 'wait_ready is off', then: 'it fails', facts: facts({ web: web({ wait_ready: false }) }), expect: [/^FAIL wait-ready: wait_ready is off: .* \| fix: wait_ready: true/] },
    { when: 'wait_ready is unset', then: 'it fails', facts: facts({ web: web({ wait_ready: undefined }) }), expect: [/^FAIL wait-ready:/] },
  ]);
});

// PM2's two timers: each must outlast what the instance does meanwhile
for (const { check, id, timer, bound, what, sound } of [
  { check: listenTimeout, id: 'listen-timeout', timer: 'listen_timeout', bound: STARTUP_DEADLINE_MS, what: 'the startup deadline', sound: 135_000 },
  { check: killTimeout, id: 'kill-timeout', timer: 'kill_timeout', bound: SHUTDOWN_MS, what: 'the shutdown bound', sound: 10_000 },
]) {
  describe(id, () => {
    const withTimer = (ms: number | undefined) => facts({ web: web({ [timer]: ms }) });
    table(check, [
      { when: `${timer} is above ${what}`, then: 'it passes', facts: facts(), expect: [new RegExp(`^ok ${id}: ${timer} ${sound} ms is above ${what} \\(${bound} ms\\)$`)] },
      { when: `${timer} is 1000`, then: 'it fails', facts: withTimer(1_000), expect: [new RegExp(`^FAIL ${id}: ${timer} 1000 ms is not above .* \\| fix: ${timer} above ${bound}`)] },
      { when: `${timer} equals ${what}`, then: 'it fails', facts: withTimer(bound), expect: [new RegExp(`^FAIL ${id}:`)] },
      { when: `${timer} is unset`, then: 'it fails saying so', facts: withTimer(undefined), expect: [new RegExp(`^FAIL ${id}: ${timer} unset ms`)] },
    ]);
  });
}

describe('instances-online', () => {
  const [first, second] = web();
  const stopped = { ...second!, pm2_env: { ...second!.pm2_env, status: 'stopped' } };
  table(instancesOnline, [
    { when: 'every instance is online', then: 'it passes', facts: facts(), expect: [/^ok instances-online: 2 of 2 web instances online$/] },
    { when: 'one instance is stopped', then: 'it fails counting', facts: facts({ web: [first, stopped] }), expect: [/^FAIL instances-online: 1 of 2 web instances online \| fix: npx pm2 logs web/] },
  ]);
});

describe('trusted-proxy', () => {
  table(trustedProxy, [
    { when: 'web listens on loopback', then: 'it passes', facts: facts(), expect: [/^ok trusted-proxy: web listens on 127\.0\.0\.1 and believes X-Forwarded-For and X-Request-Id from loopback only$/] },
    { when: 'web listens on a LAN address and trusts the nginx host', then: 'it passes', facts: facts({ web: web({}, { BIND_ADDRESS: '10.0.0.5', TRUST_PROXY: '10.0.0.2' }) }), expect: [/^ok trusted-proxy: web listens on 10\.0\.0\.5 .* from 10\.0\.0\.2 only$/] },
    { when: 'web listens on a LAN address and trusts only loopback', then: 'it fails naming TRUST_PROXY', facts: facts({ web: web({}, { BIND_ADDRESS: '10.0.0.5' }) }), expect: [/^FAIL trusted-proxy: BIND_ADDRESS 10\.0\.0\.5 is reachable from other hosts, but TRUST_PROXY trusts only loopback.* \| fix: TRUST_PROXY=/] },
  ]);
});

describe('database', () => {
  table(database, [
    { when: 'PostgreSQL answers', then: 'it passes', facts: facts(), expect: [/^ok database: PostgreSQL answers$/] },
    { when: 'PostgreSQL refuses', then: "it fails with the driver's message", facts: facts({ database: unreachable }), expect: [/^FAIL database: PostgreSQL does not answer: connect ECONNREFUSED 127\.0\.0\.1:5433 \|/] },
    { when: 'web has no DATABASE_URL', then: 'it fails', facts: facts({ database: { state: 'no-url' } }), expect: [/^FAIL database: web has no DATABASE_URL/] },
  ]);
});

describe('pool-budget', () => {
  const settings = (max: string) => pgSettings.map((row) => (row.name === 'max_connections' ? { ...row, setting: max } : row));
  table(poolBudget, [
    { when: 'DB_POOL_MAX is unset', then: "it counts config.ts's default pool", facts: facts(), expect: [/^ok pool-budget: 2 instances × pool 10 need 27 of 97 connections$/] },
    { when: 'DB_POOL_MAX is not a number', then: "it counts config.ts's default pool", facts: facts({ web: web({}, { DB_POOL_MAX: 'lots' }) }), expect: [/^ok pool-budget: 2 instances × pool 10 need 27/] },
    { when: 'WEB_INSTANCES is above what runs', then: 'it counts WEB_INSTANCES', facts: facts({ web: web({}, { WEB_INSTANCES: '4' }) }), expect: [/^ok pool-budget: 4 instances × pool 10 need 49 of 97/] },
    { when: 'WEB_INSTANCES is max', then: 'it counts what runs', facts: facts({ web: web({}, { WEB_INSTANCES: 'max' }) }), expect: [/^ok pool-budget: 2 instances × pool 10/] },
    {
      when: 'web is scaled to 4 with pools of 30',
      then: 'it fails with the budget spelled out',
      facts: facts({ web: scaled(web({}, { DB_POOL_MAX: '30' }), 4) }),
      expect: [
        /^FAIL pool-budget: pool budget exceeded: instances 4 × \(DB_POOL_MAX 30 \+ 1\) \+ reserve 5 = 129 connections, but the server allows 97 \(max_connections 100 − superuser_reserved_connections 3\); .* \| fix: lower DB_POOL_MAX or the instance count, or raise max_connections$/,
      ],
    },
    { when: 'max_connections is 20', then: 'it fails', facts: facts({ database: reachable({ settings: settings('20') }) }), expect: [/^FAIL pool-budget: .* = 27 connections, but the server allows 17/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
    { when: 'DATABASE_URL leads to PgBouncer', then: 'pgbouncer-budget counts instead', facts: facts({ pooler: bouncer() }), expect: [] },
  ]);
});

// ---- the database tier past one server: the #12 setup, 3 hosts × 4 instances behind PgBouncer
// (default_pool_size 15 + reserve_pool_size 5) against max_connections 40 ----

type Bouncer = Extract<PoolerFacts, { state: 'reachable' }>;

/** The sample PgBouncer, in front of the PostgreSQL that pgSettings describes (127.0.0.1:5432). */
function bouncer(over: Partial<Omit<Bouncer, 'state'>> = {}): PoolerFacts {
  return {
    state: 'reachable',
    setApart: true,
    console: { host: '127.0.0.1', port: 6432, database: 'pgbouncer' },
    server: { hosts: ['127.0.0.1'], port: 5432 },
    database: 'sitelog',
    config: bouncerConfig,
    databases: bouncerDatabases,
    pools: bouncerPools,
    session: {
      state: 'answered',
      role: 'sitelog',
      database: 'sitelog',
      settings: [
        { name: 'idle_in_transaction_session_timeout', setting: '10000' },
        { name: 'lock_timeout', setting: '1000' },
        { name: 'statement_timeout', setting: '5000' },
      ],
    },
    ...over,
  };
}
const bouncerWith = (values: Record<string, string>): BouncerConfigRow[] => bouncerConfig.map((row) => (row.key in values ? { ...row, value: values[row.key]! } : row));
const sitelogDb = (over: Partial<BouncerDatabaseRow>): BouncerDatabaseRow[] => bouncerDatabases.map((row) => (row.name === 'sitelog' ? { ...row, ...over } : row));
const sitelogPool = (over: Partial<BouncerPoolRow>): BouncerPoolRow[] => bouncerPools.map((row) => (row.database === 'sitelog' ? { ...row, ...over } : row));
const max40 = pgSettings.map((row) => (row.name === 'max_connections' ? { ...row, setting: '40' } : row));
/** The #12 setup, `live` instances alive across the hosts. */
const tier = (live: number, pooler: Partial<Omit<Bouncer, 'state'>> = {}, env: Record<string, string> = {}) =>
  facts({ web: web({}, env), database: reachable({ settings: max40, liveInstances: live }), pooler: bouncer(pooler) });
const DEFAULT_POOL = envFields.DB_POOL_MAX.parse(undefined);

describe('pgbouncer', () => {
  const unreachablePooler: PoolerFacts = { state: 'unreachable', setApart: true, console: { host: '10.0.0.3', port: 6432, database: 'pgbouncer' }, error: 'connect ECONNREFUSED 10.0.0.3:6432' };
  table(pgbouncer, [
    { when: 'DATABASE_URL is PostgreSQL itself', then: 'it does not apply', facts: facts(), expect: [] },
    { when: 'the admin console answers', then: 'it passes naming what leads where', facts: tier(12), expect: [/^ok pgbouncer: PgBouncer 127\.0\.0\.1:6432 answers \(sitelog → PostgreSQL 127\.0\.0\.1:5432\)$/] },
    {
      when: 'DATABASE_DIRECT_URL is set apart but no admin console answers at DATABASE_URL',
      then: 'it fails with the error, no password shown',
      facts: facts({ pooler: unreachablePooler }),
      expect: [/^FAIL pgbouncer: .* admin console 10\.0\.0\.3:6432\/pgbouncer does not answer: connect ECONNREFUSED 10\.0\.0\.3:6432 \| fix: start PgBouncer, add DATABASE_URL's user to stats_users/],
    },
    { when: 'PgBouncer names PostgreSQL localhost and DATABASE_DIRECT_URL 127.0.0.1', then: 'it counts it all the same', facts: tier(12, { databases: sitelogDb({ host: 'localhost' }) }), expect: [/^ok pgbouncer: .*\(sitelog → /] },
    { when: 'PgBouncer reaches PostgreSQL by a Unix socket', then: 'it counts it as this machine', facts: tier(12, { databases: sitelogDb({ host: null }) }), expect: [/^ok pgbouncer: .*\(sitelog → /] },
    {
      when: 'PostgreSQL answered on another address PgBouncer knows it by',
      then: 'it counts it',
      facts: tier(12, { server: { hosts: ['db.internal', '10.0.0.5'], port: 5432 }, databases: sitelogDb({ host: '10.0.0.5' }) }),
      expect: [/^ok pgbouncer: .*\(sitelog → PostgreSQL db\.internal \/ 10\.0\.0\.5:5432\)$/],
    },
    {
      when: 'PgBouncer runs on the database machine and names PostgreSQL 127.0.0.1, reached from an app host as 10.0.0.5',
      then: 'it counts it: loopback is PgBouncer\'s own machine',
      facts: tier(12, { console: { host: '10.0.0.5', port: 6432, database: 'pgbouncer' }, server: { hosts: ['10.0.0.5'], port: 5432 }, databases: sitelogDb({ host: '127.0.0.1' }) }),
      expect: [/^ok pgbouncer: PgBouncer 10\.0\.0\.5:6432 answers \(sitelog → PostgreSQL 10\.0\.0\.5:5432\)$/],
    },
    {
      when: 'PgBouncer on another machine names PostgreSQL 127.0.0.1',
      then: 'it does not take that for the database machine',
      facts: tier(12, { console: { host: '10.0.0.3', port: 6432, database: 'pgbouncer' }, server: { hosts: ['10.0.0.5'], port: 5432 }, databases: sitelogDb({ host: '127.0.0.1' }) }),
      expect: [/^WARN pgbouncer: .* none of its databases leads to PostgreSQL 10\.0\.0\.5:5432/],
    },
    {
      when: "none of PgBouncer's databases leads to DATABASE_DIRECT_URL's server",
      then: 'it warns that the budget cannot be counted',
      facts: tier(12, { databases: sitelogDb({ port: 5433 }) }),
      expect: [/^WARN pgbouncer: .* none of its databases leads to PostgreSQL 127\.0\.0\.1:5432 .* \| fix: name PostgreSQL in pgbouncer\.ini's \[databases\]/],
    },
  ]);
});

describe('pgbouncer-budget', () => {
  table(pgbouncerBudget, [
    {
      when: '12 instances live behind a pool of 15 + 5 against max_connections 40',
      then: 'it passes with the sum spelled out',
      facts: tier(12),
      expect: [
        /^ok pgbouncer-budget: PgBouncer's server connections 20 \(sitelog: pool_size \+ reserve_pool 20\) \+ 12 live instances × 1 liveness connection \+ reserve 5 = 37 of 37 connections \(max_connections 40 − superuser_reserved_connections 3\)$/,
      ],
    },
    {
      when: 'a 13th instance goes live',
      then: 'it fails naming max_db_connections that fits, or max_connections',
      facts: tier(13),
      expect: [/^FAIL pgbouncer-budget: budget exceeded: .* = 38 of 37 connections .* \| fix: max_db_connections = 19 in pgbouncer\.ini .* or raise max_connections to 41$/],
    },
    { when: 'max_db_connections caps PgBouncer at 18', then: 'it counts the cap', facts: tier(13, { config: bouncerWith({ max_db_connections: '18' }) }), expect: [/^ok pgbouncer-budget: PgBouncer's server connections 18 \(sitelog: max_db_connections 18\) .* = 36 of 37/] },
    { when: "the database's own max_db_connections is 10", then: 'it counts that', facts: tier(13, { databases: sitelogDb({ max_connections: 10 }) }), expect: [/^ok pgbouncer-budget: PgBouncer's server connections 10 /] },
    {
      when: 'two users each have a pool of the database',
      then: 'it counts a pool per user',
      facts: tier(12, { pools: [...bouncerPools, { ...bouncerPools.find((p) => p.database === 'sitelog')!, user: 'reporting' }] }),
      expect: [/^FAIL pgbouncer-budget: budget exceeded: PgBouncer's server connections 40 \(sitelog: 2 pools × pool_size \+ reserve_pool 20\)/],
    },
    {
      when: 'two of its databases lead to the same PostgreSQL',
      then: 'it adds them up, and the fix shares what fits',
      facts: tier(12, { databases: [...bouncerDatabases, { ...bouncerDatabases.find((d) => d.name === 'sitelog')!, name: 'sitelog_ro', pool_size: 2, reserve_pool: 0 }] }),
      expect: [/^FAIL pgbouncer-budget: budget exceeded: PgBouncer's server connections 22 \(sitelog: pool_size \+ reserve_pool 20, sitelog_ro: pool_size \+ reserve_pool 2\) .* \| fix: max_db_connections on sitelog, sitelog_ro adding up to 20 in pgbouncer\.ini/],
    },
    { when: "the liveness connections go through PgBouncer (no direct URL)", then: 'they are not counted twice', facts: tier(13, { setApart: false }), expect: [/^ok pgbouncer-budget: .* \+ 13 live instances × 0 liveness connection .* = 25 of 37/] },
    {
      when: 'the liveness connections and the reserve alone exceed max_connections',
      then: 'it fails asking for max_connections',
      facts: facts({ database: reachable({ settings: pgSettings.map((r) => (r.name === 'max_connections' ? { ...r, setting: '15' } : r)), liveInstances: 12 }), pooler: bouncer() }),
      expect: [/^FAIL pgbouncer-budget: .* = 37 of 12 connections .* \| fix: raise max_connections to 40: the liveness connections and the reserve alone take 17$/],
    },
    { when: 'PgBouncer does not answer', then: 'it does not apply', facts: facts({ pooler: { state: 'unreachable', setApart: true, console: { host: 'h', port: 6432, database: 'pgbouncer' }, error: 'x' } }), expect: [] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable, pooler: bouncer() }), expect: [] },
  ]);
});

describe('pgbouncer-clients', () => {
  table(pgbouncerClients, [
    {
      when: `12 instances live, DB_POOL_MAX unset (${DEFAULT_POOL})`,
      then: "it fails: this host's pool taken for every host passes max_client_conn 100",
      facts: tier(12),
      expect: [
        new RegExp(
          `^FAIL pgbouncer-clients: too many clients: 12 live instances × ${DEFAULT_POOL} \\(this host's DB_POOL_MAX, taken for every host\\) = ${12 * DEFAULT_POOL} clients of max_client_conn 100 \\| fix: max_client_conn = ${12 * DEFAULT_POOL} or more in pgbouncer\\.ini, or DB_POOL_MAX ≤ 8$`,
        ),
      ],
    },
    { when: 'DB_POOL_MAX is 8', then: 'it passes', facts: tier(12, {}, { DB_POOL_MAX: '8' }), expect: [/^ok pgbouncer-clients: 12 live instances × 8 .* = 96 clients of max_client_conn 100$/] },
    { when: 'max_client_conn is 500', then: 'it passes', facts: tier(12, { config: bouncerWith({ max_client_conn: '500' }) }), expect: [/^ok pgbouncer-clients: .* of max_client_conn 500$/] },
    {
      when: 'the liveness connections go through PgBouncer too',
      then: 'it counts them',
      facts: tier(12, { setApart: false }, { DB_POOL_MAX: '7' }),
      expect: [/^ok pgbouncer-clients: 12 live instances × 8 \(this host's DB_POOL_MAX \+ liveness, taken for every host\) = 96 /],
    },
    { when: 'DATABASE_URL is PostgreSQL itself', then: 'it does not apply', facts: facts(), expect: [] },
  ]);
});

describe('pgbouncer-waits', () => {
  table(pgbouncerWaits, [
    { when: 'no client waits', then: 'it passes', facts: tier(12), expect: [/^ok pgbouncer-waits: no client waits for a server connection \(1 pool\)$/] },
    {
      when: "8 clients wait (research §3's sample under load)",
      then: 'it warns naming the pool',
      facts: tier(12, { pools: sitelogPool({ cl_active: 4, cl_waiting: 8, sv_active: 4, maxwait: 0, maxwait_us: 597045 }) }),
      expect: [/^WARN pgbouncer-waits: clients queue in PgBouncer: sitelog\/sitelog: 8 waiting, longest 597 ms, 4 server connections busy \| fix: raise default_pool_size/],
    },
    { when: 'one client has waited 1.5 s', then: 'it warns', facts: tier(12, { pools: sitelogPool({ cl_waiting: 0, maxwait: 1, maxwait_us: 500000 }) }), expect: [/^WARN pgbouncer-waits: .* 0 waiting, longest 1500 ms/] },
    { when: 'the longest wait is just under a second', then: 'it passes', facts: tier(12, { pools: sitelogPool({ maxwait: 0, maxwait_us: 999000 }) }), expect: [/^ok pgbouncer-waits:/] },
    { when: "clients wait on the admin console's own pool", then: 'it passes', facts: tier(12, { pools: bouncerPools.map((p) => ({ ...p, cl_waiting: p.database === 'pgbouncer' ? 3 : 0 })) }), expect: [/^ok pgbouncer-waits:/] },
  ]);
});

describe('session-pooling', () => {
  table(sessionPooling, [
    { when: 'transaction mode and DATABASE_DIRECT_URL set apart', then: 'it passes', facts: tier(12), expect: [/^ok session-pooling: PgBouncer pools sitelog in transaction mode; liveness locks and migrations go to DATABASE_DIRECT_URL$/] },
    {
      when: 'transaction mode and DATABASE_DIRECT_URL not set apart',
      then: 'it fails',
      facts: tier(12, { setApart: false }),
      expect: [/^FAIL session-pooling: PgBouncer pools sitelog in transaction mode, and DATABASE_DIRECT_URL is not set apart: .* \| fix: DATABASE_DIRECT_URL=<PostgreSQL's own URL>/],
    },
    { when: "the database's own pool_mode is session", then: 'it passes without a direct URL', facts: tier(12, { setApart: false, databases: sitelogDb({ pool_mode: 'session' }) }), expect: [/^ok session-pooling: .* in session mode; .* keep their session$/] },
    { when: 'pool_mode is statement', then: 'it fails', facts: tier(12, { config: bouncerWith({ pool_mode: 'statement' }) }), expect: [/^FAIL session-pooling: PgBouncer pools sitelog in statement mode: no transaction can work \| fix: pool_mode = transaction/] },
    { when: 'DATABASE_URL is PostgreSQL itself', then: 'it does not apply', facts: facts(), expect: [] },
  ]);
});

describe('session-settings', () => {
  const sound = bouncer() as Bouncer;
  const soundSettings = sound.session.state === 'answered' ? sound.session.settings : [];
  /** The sample's answer with `names` at 0; `missing` leaves them out of it. */
  const zero = (names: string[], missing = false) =>
    bouncer({
      session: { state: 'answered', role: 'sitelog', database: 'sitelog', settings: soundSettings.flatMap((s) => (!names.includes(s.name) ? [s] : missing ? [] : [{ ...s, setting: '0' }])) },
    });
  table(sessionSettings, [
    { when: 'the timeouts are role defaults', then: 'it passes', facts: tier(12), expect: [/^ok session-settings: through PgBouncer, statement_timeout, lock_timeout, idle_in_transaction_session_timeout are set$/] },
    {
      when: 'statement_timeout and lock_timeout are 0',
      then: "it fails giving the ALTER ROLE with the app's values",
      facts: facts({ pooler: zero(['statement_timeout', 'lock_timeout']) }),
      expect: [
        new RegExp(
          `^FAIL session-settings: through PgBouncer statement_timeout, lock_timeout are 0 \\(no limit\\): .* \\| fix: the instances set them at their start behind PgBouncer \\(reload web\\), or: ALTER ROLE "sitelog" IN DATABASE "sitelog" SET statement_timeout = ${STATEMENT_TIMEOUT_MS}; ALTER ROLE "sitelog" IN DATABASE "sitelog" SET lock_timeout = ${LOCK_WAIT_MS}; then RECONNECT`,
        ),
      ],
    },
    {
      when: 'ignore_startup_parameters drops statement_timeout',
      then: 'it says so',
      facts: facts({ pooler: { ...zero(['statement_timeout']), config: bouncerWith({ ignore_startup_parameters: 'extra_float_digits, statement_timeout' }) } as PoolerFacts }),
      expect: [/^FAIL session-settings: through PgBouncer statement_timeout is 0 .* \(ignore_startup_parameters drops statement_timeout silently\)/],
    },
    { when: 'a setting is missing from the answer', then: 'it counts as 0', facts: facts({ pooler: zero(['lock_timeout'], true) }), expect: [/^FAIL session-settings: through PgBouncer lock_timeout is 0/] },
    {
      when: 'a client of DATABASE_URL fails',
      then: 'it fails with the error',
      facts: tier(12, { session: { state: 'failed', error: 'unsupported startup parameter: statement_timeout' } }),
      expect: [/^FAIL session-settings: a client of DATABASE_URL through PgBouncer fails: unsupported startup parameter: statement_timeout \|/],
    },
    { when: 'DATABASE_URL is PostgreSQL itself', then: 'it does not apply', facts: facts(), expect: [] },
  ]);
});

describe('pgbouncer-outage', () => {
  const acquireS = POOL_ACQUIRE_MS / 1000;
  table(pgbouncerOutage, [
    { when: 'server_login_retry is 1 and query_wait_timeout 3', then: 'it passes', facts: tier(12, { config: bouncerWith({ server_login_retry: '1', query_wait_timeout: '3' }) }), expect: [/^ok pgbouncer-outage: server_login_retry 1 s, query_wait_timeout 3 s: /] },
    {
      when: "both are PgBouncer's defaults",
      then: 'it warns naming both',
      facts: tier(12, { config: bouncerWith({ server_login_retry: '15', query_wait_timeout: '120' }) }),
      expect: [
        new RegExp(
          `^WARN pgbouncer-outage: server_login_retry 15 s \\(PgBouncer's default\\): .*; query_wait_timeout 120 s \\(PgBouncer's default\\): .* \\| fix: server_login_retry = 1 and query_wait_timeout = ${acquireS} `,
        ),
      ],
    },
    { when: 'query_wait_timeout is 0 (forever)', then: 'it warns', facts: tier(12, { config: bouncerWith({ server_login_retry: '1', query_wait_timeout: '0' }) }), expect: [/^WARN pgbouncer-outage: query_wait_timeout 0 s: while PostgreSQL is away, queries hang/] },
    { when: 'DATABASE_URL is PostgreSQL itself', then: 'it does not apply', facts: facts(), expect: [] },
  ]);
});

describe('replica-budget', () => {
  const replica = { host: '10.0.0.6', port: 5432, database: 'sitelog' };
  const sized = (max: number): ReplicaFacts => ({ replica, state: 'reachable', inRecovery: true, lagMs: 0, lagBytes: 0, connections: { max, reserved: 3 } });
  table(replicaBudget, [
    { when: 'no DATABASE_READ_URLS', then: 'it does not apply', facts: tier(12), expect: [] },
    {
      when: '12 instances of pool 4 read from a replica of 70',
      then: 'it passes counting the lag connections',
      facts: tier(12, {}, { DB_POOL_MAX: '4' }),
      replicas: [sized(70)],
      expect: [/^ok replica-budget: 12 live instances × \(DB_POOL_MAX 4 \+ 1 for the lag, .*\) \+ reserve 5 = 65 of 67 connections on replica 10\.0\.0\.6:5432\/sitelog/],
    },
    {
      when: 'the same instances read from a replica sized like a primary of 40',
      then: 'it fails giving the max_connections that fits',
      facts: tier(12, {}, { DB_POOL_MAX: '4' }),
      replicas: [sized(40)],
      expect: [/^FAIL replica-budget: too many connections: .* = 65 of 37 connections .* \| fix: max_connections = 68 or more on the replica/],
    },
  ].map(({ replicas, ...row }) => ({ ...row, facts: replicas ? { ...row.facts, replicas } : row.facts })));
});

describe('replica-lag', () => {
  const replica = { host: '10.0.0.6', port: 5432, database: 'sitelog' };
  const lagging = (lagMs: number | null, lagBytes: number | null = 8192): ReplicaFacts => ({ replica, state: 'reachable', inRecovery: true, lagMs, lagBytes });
  const bound = REPLICA_MAX_LAG_MS / 1000;
  table(replicaLag, [
    { when: 'no DATABASE_READ_URLS', then: 'it does not apply', facts: facts(), expect: [] },
    { when: 'the replica is 0.2 s behind', then: 'it passes', facts: facts({ replicas: [lagging(200)] }), expect: [/^ok replica-lag: replica 10\.0\.0\.6:5432\/sitelog is 0\.2 s behind \(8192 bytes received not yet replayed\)$/] },
    { when: 'the replica is exactly at the bound', then: 'it passes', facts: facts({ replicas: [lagging(REPLICA_MAX_LAG_MS)] }), expect: [/^ok replica-lag:/] },
    {
      when: 'the replica is 12.5 s behind',
      then: 'it fails naming the bound',
      facts: facts({ replicas: [lagging(12_500)] }),
      expect: [new RegExp(`^FAIL replica-lag: replica 10\\.0\\.0\\.6:5432/sitelog is 12\\.5 s behind .*, over the bound of ${bound} s \\| fix: `)],
    },
    {
      when: 'a replica does not answer',
      then: 'it fails for that one only',
      facts: facts({ replicas: [lagging(0), { replica: { ...replica, host: '10.0.0.7' }, state: 'unreachable', error: 'no answer within 2000 ms' }] }),
      expect: [/^ok replica-lag: replica 10\.0\.0\.6/, /^FAIL replica-lag: replica 10\.0\.0\.7:5432\/sitelog does not answer: no answer within 2000 ms \| fix: start it, or take it out of DATABASE_READ_URLS/],
    },
    { when: 'a read URL leads to a primary', then: 'it fails: no replica', facts: facts({ replicas: [{ replica, state: 'reachable', inRecovery: false, lagMs: null, lagBytes: null }] }), expect: [/^FAIL replica-lag: 10\.0\.0\.6:5432\/sitelog is not in recovery: it is no replica/] },
    { when: "the replica's lag is unknown", then: 'it fails', facts: facts({ replicas: [lagging(null)] }), expect: [/^FAIL replica-lag: replica 10\.0\.0\.6:5432\/sitelog has replayed no transaction .* \| fix: check that it streams/] },
  ]);
});

describe('database URLs', () => {
  const [app] = web();
  const env = (vars: Record<string, string>) => web({}, vars)[0];
  const DIRECT = 'postgres://sitelog:s3cret@10.0.0.5:5432/sitelog';
  const POOLED = 'postgres://sitelog:s3cret@127.0.0.1:6432/sitelog';
  test('when a URL is shown, then it is host:port/database, without its password', () => {
    assert.equal(shown(endpoint(DIRECT)), '10.0.0.5:5432/sitelog');
    assert.equal(shown(endpoint('postgresql://u:p@db.internal/app%20log')), 'db.internal:5432/app log');
  });
  test('when DATABASE_DIRECT_URL is unset or equals DATABASE_URL, then it is not set apart', () => {
    assert.deepEqual(directUrlOf(app, POOLED), { url: POOLED, setApart: false });
    assert.deepEqual(directUrlOf(env({ DATABASE_DIRECT_URL: POOLED }), POOLED), { url: POOLED, setApart: false });
  });
  test('when DATABASE_DIRECT_URL differs from DATABASE_URL, then it is set apart', () => {
    assert.deepEqual(directUrlOf(env({ DATABASE_DIRECT_URL: DIRECT }), POOLED), { url: DIRECT, setApart: true });
  });
  test('when DATABASE_READ_URLS lists replicas, then they are read as config.ts reads them', () => {
    assert.deepEqual(readUrlsOf(app), []);
    assert.deepEqual(readUrlsOf(env({ DATABASE_READ_URLS: ` ${DIRECT}, ${POOLED},` })), [DIRECT, POOLED]);
    assert.deepEqual(readUrlsOf(env({ DATABASE_READ_URLS: 'mysql://x/y' })), []);
  });
});

describe('migrations', () => {
  table(migrations, [
    { when: 'every migration is applied', then: 'it passes', facts: facts(), expect: [/^ok migrations: every migration of this build is applied$/] },
    { when: 'two are pending', then: 'it fails naming them', facts: facts({ database: reachable({ pending: ['0004-a', '0005-b'] }) }), expect: [/^FAIL migrations: not applied: 0004-a, 0005-b \| fix: npm run migrate/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
  ]);
});

describe('clock', () => {
  const sample = (skewMs: number, roundTripMs = 20): ClockSample => ({ sentMs: 1_000, serverMs: 1_000 + roundTripMs / 2 + skewMs, receivedMs: 1_000 + roundTripMs });
  for (const { when, samples, skew } of [
    { when: 'one sample', samples: [sample(2)], skew: 2 },
    { when: 'a slow sample beside a quick one', samples: [sample(900, 2_000), sample(-3, 4)], skew: -3 },
  ]) {
    test(`when ${when}, then the clock skew is ${skew} ms`, () => assert.equal(clockSkewMs(samples), skew));
  }
  table(clock, [
    { when: 'the clocks agree', then: 'it passes', facts: facts(), expect: [/^ok clock: this host and PostgreSQL agree within 2 ms$/] },
    { when: 'the skew equals the limit', then: 'it passes', facts: facts({ database: reachable({ clock: [sample(-1_000)] }) }), expect: [/^ok clock: .* within 1000 ms$/] },
    { when: 'this host is 120 s ahead', then: 'it fails', facts: facts({ database: reachable({ clock: [sample(-120_000)] }) }), expect: [/^FAIL clock: this host's clock is 120000 ms off PostgreSQL's: .* \| fix: run NTP/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
  ]);
});

describe('nginx-config', () => {
  table(nginxConfig, [
    { when: 'nginx -T passes', then: 'it passes naming the config', facts: facts(), expect: [/^ok nginx-config: nginx -t passes \(\/home\/sitelog\/sitelog\/\.data\/nginx\/local\.conf\)$/] },
    { when: 'nginx -T passes on the system config', then: 'it passes', facts: facts({ nginx: nginxPassing(nginxT) }), expect: [/^ok nginx-config: nginx -t passes$/] },
    {
      when: 'a directive is misspelt',
      then: "it fails with nginx's [emerg] line",
      facts: facts({ nginx: nginxFailing(fixture('nginx-T-unknown-directive.stderr.txt')) }),
      expect: [/^FAIL nginx-config: nginx -t fails: unknown directive "proxy_pas" in \/home\/sitelog\/sitelog\/\.data\/nginx\/sitelog-site\.conf:74 \| fix: fix the file it names/],
    },
    {
      when: 'nginx -T is denied to a user other than root',
      then: 'it fails asking for root',
      facts: facts({ nginx: nginxFailing(fixture('nginx-T-not-root.stderr.txt')) }),
      expect: [/^FAIL nginx-config: nginx -t cannot run as this user \(open\(\) "\/run\/nginx\.pid" failed \(13: Permission denied\)\) \| fix: run the doctor as root/],
    },
    { when: 'nginx -T is denied to root', then: 'it fails as a broken config', facts: facts({ nginx: nginxFailing(fixture('nginx-T-not-root.stderr.txt'), true) }), expect: [/^FAIL nginx-config: nginx -t fails: open\(\)/] },
    { when: 'nginx fails without an [emerg] line', then: 'it fails with all nginx said', facts: facts({ nginx: nginxFailing('  killed\n') }), expect: [/^FAIL nginx-config: nginx -t fails: killed \|/] },
    { when: 'nginx is not installed', then: 'it fails', facts: facts({ nginx: { installed: false } }), expect: [/^FAIL nginx-config: no nginx binary on this host \| fix: apt-get install nginx/] },
  ]);
});

describe('keepalive-order', () => {
  const withTimeout = (replacement: string) => nginxPassing(nginxT.replace('    keepalive_timeout 30s;\n    keepalive_requests', `${replacement}    keepalive_requests`));
  table(keepaliveOrder, [
    { when: 'the upstream keeps idle connections 30 s', then: 'it passes', facts: facts(), expect: [/^ok keepalive-order: nginx drops idle upstream connections after 30 s, before the app does \(65 s\)$/] },
    { when: 'the upstream keeps them 90 s', then: 'it fails', facts: facts({ nginx: withTimeout('    keepalive_timeout 90s;\n') }), expect: [/^FAIL keepalive-order: nginx keeps idle upstream connections 90 s, the app 65 s: .* \| fix: keepalive_timeout below 65s/] },
    { when: 'the upstream keeps them 1m5s, as long as the app', then: 'it fails', facts: facts({ nginx: withTimeout('    keepalive_timeout 1m5s;\n') }), expect: [/^FAIL keepalive-order: nginx keeps idle upstream connections 65 s/] },
    { when: 'the upstream sets no keepalive_timeout', then: "it passes on nginx's default of 60 s", facts: facts({ nginx: withTimeout('') }), expect: [/^ok keepalive-order: .* after 60 s/] },
    { when: 'there is no upstream sitelog_web', then: 'it fails', facts: facts({ nginx: nginxPassing(nginxT.replace(/sitelog_web/g, 'other')) }), expect: [/^FAIL keepalive-order: no upstream sitelog_web/] },
    { when: 'nginx -T fails', then: 'it does not apply', facts: facts({ nginx: nginxFailing('') }), expect: [] },
    { when: 'nginx is not installed', then: 'it does not apply', facts: facts({ nginx: { installed: false } }), expect: [] },
  ]);
  for (const [text, ms] of [['30', 30_000], ['30s', 30_000], ['500ms', 500], ['1m', 60_000], ['1m30s', 90_000], ['1h', 3_600_000]] as const) {
    test(`when nginx says ${text}, then it means ${ms} ms`, () => assert.equal(nginxDurationMs(text), ms));
  }
});

describe('log-disk', () => {
  table(logDisk, [
    { when: '20 GB are free', then: 'it passes', facts: facts(), expect: [/^ok log-disk: 20480 MB free for logs in \/home\/sitelog\/\.pm2\/logs$/] },
    { when: 'exactly the minimum is free', then: 'it passes', facts: facts({ disk: { dir: '/logs', freeMb: 256 } }), expect: [/^ok log-disk:/] },
    { when: '100 MB are free', then: 'it fails', facts: facts({ disk: { dir: '/logs', freeMb: 100 } }), expect: [/^FAIL log-disk: 100 MB free for logs in \/logs \(below 256 MB\): .* \| fix: free space/] },
  ]);
});

describe('all checks', () => {
  const ids = (findings: Finding[]) => findings.map((f) => `${f.ok ? 'ok' : f.warning ? 'WARN' : 'FAIL'} ${f.id}`);
  test('when the stack is sound, then every check passes, in the order the doctor prints', () => {
    assert.equal(checks.length, 22);
    assert.deepEqual(ids(judge(facts())), [
      ...['cluster-mode', 'wait-ready', 'listen-timeout', 'kill-timeout', 'instances-online', 'trusted-proxy', 'database'],
      ...['pool-budget', 'migrations', 'clock', 'nginx-config', 'keepalive-order', 'log-disk'],
    ].map((id) => `ok ${id}`));
  });
  test('when PgBouncer and a replica are sound, then their checks pass too, in order', () => {
    const replica = { host: '10.0.0.6', port: 5432, database: 'sitelog' };
    const replicas: ReplicaFacts[] = [{ replica, state: 'reachable', inRecovery: true, lagMs: 0, lagBytes: 0, connections: { max: 120, reserved: 3 } }];
    const sound = tier(12, { config: bouncerWith({ server_login_retry: '1', query_wait_timeout: '3' }) }, { DB_POOL_MAX: '8' });
    assert.deepEqual(ids(judge({ ...sound, replicas })), [
      ...['cluster-mode', 'wait-ready', 'listen-timeout', 'kill-timeout', 'instances-online', 'trusted-proxy', 'database'],
      ...['pgbouncer', 'pgbouncer-budget', 'pgbouncer-clients', 'pgbouncer-waits', 'session-pooling', 'session-settings', 'pgbouncer-outage'],
      ...['migrations', 'clock', 'replica-budget', 'replica-lag', 'nginx-config', 'keepalive-order', 'log-disk'],
    ].map((id) => `ok ${id}`));
  });
  test('when PgBouncer does not answer, then only the pgbouncer check speaks for it', () => {
    const pooler: PoolerFacts = { state: 'unreachable', setApart: true, console: { host: '127.0.0.1', port: 6432, database: 'pgbouncer' }, error: 'connect ECONNREFUSED 127.0.0.1:6432' };
    assert.deepEqual(ids(judge(facts({ pooler }))).filter((l) => !l.startsWith('ok')), ['FAIL pgbouncer']);
  });
  test('when PostgreSQL and nginx fail, then only their first checks speak for them', () => {
    const findings = judge(facts({ database: unreachable, nginx: nginxFailing('') }));
    assert.deepEqual(ids(findings).filter((l) => l.startsWith('FAIL')), ['FAIL database', 'FAIL nginx-config']);
    assert.equal(findings.length, 9);
  });
});
