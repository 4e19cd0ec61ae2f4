import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

// The PM2 of node_modules: its programmatic API for everything that reads or drives processes, and
// its CLI for `pm2 start ecosystem.config.js`, which evaluates the file in a process of its own as it
// does for ops. PM2_HOME and the rest come from env.

const exec = promisify(execFile);
export const ROOT = path.resolve(__dirname, '..', '..');
const PM2 = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');

export async function pm2(args: string[], env: NodeJS.ProcessEnv = process.env, signal?: AbortSignal): Promise<string> {
  const { stdout } = await exec(process.execPath, [PM2, ...args], { cwd: ROOT, env, maxBuffer: 64 * 1024 * 1024, ...(signal && { signal }) });
  return stdout;
}

export type Pm2Process = {
  name: string;
  pid: number;
  pm_id: number;
  pm2_env: {
    namespace?: string;
    status: string;
    NODE_APP_INSTANCE?: number | string;
    restart_time: number;
    exit_code?: number;
    pm_out_log_path?: string;
    pm_err_log_path?: string;
  };
};

/** The PM2_HOME that env names, or PM2's own default. */
export const pm2Home = (env: NodeJS.ProcessEnv): string => env['PM2_HOME'] ?? path.join(env['HOME'] ?? os.homedir(), '.pm2');

/**
 * Whether a PM2 daemon runs for `home`: its pid file names a live process. (A leftover socket says
 * nothing: a daemon killed with -9 leaves its sockets behind.)
 */
export function daemonRuns(home: string): boolean {
  try {
    process.kill(Number(fs.readFileSync(path.join(home, 'pm2.pid'), 'utf8')), 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Every process of the PM2 daemon of env's PM2_HOME, sitelog's or not. Where no daemon runs,
 * nothing, and no daemon is started just to say so.
 */
export async function listAll(env: NodeJS.ProcessEnv = process.env): Promise<Pm2Process[]> {
  const home = pm2Home(env);
  if (!daemonRuns(home)) return [];
  return withPm2((api) => api.listEverything(), home);
}

/** PM2's API class: one client per PM2_HOME (its typings declare only the default instance). */
type Pm2Client = typeof import('pm2');
type Pm2Module = { custom: new (opts: { pm2_home: string }) => Pm2Client };

/**
 * PM2's programmatic API on the daemon of `home` (started when missing): for `npm start`, `npm stop`,
 * the doctor, deploy's readiness wait, the tests and the bench, which read and poll it. One
 * connection for the whole of `work`. The tests, like ops at a shell, still type the CLI's commands
 * (`pm2 reload`, `pm2 scale`, `pm2 kill`) where that is what they check.
 */
export async function withPm2<T>(work: (api: Pm2Api) => Promise<T>, home = pm2Home(process.env)): Promise<T> {
  const { custom } = (await import('pm2')) as unknown as Pm2Module;
  const api = new custom({ pm2_home: home });
  const call = <R>(fn: (cb: (err: Error | null, result: R) => void) => void) =>
    new Promise<R>((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result))));
  await call<void>((cb) => api.connect((err) => cb(err ?? null, undefined)));
  const client: Pm2Api = {
    listEverything: async () => (await call<unknown[]>((cb) => api.list((err, list) => cb(err ?? null, list)))) as Pm2Process[],
    list: async () => (await client.listEverything()).filter(isSitelog),
    reload: (name) => call<void>((cb) => api.reload(name, (err) => cb(err ?? null, undefined))),
    stop: (name) => call<void>((cb) => api.stop(name, (err) => cb(err ?? null, undefined))),
    delete: (name) => call<void>((cb) => api.delete(name, (err) => cb(err ?? null, undefined))),
    killDaemon: () => call<void>((cb) => api.killDaemon((err) => cb(err ?? null, undefined))),
    reloadLogs: () => call<void>((cb) => api.reloadLogs((err) => cb(err ?? null, undefined))),
  };
  try {
    return await work(client);
  } finally {
    api.disconnect();
  }
}

export type Pm2Api = {
  /** sitelog's processes (namespace sitelog). */
  list(): Promise<Pm2Process[]>;
  /** Every process of the daemon, sitelog's or not. */
  listEverything(): Promise<Pm2Process[]>;
  reload(name: string): Promise<void>;
  stop(name: string): Promise<void>;
  delete(name: string): Promise<void>;
  killDaemon(): Promise<void>;
  /** Every process's log files closed and opened again by path (after they were renamed). */
  reloadLogs(): Promise<void>;
};

const isSitelog = (p: Pm2Process): boolean => p.pm2_env?.namespace === 'sitelog';
