import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { envFields, proxyTrustProblem, withLocalSecrets } from '../config.js';
import { clientFor, CONNECTION_RESERVE, CONNECTIONS_BESIDE_POOL } from '../db/database.js';
import { runOn, type Run, type Statement } from '../db/lean.js';
import { pendingMigrations } from '../db/migrate.js';
import { liveCount } from '../instances/queries.js';
import { KEEP_ALIVE_MS, SHUTDOWN_MS, STARTUP_DEADLINE_MS } from '../timeouts.js';
import {
  collectPooler,
  collectReplicas,
  directUrlOf,
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
  type PoolerFacts,
  type ReplicaFacts,
} from './doctor-database.js';
import { asConfig, envOf, fail, ok, type Finding, type Pm2App } from './findings.js';
import { findNginx } from './nginx.js';
import { daemonRuns, listAll, pm2Home } from './pm2.js';
import { isWebApp } from './stack.js';

// `npm run doctor`: checks a running deployment (the PM2 of PM2_HOME, the database and nginx it
// uses) against the traps of this layout, and prints what to fix. Exit 1 when something is wrong
// (a warning alone does not).
// Read-only: it changes nothing, and never prints a secret. It first collects facts, then judges
// them with the checks below, pure functions of those facts.

const exec = promisify(execFile);

export type { Finding, Pm2App };

export type Pm2Facts = { home: string; daemon: boolean; processes: Pm2App[] };
export type PgSetting = { name: string; setting: string };
export type ClockSample = { sentMs: number; serverMs: number; receivedMs: number };
export type DatabaseFacts =
  | { state: 'no-url' }
  | { state: 'unreachable'; error: string }
  | {
      state: 'reachable';
      settings: PgSetting[];
      pending: string[];
      clock: ClockSample[];
      /** Live instances of every host: each holds a liveness connection. */
      liveInstances: number;
      /** PostgreSQL's own address for this connection (NULL over a Unix socket). */
      address: string | null;
    };
export type NginxTest = { passed: true; stdout: string } | { passed: false; stderr: string };
export type NginxFacts = { installed: false } | { installed: true; config: string | undefined; asRoot: boolean; test: NginxTest };

export type Facts = {
  /** The web app's processes (web, or web-blue and web-green): never empty once the pm2 check passes. */
  web: [Pm2App, ...Pm2App[]];
  /** PostgreSQL itself: through DATABASE_DIRECT_URL when it is set apart from DATABASE_URL. */
  database: DatabaseFacts;
  pooler: PoolerFacts;
  replicas: ReplicaFacts[];
  nginx: NginxFacts;
  disk: { dir: string; freeMb: number };
  limits: { minFreeMb: number; maxSkewMs: number };
};

export type Check = (facts: Facts) => Finding | Finding[];

// ---- checks, in the order they print ----

/** Runs before the others: without a daemon and a web app there is nothing else to collect. */
export function pm2({ home, daemon, processes }: Pm2Facts): Finding[] {
  if (!daemon) return [fail('pm2', `no PM2 daemon runs for PM2_HOME=${home}`, 'npm start, or pm2 start ecosystem.config.js')];
  if (!processes.some(isWebApp)) return [fail('pm2', 'PM2 runs no web app in the sitelog namespace', 'pm2 start ecosystem.config.js')];
  return [];
}

export function clusterMode({ web }: Facts): Finding {
  const mode = web[0].pm2_env.exec_mode;
  if (mode === 'cluster_mode') return ok('cluster-mode', `web runs in cluster mode (${web.length} instances)`);
  const detail = `web runs in ${mode ?? 'fork'} mode: its instances cannot share PORT behind one upstream`;
  return fail('cluster-mode', detail, "exec_mode: 'cluster' in ecosystem.config.js");
}

export function waitReady({ web }: Facts): Finding {
  if (web[0].pm2_env.wait_ready === true) {
    return ok('wait-ready', 'wait_ready is on: PM2 routes to an instance only after it reported ready');
  }
  const detail = 'wait_ready is off: PM2 counts an instance as up before its database and migrations are, so a reload drops requests';
  return fail('wait-ready', detail, 'wait_ready: true in ecosystem.config.js');
}

export function listenTimeout({ web }: Facts): Finding {
  const timeout = web[0].pm2_env.listen_timeout;
  if ((timeout ?? 0) > STARTUP_DEADLINE_MS) {
    return ok('listen-timeout', `listen_timeout ${timeout} ms is above the startup deadline (${STARTUP_DEADLINE_MS} ms)`);
  }
  const detail = `listen_timeout ${timeout ?? 'unset'} ms is not above the startup deadline (${STARTUP_DEADLINE_MS} ms): PM2 stops waiting for an instance still starting (the database may be away), and a reload then stops the old instance before the new one is ready`;
  return fail('listen-timeout', detail, `listen_timeout above ${STARTUP_DEADLINE_MS} (ecosystem.config.js sets STARTUP_DEADLINE_MS + 15000)`);
}

export function killTimeout({ web }: Facts): Finding {
  const timeout = web[0].pm2_env.kill_timeout;
  if ((timeout ?? 0) > SHUTDOWN_MS) {
    return ok('kill-timeout', `kill_timeout ${timeout} ms is above the shutdown bound (${SHUTDOWN_MS} ms)`);
  }
  const detail = `kill_timeout ${timeout ?? 'unset'} ms is not above the shutdown bound (${SHUTDOWN_MS} ms): PM2 kills instances mid-drain and in-flight requests fail`;
  return fail('kill-timeout', detail, `kill_timeout above ${SHUTDOWN_MS} (ecosystem.config.js sets SHUTDOWN_MS + 2000)`);
}

export function instancesOnline({ web }: Facts): Finding {
  const online = web.filter((p) => p.pm2_env.status === 'online').length;
  const detail = `${online} of ${web.length} web instances online`;
  if (online === web.length) return ok('instances-online', detail);
  return fail('instances-online', detail, 'npx pm2 logs web --lines 50 tells why the others stopped');
}

export function trustedProxy({ web }: Facts): Finding {
  const bind = asConfig(envFields.BIND_ADDRESS, envOf(web[0], 'BIND_ADDRESS'));
  const trust = asConfig(envFields.TRUST_PROXY, envOf(web[0], 'TRUST_PROXY'));
  const problem = proxyTrustProblem(bind, trust);
  if (problem) return fail('trusted-proxy', problem, "TRUST_PROXY=<the nginx host's address> in web's environment");
  const who = trust.join(', ');
  return ok('trusted-proxy', `web listens on ${bind} and believes X-Forwarded-For and X-Request-Id from ${who} only`);
}

export function database({ database: db }: Facts): Finding {
  switch (db.state) {
    case 'no-url':
      return fail('database', 'web has no DATABASE_URL in its environment', 'set DATABASE_URL for web');
    case 'unreachable':
      return fail('database', `PostgreSQL does not answer: ${db.error}`, 'start PostgreSQL, or fix DATABASE_URL');
    case 'reachable':
      return ok('database', 'PostgreSQL answers');
  }
}

/**
 * The budget of db/database.ts's checkPoolBudget, for the instances PM2 runs now, not only those
 * configured. Behind PgBouncer the pools do not reach PostgreSQL: pgbouncer-budget counts instead.
 */
export function poolBudget({ web, database: db, pooler }: Facts): Finding | Finding[] {
  if (db.state !== 'reachable' || pooler.state !== 'none') return [];
  const setting = (name: string) => db.settings.find((row) => row.name === name)?.setting;
  const [max, reserved] = [setting('max_connections'), setting('superuser_reserved_connections')];
  // PM2 may run more than WEB_INSTANCES after a `pm2 scale`; with 'max' it runs one per CPU, all in web
  const configured = asConfig(envFields.WEB_INSTANCES, envOf(web[0], 'WEB_INSTANCES'));
  const instances = Math.max(web.length, configured === 'max' ? 0 : configured);
  const poolMax = asConfig(envFields.DB_POOL_MAX, envOf(web[0], 'DB_POOL_MAX'));
  const needed = instances * (poolMax + CONNECTIONS_BESIDE_POOL) + CONNECTION_RESERVE;
  const available = Number(max) - Number(reserved);
  if (needed <= available) return ok('pool-budget', `${instances} instances × pool ${poolMax} need ${needed} of ${available} connections`);
  const detail =
    `pool budget exceeded: instances ${instances} × (DB_POOL_MAX ${poolMax} + ${CONNECTIONS_BESIDE_POOL}) + reserve ${CONNECTION_RESERVE} = ${needed} connections, ` +
    `but the server allows ${available} (max_connections ${max} − superuser_reserved_connections ${reserved}); lower DB_POOL_MAX or raise max_connections`;
  return fail('pool-budget', detail, 'lower DB_POOL_MAX or the instance count, or raise max_connections');
}

export function migrations({ database: db }: Facts): Finding | Finding[] {
  if (db.state !== 'reachable') return [];
  if (db.pending.length === 0) return ok('migrations', 'every migration of this build is applied');
  return fail('migrations', `not applied: ${db.pending.join(', ')}`, 'npm run migrate (deploy/deploy.sh runs it before the reload)');
}

/** PostgreSQL's clock minus this host's, from the sample with the shortest round trip: the least uncertain. */
export function clockSkewMs(samples: ClockSample[]): number {
  const roundTrip = (s: ClockSample) => s.receivedMs - s.sentMs;
  const best = samples.reduce((a, b) => (roundTrip(b) < roundTrip(a) ? b : a));
  return best.serverMs - (best.sentMs + best.receivedMs) / 2;
}

export function clock({ database: db, limits }: Facts): Finding | Finding[] {
  if (db.state !== 'reachable') return [];
  const skew = clockSkewMs(db.clock);
  if (Math.abs(skew) <= limits.maxSkewMs) return ok('clock', `this host and PostgreSQL agree within ${Math.round(Math.abs(skew))} ms`);
  const detail = `this host's clock is ${Math.round(-skew)} ms off PostgreSQL's: log times and the console's "last seen" lie`;
  return fail('clock', detail, 'run NTP (systemd-timesyncd or chrony) on every host');
}

/** nginx's first [emerg] line without its time and pid, else all it said. */
function nginxError(stderr: string): string {
  const line = stderr.split('\n').find((l) => l.includes('[emerg]')) ?? stderr.trim();
  return line.replace(/^.*\[emerg\] \d+#\d+: /, '');
}

export function nginxConfig({ nginx }: Facts): Finding {
  if (!nginx.installed) return fail('nginx-config', 'no nginx binary on this host', 'apt-get install nginx (deploy/provision.sh does)');
  if (nginx.test.passed) return ok('nginx-config', `nginx -t passes${nginx.config ? ` (${nginx.config})` : ''}`);
  const error = nginxError(nginx.test.stderr);
  if (/Permission denied/.test(error) && !nginx.asRoot) {
    const fix = 'run the doctor as root: sudo env PM2_HOME=$PM2_HOME npm run doctor';
    return fail('nginx-config', `nginx -t cannot run as this user (${error})`, fix);
  }
  return fail('nginx-config', `nginx -t fails: ${error}`, 'fix the file it names, then nginx -t and nginx -s reload');
}

/** nginx's duration syntax: 30, 30s, 1m, 500ms … in milliseconds. */
export function nginxDurationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)(ms|s|m|h|d)?/g)) total += Number(n) * units[unit ?? 's']!;
  return total;
}

export function keepaliveOrder({ nginx }: Facts): Finding | Finding[] {
  if (!nginx.installed || !nginx.test.passed) return [];
  const upstream = nginx.test.stdout.match(/upstream\s+sitelog_web\s*\{([^}]*)\}/)?.[1];
  if (upstream === undefined) {
    return fail('keepalive-order', 'no upstream sitelog_web in the nginx configuration', 'install the site from nginx/ (deploy/provision.sh)');
  }
  // nginx's default for upstream keepalive_timeout is 60 s
  const idle = nginxDurationMs(upstream.match(/^\s*keepalive_timeout\s+([^;]+);/m)?.[1] ?? '60s');
  const [nginxS, appS] = [idle / 1000, KEEP_ALIVE_MS / 1000];
  if (idle < KEEP_ALIVE_MS) return ok('keepalive-order', `nginx drops idle upstream connections after ${nginxS} s, before the app does (${appS} s)`);
  const detail = `nginx keeps idle upstream connections ${nginxS} s, the app ${appS} s: nginx will send requests on connections the app is closing (502s)`;
  return fail('keepalive-order', detail, `keepalive_timeout below ${appS}s in the upstream block`);
}

export function logDisk({ disk, limits }: Facts): Finding {
  if (disk.freeMb >= limits.minFreeMb) return ok('log-disk', `${disk.freeMb} MB free for logs in ${disk.dir}`);
  const detail = `${disk.freeMb} MB free for logs in ${disk.dir} (below ${limits.minFreeMb} MB): PM2 stops writing logs when the disk fills`;
  return fail('log-disk', detail, 'free space; the logrotate app caps each log at LOG_ROTATE_MAX_SIZE × (LOG_ROTATE_KEEP + 1)');
}

export const checks: Check[] = [
  clusterMode,
  waitReady,
  listenTimeout,
  killTimeout,
  instancesOnline,
  trustedProxy,
  database,
  poolBudget,
  pgbouncer,
  pgbouncerBudget,
  pgbouncerClients,
  pgbouncerWaits,
  sessionPooling,
  sessionSettings,
  pgbouncerOutage,
  migrations,
  clock,
  replicaBudget,
  replicaLag,
  nginxConfig,
  keepaliveOrder,
  logDisk,
];

export const judge = (facts: Facts): Finding[] => checks.flatMap((check) => check(facts));

// ---- facts ----

/** Without a daemon there is nothing to list, and a check must not start one. */
async function collectPm2(env: NodeJS.ProcessEnv): Promise<Pm2Facts> {
  const home = pm2Home(env);
  if (!daemonRuns(home)) return { home, daemon: false, processes: [] };
  const processes = (await listAll(env)).filter((p) => p.pm2_env.namespace === 'sitelog') as Pm2App[];
  return { home, daemon: true, processes };
}

const CLOCK_SAMPLES = 3;

// The doctor's own questions to PostgreSQL (its settings and clock, no table of sitelog's); one
// connection, each statement asked once or three times: unnamed (runOn's `named` false), which also
// passes through PgBouncer in transaction mode.
const SETTINGS: Statement = {
  name: '',
  text: `SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', 'superuser_reserved_connections', 'port')`,
};
const SERVER_ADDRESS: Statement = { name: '', text: 'SELECT host(inet_server_addr()) AS address' };
const NOW: Statement = { name: '', text: 'SELECT now()' };

async function clockSample(run: Run): Promise<ClockSample> {
  const sentMs = Date.now();
  const [row] = await run<{ now: Date }>(NOW, []);
  return { sentMs, serverMs: row!.now.getTime(), receivedMs: Date.now() };
}

async function collectDatabase(url: string | undefined): Promise<DatabaseFacts> {
  if (!url) return { state: 'no-url' };
  const client = clientFor(url, undefined, 'sitelog-doctor', 3_000);
  try {
    await client.connect();
  } catch (err) {
    return { state: 'unreachable', error: (err as Error).message };
  }
  try {
    const run = runOn(client, false);
    const settings = await run<PgSetting>(SETTINGS, []);
    const pending = await pendingMigrations(client);
    const liveInstances = await liveCount(run);
    const [server] = await run<{ address: string | null }>(SERVER_ADDRESS, []);
    const samples: ClockSample[] = [];
    for (let i = 0; i < CLOCK_SAMPLES; i++) samples.push(await clockSample(run));
    return { state: 'reachable', settings, pending, clock: samples, liveInstances, address: server?.address ?? null };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The config the local stack's `proxy` app runs nginx with (its `-c` argument). */
function proxyConfig(processes: Pm2App[]): string | undefined {
  const proxy = processes.find((p) => p.name === 'proxy');
  const args = [proxy?.pm2_env.args ?? []].flat();
  return args.includes('-c') ? args[args.indexOf('-c') + 1] : undefined;
}

async function collectNginx(processes: Pm2App[], configOverride: string | undefined): Promise<NginxFacts> {
  const nginx = findNginx();
  if (!nginx) return { installed: false };
  const config = configOverride ?? proxyConfig(processes);
  const flags = config ? ['-e', 'stderr', '-c', config] : [];
  const facts = { installed: true as const, config, asRoot: process.getuid?.() === 0 };
  // -T tests the configuration like -t and, when it passes, prints all of it for keepalive-order
  try {
    const { stdout } = await exec(nginx, ['-T', ...flags], { maxBuffer: 16 * 1024 * 1024 });
    return { ...facts, test: { passed: true, stdout } };
  } catch (err) {
    return { ...facts, test: { passed: false, stderr: String((err as { stderr?: string }).stderr ?? '') } };
  }
}

function collectDisk(pm2Home: string): Facts['disk'] {
  const dir = path.join(pm2Home, 'logs');
  const stat = fs.statfsSync(fs.existsSync(dir) ? dir : pm2Home);
  return { dir, freeMb: Math.floor((stat.bavail * stat.bsize) / 1048576) };
}

/** web's database: its DATABASE_URL, or on a local stack the embedded server its secrets file names. */
function databaseUrlOf(web: Pm2App): string | undefined {
  const url = envOf(web, 'DATABASE_URL');
  const secrets = envOf(web, 'SECRETS_FILE');
  if (url || !secrets || !fs.existsSync(secrets)) return url;
  return withLocalSecrets({ SECRETS_FILE: secrets, EMBEDDED_PG_PORT: envOf(web, 'EMBEDDED_PG_PORT') })['DATABASE_URL'];
}

/** PostgreSQL (straight, through DATABASE_DIRECT_URL when set apart), PgBouncer in front of it, and the replicas. */
export async function collectDatabaseTier(web: Pm2App): Promise<Pick<Facts, 'database' | 'pooler' | 'replicas'>> {
  const databaseUrl = databaseUrlOf(web);
  const direct = directUrlOf(web, databaseUrl);
  const [database, replicas] = await Promise.all([collectDatabase(direct.url), collectReplicas(readUrlsOf(web))]);
  const postgres = database.state === 'reachable' ? { port: Number(database.settings.find((row) => row.name === 'port')?.setting), address: database.address } : undefined;
  return { database, pooler: await collectPooler({ databaseUrl, direct, postgres }), replicas };
}

const isNonEmpty = <T>(list: T[]): list is [T, ...T[]] => list.length > 0;

export async function diagnose(opts: { env: NodeJS.ProcessEnv; minFreeMb: number; maxSkewMs: number; nginxConfig?: string }): Promise<Finding[]> {
  const pm2Facts = await collectPm2(opts.env);
  const web = pm2Facts.processes.filter(isWebApp);
  const problems = pm2(pm2Facts);
  if (problems.length > 0 || !isNonEmpty(web)) return problems;
  const [tier, nginx] = await Promise.all([collectDatabaseTier(web[0]), collectNginx(pm2Facts.processes, opts.nginxConfig)]);
  const limits = { minFreeMb: opts.minFreeMb, maxSkewMs: opts.maxSkewMs };
  return judge({ web, ...tier, nginx, disk: collectDisk(pm2Facts.home), limits });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'min-free-mb': { type: 'string', default: '256' },
      'max-clock-skew-ms': { type: 'string', default: '1000' },
      'nginx-config': { type: 'string' },
    },
  });
  const minFreeMb = Number(values['min-free-mb']);
  const maxSkewMs = Number(values['max-clock-skew-ms']);
  if (!Number.isFinite(minFreeMb) || minFreeMb < 0 || !Number.isFinite(maxSkewMs) || maxSkewMs < 0) {
    process.stderr.write('doctor: --min-free-mb and --max-clock-skew-ms take non-negative numbers\n');
    process.exit(2);
  }
  const findings = await diagnose({ env: process.env, minFreeMb, maxSkewMs, ...(values['nginx-config'] && { nginxConfig: values['nginx-config'] }) });
  for (const f of findings) {
    process.stdout.write(`${f.ok ? 'ok  ' : f.warning ? 'WARN' : 'FAIL'} ${f.id}: ${f.detail}\n`);
    if (f.fix) process.stdout.write(`     fix: ${f.fix}\n`);
  }
  const count = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;
  const problems = findings.filter((f) => !f.ok && !f.warning).length;
  const warnings = findings.filter((f) => f.warning).length;
  const also = warnings > 0 ? ` (${count(warnings, 'warning')})` : '';
  process.stdout.write(problems === 0 ? `sitelog doctor: all checks pass${also}\n` : `sitelog doctor: ${count(problems, 'problem')}${also}\n`);
  process.exitCode = problems === 0 ? 0 : 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`doctor: ${(err as Error).message}\n`);
    process.exitCode = 2;
  });
}
