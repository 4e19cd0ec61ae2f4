import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../config.js';
import { loadOrCreateSecrets } from '../secrets.js';
import { list, pm2 } from './pm2.js';
import { NotReady, restartCounts, waitForApps } from './readiness.js';
import { localStack } from './stack.js';

// `npm start`: the whole local stack under PM2, returning once every instance is ready. Running it
// again while the stack is up reloads web (zero downtime) instead of starting twice. When an app
// fails to come up (errored, restarting, or a web instance exits), it stops waiting, prints that
// app's own last error lines, and exits non-zero.

const out = (line: string) => process.stdout.write(`${line}\n`);

/** A first start that takes longer than this is reported as stuck (initdb takes a few seconds). */
const READY_WITHIN_MS = 120_000;

/**
 * Stops the apps and makes sure they stay stopped: a stop that lands while PM2 is relaunching a
 * crashed process can be followed by that relaunch.
 */
async function stopApps(names: string[]): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt += 1) {
    const running = (await list()).filter((p) => names.includes(p.name) && p.pm2_env.status !== 'stopped');
    if (running.length === 0) return;
    for (const name of new Set(running.map((p) => p.name))) await pm2(['stop', name]).catch(() => undefined);
    await sleep(300);
  }
}

async function main(): Promise<void> {
  const stack = localStack(process.env);
  for (const notice of stack.notices) out(notice);
  const started = Date.now();
  const { created } = loadOrCreateSecrets(stack.secretsFile);
  if (created) out(`sitelog: secrets generated in ${stack.secretsFile} (API_TOKEN, ADMIN_PASSWORD); keep that file private`);

  const running = await list();
  const online = new Set(running.filter((p) => p.pm2_env.status === 'online').map((p) => p.name));
  const firstStart = !online.has('web');
  if (!firstStart) {
    out('sitelog is running: reloading web');
    await pm2(['reload', 'ecosystem.config.js']);
  }
  // starts what is missing (everything on a first start); PM2 skips apps already online
  const wanted = ['db', 'web', 'proxy'].filter((name) => (name === 'db' ? stack.db : name === 'proxy' ? !!stack.proxy : true));
  const missing = wanted.filter((name) => !online.has(name));
  const restartsBefore = await restartCounts();
  // PM2's CLI waits for each instance's 'ready': the apps are watched meanwhile, not after it
  const cli = new AbortController();
  let startError: Error | undefined;
  const starting = missing.length === 0
    ? Promise.resolve()
    : pm2(['start', 'ecosystem.config.js', '--only', missing.join(',')], process.env, cli.signal).then(
        () => undefined,
        (err: { stderr?: string; message: string }) => {
          if (cli.signal.aborted) return;
          const said = (err.stderr || err.message).trim().split('\n').filter((l) => !/^\s+at\s/.test(l));
          startError = new NotReady(`pm2 start failed: ${said.slice(-3).join(' ')}`);
        },
      );
  const expected = stack.instances === 'max' ? os.availableParallelism() : stack.instances;
  try {
    const web = await waitForApps({
      apps: () => true,
      web: { name: 'web', instances: expected },
      urls: [...new Set([stack.directUrl, stack.url])].map((u) => new URL('readyz', u).href),
      timeoutMs: READY_WITHIN_MS,
      restartsBefore,
      aborted: () => startError,
    });
    out(`sitelog ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${web.length} web instance(s)`);
  } catch (err) {
    cli.abort();
    await starting;
    // on a first start nothing is left restarting behind the user's back; npx pm2 logs keeps every line
    if (firstStart) await stopApps(missing);
    throw err;
  }
  out(`  open      ${stack.url}${stack.proxy ? '  (through nginx)' : '  (the web instances directly)'}`);
  if (stack.proxy) out(`  direct    ${stack.directUrl}  (web instances, loopback only)`);
  out(`  secrets   ${stack.secretsFile}  (API_TOKEN, ADMIN_PASSWORD)`);
  out('  logs      npx pm2 logs        stop: npm stop');
}

main().catch((err: unknown) => {
  const message = err instanceof ConfigError ? err.message : (err as Error).message;
  process.stderr.write(`sitelog: ${message}\n`);
  process.exit(1);
});
