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

/** sitelog's processes (namespace sitelog). */
export async function list(env: NodeJS.ProcessEnv = process.env): Promise<Pm2Process[]> {
  return (await listAll(env)).filter((p) => p.pm2_env.namespace === 'sitelog');
}

/** The web app: `web`, or under deploy/deploy.sh the slot that runs a release, web-blue or web-green. */
export const isWebApp = (p: Pm2Process): boolean => p.name === 'web' || p.name === 'web-blue' || p.name === 'web-green';
