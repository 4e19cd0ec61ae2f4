import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

// Drives the PM2 of node_modules through its CLI, as ops do; PM2_HOME and the rest come from env.

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

/** Every process of the PM2 daemon that env's PM2_HOME names. */
export async function listAll(env: NodeJS.ProcessEnv = process.env): Promise<Pm2Process[]> {
  const out = await pm2(['jlist'], env);
  // a freshly spawned daemon prints "[PM2] ..." lines before the JSON
  const json = out.split('\n').find((line) => line.startsWith('[{') || line.trim() === '[]');
  return JSON.parse(json ?? '[]') as Pm2Process[];
}


/**
 * PM2's programmatic API (the daemon of PM2_HOME, started when missing), for the commands around the
 * app: `npm start`, `npm stop`, deploy's readiness wait, which poll it. One connection for the whole
 * of `work`. Starting from ecosystem.config.js stays with the CLI (`pm2()` above), which evaluates
 * the file in its own process as it does for ops; the tests, like ops at a shell, drive the CLI too.
 */
export async function withPm2<T>(work: (api: Pm2Api) => Promise<T>): Promise<T> {
  const { default: api } = await import('pm2');
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
};

const isSitelog = (p: Pm2Process): boolean => p.pm2_env?.namespace === 'sitelog';
