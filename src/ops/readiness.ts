import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pm2Api, Pm2Process } from './pm2.js';

// Waiting for PM2 apps to come up, for `npm start` and deploy/deploy.sh alike: ready when every
// web instance is online and the /readyz URLs answer 200; failed, at once and with the app's own
// last lines, when an app errors, stops, or restarts while we wait.

/** Why an app did not come up: a line for the operator, then the app's own last lines. */
export class NotReady extends Error {}

const POLL_MS = 500;

export const httpStatus = (url: string): Promise<number> =>
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
export function failureOf(proc: Pm2Process, restartsBefore: number): string | undefined {
  const { status: state, restart_time: restarts, exit_code: code } = proc.pm2_env;
  if (state === 'errored') return `${proc.name} errored after ${restarts} restarts`;
  if (state === 'stopped') return `${proc.name} stopped${code !== undefined ? ` (exit code ${code})` : ''}`;
  if (restarts > restartsBefore) return `${proc.name} is restarting (${restarts - restartsBefore} restarts while starting)`;
  return undefined;
}

function notReady(proc: Pm2Process, failure: string): NotReady {
  const lines = lastErrorLines(proc).map((l) => `  ${l}`);
  return new NotReady([`${failure}; its last lines:`, ...lines, `  (all of them: pm2 logs ${proc.name})`].join('\n'));
}

export type Watch = {
  pm2: Pm2Api;
  /** The apps to watch for failures. */
  apps: (p: Pm2Process) => boolean;
  /** The web app's name and how many of its instances must be online. */
  web: { name: string; instances: number };
  /** /readyz URLs that must answer 200. */
  urls: string[];
  timeoutMs: number;
  restartsBefore: Map<number, number>;
  /** Checked at every poll: an error (the PM2 command failed) ends the wait. */
  aborted?: () => Error | undefined;
};

/** Waits until the web app is online and ready; throws NotReady as soon as an app fails, or at the timeout. */
export async function waitForApps(watch: Watch): Promise<Pm2Process[]> {
  const deadline = Date.now() + watch.timeoutMs;
  for (;;) {
    const processes = (await watch.pm2.list()).filter(watch.apps);
    for (const proc of processes) {
      const failure = failureOf(proc, watch.restartsBefore.get(proc.pm_id) ?? 0);
      if (failure) throw notReady(proc, failure);
    }
    const error = watch.aborted?.();
    if (error) throw error;
    const web = processes.filter((p) => p.name === watch.web.name && p.pm2_env.status === 'online');
    if (web.length >= watch.web.instances && (await Promise.all(watch.urls.map(httpStatus))).every((s) => s === 200)) return web;
    if (Date.now() > deadline) {
      const online = `${web.length} of ${watch.web.instances} ${watch.web.name} instances online`;
      const failure = `not ready after ${watch.timeoutMs / 1000} s (${online}, ${watch.urls.join(' ')} not all 200)`;
      throw web[0] ? notReady(web[0], failure) : new NotReady(failure);
    }
    await sleep(POLL_MS);
  }
}
