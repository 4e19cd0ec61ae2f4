import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { listAll, pm2, type Pm2Process } from '../../src/ops/pm2.js';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

export type StackOptions = {
  instances?: number;
  /** Unset: the stack runs its own embedded PostgreSQL (the `db` app). */
  databaseUrl?: string;
  proxy?: boolean;
  host?: string;
  env?: Record<string, string>;
};

export const API_TOKEN = 'test-token-0123456789abcdef';
export const ADMIN_PASSWORD = 'test-admin-password';

/**
 * The real stack under a PM2 daemon of its own (own PM2_HOME, DATA_DIR and ports), driven through
 * the PM2 CLI exactly as ops drive it. `stop()` kills that daemon and everything it runs.
 */
export class Stack {
  private constructor(
    readonly dir: string,
    readonly env: NodeJS.ProcessEnv,
    readonly port: number,
    readonly proxyPort: number,
  ) {}

  static async create(opts: StackOptions = {}): Promise<Stack> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-stack-'));
    fs.chmodSync(dir, 0o755);
    const port = await freePort();
    const proxyPort = opts.proxy ? await freePort() : 0;
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      HOME: process.env['HOME'],
      PM2_HOME: path.join(dir, 'pm2'),
      DATA_DIR: path.join(dir, 'data'),
      PORT: String(port),
      PROXY_PORT: String(proxyPort),
      EMBEDDED_PG_PORT: String(await freePort()),
      WEB_INSTANCES: String(opts.instances ?? 2),
      SITELOG_HOST: opts.host ?? `host-${path.basename(dir)}`,
      API_TOKEN,
      ADMIN_PASSWORD,
      LOG_LEVEL: 'info',
      ...(opts.databaseUrl ? { DATABASE_URL: opts.databaseUrl } : {}),
      ...opts.env,
    };
    return new Stack(dir, env, port, proxyPort);
  }

  get host(): string {
    return this.env['SITELOG_HOST']!;
  }

  get logDir(): string {
    return path.join(this.env['PM2_HOME']!, 'logs');
  }

  /** Where a client goes: nginx when the stack has it, else the web instances directly. */
  url(p: string): string {
    return `http://127.0.0.1:${this.proxyPort || this.port}${p}`;
  }

  pm2(...args: string[]): Promise<string> {
    return pm2(args, this.env);
  }

  async processes(name = 'web'): Promise<Pm2Process[]> {
    return (await listAll(this.env)).filter((p) => p.name === name);
  }

  /** Online web processes by instance id. */
  async web(): Promise<Map<number, Pm2Process>> {
    const online = (await this.processes('web')).filter((p) => p.pm2_env.status === 'online');
    return new Map(online.map((p) => [Number(p.pm2_env.NODE_APP_INSTANCE), p]));
  }

  async start(): Promise<void> {
    await this.pm2('start', 'ecosystem.config.js');
    await this.waitReady(Number(this.env['WEB_INSTANCES']));
  }

  /** Waits for `count` online web processes and a ready answer from the stack. */
  async waitReady(count: number, timeoutMs = 60_000): Promise<void> {
    try {
      await waitFor(`${count} web instances online`, async () => (await this.web()).size === count, { timeoutMs });
      await waitFor('/readyz 200', async () => (await fetch(this.url('/readyz'))).status === 200, { timeoutMs });
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await this.diagnosis()}`, { cause: err });
    }
  }

  /** What PM2 runs and the last lines each app wrote: for a failure message, not for assertions. */
  async diagnosis(): Promise<string> {
    const processes = await listAll(this.env).catch(() => []);
    const status = processes.map((p) => `${p.name}#${p.pm_id} ${p.pm2_env.status} restarts ${p.pm2_env.restart_time}`).join(', ');
    const logs = fs.existsSync(this.logDir)
      ? fs.readdirSync(this.logDir).map((f) => {
          const lines = fs.readFileSync(path.join(this.logDir, f), 'utf8').trimEnd().split('\n').slice(-8);
          return `--- ${f}\n${lines.join('\n')}`;
        })
      : [];
    return [`pm2: ${status || 'nothing'}`, ...logs].join('\n');
  }

  /** Lines of every web instance's PM2 log, parsed (pino JSON). */
  webLogLines(): Array<Record<string, unknown>> {
    if (!fs.existsSync(this.logDir)) return [];
    return fs
      .readdirSync(this.logDir)
      .filter((f) => f.startsWith('web-'))
      .flatMap((f) => fs.readFileSync(path.join(this.logDir, f), 'utf8').split('\n'))
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** `npm start`'s own program (the suite has built already), in this stack's environment. */
  async npmStart(): Promise<{ code: number; output: string; ms: number }> {
    return runStart(this.env, ROOT);
  }

  /** Every line every app wrote to PM2's log files. */
  logText(): string {
    if (!fs.existsSync(this.logDir)) return '';
    return fs
      .readdirSync(this.logDir)
      .map((f) => fs.readFileSync(path.join(this.logDir, f), 'utf8'))
      .join('\n');
  }

  async stop(): Promise<void> {
    await this.pm2('kill').catch(() => undefined);
    // SITELOG_KEEP_STACKS=1 keeps PM2 logs and data for a post-mortem
    if (!process.env['SITELOG_KEEP_STACKS']) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const ROOT = path.resolve(__dirname, '..', '..');
const execAsync = promisify(execFile);

/** Runs `node dist/ops/stack-up.js` (what `npm start` runs after building) in `cwd` with `env`. */
export async function runStart(env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number; output: string; ms: number }> {
  const started = Date.now();
  try {
    const { stdout, stderr } = await execAsync(process.execPath, ['dist/ops/stack-up.js'], { cwd, env, timeout: 180_000 });
    return { code: 0, output: stdout + stderr, ms: Date.now() - started };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}`, ms: Date.now() - started };
  }
}

/**
 * The lines of a log that a clean first start must not have (issue: "first start with a clean log"):
 * the incident's "does not exist", PostgreSQL's FATAL and ERROR, pino levels error and fatal.
 */
export function uncleanLines(text: string): string[] {
  return text.split('\n').filter((line) => /does not exist/i.test(line) || /\bFATAL\b|\bERROR\b|"level":(5\d|6\d)\b/.test(line));
}

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${API_TOKEN}`, ...extra };
}
