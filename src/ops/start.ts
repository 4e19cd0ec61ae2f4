import fs from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from '../config.js';
import { loadOrCreateSecrets } from '../secrets.js';
import { list, pm2, type Pm2Process } from './pm2.js';
import { localStack, type LocalStack } from './stack.js';

// `npm start`: the whole local stack under PM2, returning once every instance is ready. Running it
// again while the stack is up reloads web (zero downtime) instead of starting twice. When an app
// fails to come up (errored, restarting, or a web instance exits), it stops waiting, prints that
// app's own last error lines, and exits non-zero.

const out = (line: string) => process.stdout.write(`${line}\n`);

/** A first start that takes longer than this is reported as stuck (initdb takes a few seconds). */
const READY_WITHIN_MS = 120_000;
const POLL_MS = 500;

class StartFailed extends Error {}

const status = (url: string) =>
  fetch(url, { signal: AbortSignal.timeout(2_000) }).then(
    (r) => r.status,
    () => 0,
  );

/** The last lines an app wrote that say what went wrong, without stack frames. */
export function lastErrorLines(proc: Pm2Process, count = 8): string[] {
  const read = (file: string | undefined) =>
    file && fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '') : [];
  const isFrame = (line: string) => /^\s+at\s/.test(line) || /^\s*\^+\s*$/.test(line);
  const errors = read(proc.pm2_env.pm_err_log_path).filter((l) => !isFrame(l));
  const loud = read(proc.pm2_env.pm_out_log_path).filter((l) => /"level":(50|60)|\b(FATAL|PANIC|ERROR)\b/.test(l));
  // the same line from each restart is said once (PM2's `time` prefix differs)
  const unique = [...new Map((errors.length > 0 ? errors : loud).map((l) => [l.replace(/^\S+: /, ''), l])).values()];
  return unique.slice(-count);
}

/** Why an app is not coming up, judged against its restart count when the wait began; or undefined. */
function failureOf(proc: Pm2Process, restartsBefore: number): string | undefined {
  const { status: state, restart_time: restarts, exit_code: code } = proc.pm2_env;
  if (state === 'errored') return `${proc.name} errored after ${restarts} restarts`;
  if (state === 'stopped') return `${proc.name} stopped${code !== undefined ? ` (exit code ${code})` : ''}`;
  if (restarts > restartsBefore) return `${proc.name} is restarting (${restarts - restartsBefore} restarts since npm start)`;
  return undefined;
}

async function waitReady(
  stack: LocalStack,
  expected: number,
  restartsBefore: Map<number, number>,
  startError: () => Error | undefined,
): Promise<Pm2Process[]> {
  const deadline = Date.now() + READY_WITHIN_MS;
  const probes = [...new Set([stack.directUrl, stack.url])].map((u) => new URL('readyz', u).href);
  for (;;) {
    const processes = await list();
    for (const proc of processes) {
      const failure = failureOf(proc, restartsBefore.get(proc.pm_id) ?? 0);
      if (failure) {
        const lines = lastErrorLines(proc).map((l) => `  ${l}`);
        throw new StartFailed([`sitelog: ${failure}; its last lines:`, ...lines, `  (all of them: npx pm2 logs ${proc.name})`].join('\n'));
      }
    }
    const error = startError();
    if (error) throw error;
    const web = processes.filter((p) => p.name === 'web' && p.pm2_env.status === 'online');
    if (web.length >= expected && (await Promise.all(probes.map(status))).every((s) => s === 200)) return web;
    if (Date.now() > deadline) {
      throw new StartFailed(`sitelog: not ready after ${READY_WITHIN_MS / 1000} s (${web.length} of ${expected} web instances online); see: npx pm2 logs`);
    }
    await sleep(POLL_MS);
  }
}

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
  const restartsBefore = new Map((await list()).map((p) => [p.pm_id, p.pm2_env.restart_time]));
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
          startError = new StartFailed(`sitelog: pm2 start failed: ${said.slice(-3).join(' ')}`);
        },
      );
  const expected = stack.instances === 'max' ? os.availableParallelism() : stack.instances;
  try {
    const web = await waitReady(stack, expected, restartsBefore, () => startError);
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
  const message = err instanceof ConfigError || err instanceof StartFailed ? err.message : (err as Error).message;
  process.stderr.write(`${message.startsWith('sitelog') ? '' : 'sitelog: '}${message}\n`);
  process.exit(1);
});
