import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { checkPoolBudget, clientFor, PoolBudgetError } from '../db/database.js';
import { pendingMigrations } from '../db/migrate.js';
import { DATABASE_WAIT_MS, KEEP_ALIVE_MS, SHUTDOWN_MS } from '../timeouts.js';
import { findNginx } from './nginx.js';
import { isWebApp, listAll, type Pm2Process } from './pm2.js';

// `npm run doctor`: checks a running deployment (the PM2 of PM2_HOME, the database and nginx it
// uses) against the traps of this layout, and prints what to fix. Exit 1 when something is wrong.
// Read-only: it changes nothing, and never prints a secret.

const run = promisify(execFile);

type Finding = { id: string; ok: boolean; detail: string; fix?: string };

type WebProcess = Pm2Process & {
  pm2_env: Pm2Process['pm2_env'] & {
    exec_mode?: string;
    wait_ready?: boolean;
    listen_timeout?: number;
    kill_timeout?: number;
    args?: string[] | string;
    env?: Record<string, string>;
  } & Record<string, unknown>;
};

const ok = (id: string, detail: string): Finding => ({ id, ok: true, detail });
const fail = (id: string, detail: string, fix: string): Finding => ({ id, ok: false, detail, fix });

/** A PM2 daemon answers on PM2_HOME; `pm2 jlist` without one would start one, which a check must not. */
function daemonRunning(pm2Home: string): boolean {
  try {
    process.kill(Number(fs.readFileSync(path.join(pm2Home, 'pm2.pid'), 'utf8')), 0);
    return true;
  } catch {
    return false;
  }
}

function envOf(p: WebProcess, name: string): string | undefined {
  const value = p.pm2_env.env?.[name] ?? p.pm2_env[name];
  return typeof value === 'string' || typeof value === 'number' ? String(value) : undefined;
}

function checkPm2(web: WebProcess[]): Finding[] {
  const env = web[0]!.pm2_env;
  const online = web.filter((p) => p.pm2_env.status === 'online').length;
  return [
    env.exec_mode === 'cluster_mode'
      ? ok('cluster-mode', `web runs in cluster mode (${web.length} instances)`)
      : fail('cluster-mode', `web runs in ${env.exec_mode ?? 'fork'} mode: its instances cannot share PORT behind one upstream`, "exec_mode: 'cluster' in ecosystem.config.js"),
    env.wait_ready === true
      ? ok('wait-ready', 'wait_ready is on: PM2 routes to an instance only after it reported ready')
      : fail('wait-ready', 'wait_ready is off: PM2 counts an instance as up before its database and migrations are, so a reload drops requests', 'wait_ready: true in ecosystem.config.js'),
    (env.listen_timeout ?? 0) > DATABASE_WAIT_MS
      ? ok('listen-timeout', `listen_timeout ${env.listen_timeout} ms is above the database wait (${DATABASE_WAIT_MS} ms)`)
      : fail('listen-timeout', `listen_timeout ${env.listen_timeout ?? 'unset'} ms is not above the database wait (${DATABASE_WAIT_MS} ms): PM2 gives up on an instance still waiting for PostgreSQL and restarts it in a loop`, `listen_timeout above ${DATABASE_WAIT_MS} (ecosystem.config.js sets DATABASE_WAIT_MS + 15000)`),
    (env.kill_timeout ?? 0) > SHUTDOWN_MS
      ? ok('kill-timeout', `kill_timeout ${env.kill_timeout} ms is above the shutdown bound (${SHUTDOWN_MS} ms)`)
      : fail('kill-timeout', `kill_timeout ${env.kill_timeout ?? 'unset'} ms is not above the shutdown bound (${SHUTDOWN_MS} ms): PM2 kills instances mid-drain and in-flight requests fail`, `kill_timeout above ${SHUTDOWN_MS} (ecosystem.config.js sets SHUTDOWN_MS + 2000)`),
    online === web.length
      ? ok('instances-online', `${online} of ${web.length} web instances online`)
      : fail('instances-online', `${online} of ${web.length} web instances online`, 'npx pm2 logs web --lines 50 tells why the others stopped'),
  ];
}

async function checkDatabase(web: WebProcess[], maxSkewMs: number): Promise<Finding[]> {
  const url = envOf(web[0]!, 'DATABASE_URL');
  if (!url) return [fail('database', 'web has no DATABASE_URL in its environment', 'set DATABASE_URL for web')];
  const client = clientFor(url, undefined, 'sitelog-doctor', 3_000);
  try {
    await client.connect();
  } catch (err) {
    return [fail('database', `PostgreSQL does not answer: ${(err as Error).message}`, 'start PostgreSQL, or fix DATABASE_URL')];
  }
  try {
    const findings = [ok('database', 'PostgreSQL answers')];
    // the instances that can run at once: PM2 may hold more than WEB_INSTANCES after a `pm2 scale`
    const instances = Math.max(web.length, Number(envOf(web[0]!, 'WEB_INSTANCES')) || 0);
    const poolMax = Number(envOf(web[0]!, 'DB_POOL_MAX') ?? 10);
    try {
      const { needed, available } = await checkPoolBudget(client, { instances, poolMax });
      findings.push(ok('pool-budget', `${instances} instances × pool ${poolMax} need ${needed} of ${available} connections`));
    } catch (err) {
      if (!(err instanceof PoolBudgetError)) throw err;
      findings.push(fail('pool-budget', err.message.replace('WEB_INSTANCES', 'instances'), 'lower DB_POOL_MAX or the instance count, or raise max_connections'));
    }
    const pending = await pendingMigrations(client);
    findings.push(
      pending.length === 0
        ? ok('migrations', 'every migration of this build is applied')
        : fail('migrations', `not applied: ${pending.join(', ')}`, 'npm run migrate (deploy/deploy.sh runs it before the reload)'),
    );
    const sent = Date.now();
    const { rows } = await client.query<{ now: Date }>('SELECT now()');
    const received = Date.now();
    const skew = rows[0]!.now.getTime() - (sent + received) / 2;
    findings.push(
      Math.abs(skew) <= maxSkewMs
        ? ok('clock', `this host and PostgreSQL agree within ${Math.round(Math.abs(skew))} ms`)
        : fail('clock', `this host's clock is ${Math.round(-skew)} ms off PostgreSQL's: log times and the console's "last seen" lie`, 'run NTP (systemd-timesyncd or chrony) on every host'),
    );
    return findings;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** nginx's duration syntax: 30, 30s, 1m, 500ms … in milliseconds. */
export function nginxDurationMs(text: string): number {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)(ms|s|m|h|d)?/g)) total += Number(n) * units[unit ?? 's']!;
  return total;
}

async function checkNginx(processes: Pm2Process[], configOverride: string | undefined): Promise<Finding[]> {
  const proxy = processes.find((p) => p.name === 'proxy') as WebProcess | undefined;
  const args = proxy ? [proxy.pm2_env.args ?? []].flat() : [];
  const config = configOverride ?? (args.includes('-c') ? args[args.indexOf('-c') + 1] : undefined);
  const nginx = findNginx();
  if (!nginx) return [fail('nginx-config', 'no nginx binary on this host', 'apt-get install nginx (deploy/provision.sh does)')];
  const flags = config ? ['-e', 'stderr', '-c', config] : [];
  // -T tests the configuration like -t and, when it passes, prints all of it for the checks below
  let stdout: string;
  try {
    ({ stdout } = await run(nginx, ['-T', ...flags], { maxBuffer: 16 * 1024 * 1024 }));
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '');
    const line = (stderr.split('\n').find((l) => l.includes('[emerg]')) ?? stderr.trim()).replace(/^.*\[emerg\] \d+#\d+: /, '');
    if (/Permission denied/.test(line) && process.getuid?.() !== 0) {
      return [fail('nginx-config', `nginx -t cannot run as this user (${line})`, 'run the doctor as root: sudo env PM2_HOME=$PM2_HOME npm run doctor')];
    }
    return [fail('nginx-config', `nginx -t fails: ${line}`, 'fix the file it names, then nginx -t and nginx -s reload')];
  }
  const findings = [ok('nginx-config', `nginx -t passes${config ? ` (${config})` : ''}`)];
  const upstream = stdout.match(/upstream\s+sitelog_web\s*\{([^}]*)\}/)?.[1];
  if (upstream === undefined) {
    findings.push(fail('keepalive-order', 'no upstream sitelog_web in the nginx configuration', 'install the site from nginx/ (deploy/provision.sh)'));
    return findings;
  }
  // nginx's default for upstream keepalive_timeout is 60 s
  const idle = nginxDurationMs(upstream.match(/^\s*keepalive_timeout\s+([^;]+);/m)?.[1] ?? '60s');
  findings.push(
    idle < KEEP_ALIVE_MS
      ? ok('keepalive-order', `nginx drops idle upstream connections after ${idle / 1000} s, before the app does (${KEEP_ALIVE_MS / 1000} s)`)
      : fail('keepalive-order', `nginx keeps idle upstream connections ${idle / 1000} s, the app ${KEEP_ALIVE_MS / 1000} s: nginx will send requests on connections the app is closing (502s)`, `keepalive_timeout below ${KEEP_ALIVE_MS / 1000}s in the upstream block`),
  );
  return findings;
}

function checkDisk(pm2Home: string, minFreeMb: number): Finding {
  const dir = path.join(pm2Home, 'logs');
  const stat = fs.statfsSync(fs.existsSync(dir) ? dir : pm2Home);
  const freeMb = Math.floor((stat.bavail * stat.bsize) / 1048576);
  return freeMb >= minFreeMb
    ? ok('log-disk', `${freeMb} MB free for logs in ${dir}`)
    : fail('log-disk', `${freeMb} MB free for logs in ${dir} (below ${minFreeMb} MB): PM2 stops writing logs when the disk fills`, 'free space, and let pm2-logrotate cap the logs (deploy/provision.sh sets it up)');
}

export async function diagnose(opts: { env: NodeJS.ProcessEnv; minFreeMb: number; maxSkewMs: number; nginxConfig?: string }): Promise<Finding[]> {
  const pm2Home = opts.env['PM2_HOME'] ?? path.join(opts.env['HOME'] ?? '/root', '.pm2');
  if (!daemonRunning(pm2Home)) return [fail('pm2', `no PM2 daemon runs for PM2_HOME=${pm2Home}`, 'npm start, or pm2 start ecosystem.config.js')];
  const processes = (await listAll(opts.env)).filter((p) => p.pm2_env.namespace === 'sitelog');
  const web = processes.filter(isWebApp) as WebProcess[];
  if (web.length === 0) return [fail('pm2', 'PM2 runs no web app in the sitelog namespace', 'pm2 start ecosystem.config.js')];
  return [
    ...checkPm2(web),
    ...(await checkDatabase(web, opts.maxSkewMs)),
    ...(await checkNginx(processes, opts.nginxConfig)),
    checkDisk(pm2Home, opts.minFreeMb),
  ];
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
    process.stdout.write(`${f.ok ? 'ok  ' : 'FAIL'} ${f.id}: ${f.detail}\n`);
    if (f.fix) process.stdout.write(`     fix: ${f.fix}\n`);
  }
  const problems = findings.filter((f) => !f.ok).length;
  process.stdout.write(problems === 0 ? 'sitelog doctor: all checks pass\n' : `sitelog doctor: ${problems} problem${problems > 1 ? 's' : ''}\n`);
  process.exitCode = problems === 0 ? 0 : 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`doctor: ${(err as Error).message}\n`);
    process.exitCode = 2;
  });
}
