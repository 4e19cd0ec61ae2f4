import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../config.js';
import { loadOrCreateSecrets } from '../secrets.js';
import { pm2 as cli, withPm2, type Pm2Api } from './pm2.js';
import { NotReady, waitForApps } from './readiness.js';
import { localStack, type LocalStack } from './stack.js';
import { STARTUP_DEADLINE_MS } from '../timeouts.js';

// `npm start`: the whole local stack under PM2, returning once every instance is ready. Running it
// again while the stack is up reloads web (zero downtime) instead of starting twice. When an app
// fails to come up (errored, restarting, or a web instance exits), it stops waiting, prints that
// app's own last error lines, and exits non-zero.

const out = (line: string) => process.stdout.write(`${line}\n`);

/**
 * A first start that takes longer than this is reported as stuck (initdb takes a few seconds): past
 * the startup deadline, so that an instance the watchdog killed there has been restarted and had
 * time to come up before npm start gives up.
 */
const READY_WITHIN_MS = STARTUP_DEADLINE_MS + 60_000;

/**
 * Stops the apps and makes sure they stay stopped: a stop that lands while PM2 is relaunching a
 * crashed process can be followed by that relaunch.
 */
async function stopApps(pm2: Pm2Api, names: string[]): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const running = (await pm2.list()).filter((p) => names.includes(p.name) && p.pm2_env.status !== 'stopped');
    if (running.length === 0) return;
    for (const name of new Set(running.map((p) => p.name))) await pm2.stop(name).catch(() => undefined);
    await sleep(300);
  }
}

/** `pm2 start ecosystem.config.js --only …` by the CLI, as ops run it; its failure as a NotReady. */
function startApps(names: string[], signal: AbortSignal): { done: Promise<void>; error: () => Error | undefined } {
  let error: Error | undefined;
  const done =
    names.length === 0
      ? Promise.resolve()
      : cli(['start', 'ecosystem.config.js', '--only', names.join(',')], process.env, signal).then(
          () => undefined,
          (err: { stderr?: string; message: string }) => {
            if (signal.aborted) return;
            const said = (err.stderr || err.message).trim().split('\n').filter((l) => !/^\s+at\s/.test(l));
            error = new NotReady(`pm2 start failed: ${said.slice(-3).join(' ')}`);
          },
        );
  return { done, error: () => error };
}

async function up(pm2: Pm2Api, stack: LocalStack): Promise<void> {
  const started = Date.now();
  const online = new Set((await pm2.list()).filter((p) => p.pm2_env.status === 'online').map((p) => p.name));
  const firstStart = !online.has('web');
  if (!firstStart) {
    out('sitelog is running: reloading web');
    await pm2.reload('web');
  }
  // starts what is missing (everything on a first start); what a failed start left stopped or
  // errored is deleted first, so that its old state is not taken for a new failure
  const wanted = ['db', 'web', 'proxy', 'logrotate'].filter((name) => (name === 'db' ? stack.db : name === 'proxy' ? !!stack.proxy : true));
  const missing = wanted.filter((name) => !online.has(name));
  const now = await pm2.list();
  for (const name of new Set(now.filter((p) => missing.includes(p.name)).map((p) => p.name))) await pm2.delete(name);
  // restarts are judged against the counts of what stays (a deleted process's id may be reused)
  const restartsBefore = new Map(now.filter((p) => !missing.includes(p.name)).map((p) => [p.pm_id, p.pm2_env.restart_time]));
  // PM2's CLI waits for each instance's 'ready': the apps are watched meanwhile, not after it
  const abort = new AbortController();
  const starting = startApps(missing, abort.signal);
  try {
    const web = await waitForApps({
      pm2,
      apps: () => true,
      web: { name: 'web', instances: stack.instances === 'max' ? os.availableParallelism() : stack.instances },
      urls: [...new Set([stack.directUrl, stack.url])].map((u) => new URL('readyz', u).href),
      timeoutMs: READY_WITHIN_MS,
      restartsBefore,
      aborted: starting.error,
    });
    out(`sitelog ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${web.length} web instance(s)`);
  } catch (err) {
    abort.abort();
    await starting.done;
    // on a first start nothing is left restarting behind the user's back; npx pm2 logs keeps every line
    if (firstStart) await stopApps(pm2, missing);
    throw err;
  }
}

async function main(): Promise<void> {
  const stack = localStack(process.env);
  for (const notice of stack.notices) out(notice);
  const { created } = loadOrCreateSecrets(stack.secretsFile);
  if (created) out(`sitelog: secrets generated in ${stack.secretsFile} (API_TOKEN, ADMIN_PASSWORD); keep that file private`);
  await withPm2((pm2) => up(pm2, stack));
  out(`  open      ${stack.url}${stack.proxy ? '  (through nginx)' : '  (the web instances directly)'}`);
  if (stack.proxy) out(`  direct    ${stack.directUrl}  (web instances, loopback only)`);
  out(`  secrets   ${stack.secretsFile}  (API_TOKEN, ADMIN_PASSWORD)`);
  out('  logs      npx pm2 logs        stop: npm stop');
}

// PM2's API can keep handles open after its work is done: exit once ours is
main().then(
  () => process.exit(0),
  (err: unknown) => {
    const message = err instanceof ConfigError ? err.message : (err as Error).message;
    process.stderr.write(`sitelog: ${message}\n`);
    process.exit(1);
  },
);
