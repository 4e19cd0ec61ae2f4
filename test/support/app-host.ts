import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findNginx, renderStandalone } from '../../src/ops/nginx.js';
import { ROOT } from '../../src/ops/pm2.js';
import type { Host, Lan } from './netns.js';
import { ADMIN_PASSWORD, API_TOKEN } from './stack.js';
import { waitFor } from './wait.js';

/** The port every host's `web` instances share: each host is a namespace of its own, so no two meet. */
export const APP_PORT = 3000;
const PM2 = path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2');

/**
 * App host `name` of `lan`, in production behind the LAN's `proxy` host: its instances listen on its
 * own address and believe only the proxy's forwarding headers. `env` adds the database and the sizes.
 */
export function hostOnLan(lan: Lan, name: string, env: NodeJS.ProcessEnv): AppHost {
  const host = lan.host(name);
  return new AppHost(host, {
    API_TOKEN,
    ADMIN_PASSWORD,
    SITELOG_HOST: name,
    PORT: String(APP_PORT),
    BIND_ADDRESS: host.address,
    TRUST_PROXY: lan.host('proxy').address,
    ...env,
  });
}

/** One app host: a PM2 daemon of its own, started inside the host's namespace, `--env production`. */
export class AppHost {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-host-'));

  constructor(
    readonly host: Host,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  pm2(...args: string[]) {
    return new Promise<string>((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', this.host.netns, process.execPath, PM2, ...args], {
        cwd: ROOT,
        env: { PATH: process.env['PATH'], HOME: this.dir, PM2_HOME: path.join(this.dir, 'pm2'), ...this.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pm2 ${args.join(' ')} on ${this.host.name}: exit ${code}\n${out}`))));
    });
  }

  /** `npm run doctor` on this host (its PM2, inside its namespace): exit code and what it printed. */
  doctor() {
    return new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', this.host.netns, process.execPath, path.join(ROOT, 'dist', 'ops', 'doctor.js')], {
        cwd: ROOT,
        env: { PATH: process.env['PATH'], HOME: this.dir, PM2_HOME: path.join(this.dir, 'pm2') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code, out }));
    });
  }

  get url(): string {
    return `http://${this.host.address}:${APP_PORT}`;
  }

  async start({ timeoutMs = 60_000 } = {}): Promise<void> {
    await this.pm2('start', 'ecosystem.config.js', '--env', 'production');
    try {
      await waitFor(`${this.host.name} ready`, async () => (await fetch(`${this.url}/readyz`)).status === 200, { timeoutMs });
    } catch (err) {
      const last = this.logLines()
        .filter((l) => l.trim() !== '')
        .slice(-12)
        .map((l) => `  ${l.slice(0, 500)}`);
      throw new Error(`${(err as Error).message}; the host's last log lines:\n${last.join('\n')}`, { cause: err });
    }
  }

  /** Whether the host's instances answer ready. */
  async ready(): Promise<boolean> {
    return (await fetch(`${this.url}/readyz`).catch(() => undefined))?.status === 200;
  }

  /** Started, unless it already runs (`pm2 start` of a running ecosystem would restart it). */
  async up(): Promise<void> {
    if (!(await this.ready())) await this.start();
  }

  /** The host going away as on a shutdown: PM2 stops the instances gracefully, then itself. */
  stop(): Promise<string> {
    return this.pm2('kill');
  }

  /** Every line the host's PM2 has logged for its apps so far (out and error logs). */
  logLines(): string[] {
    const logs = path.join(this.dir, 'pm2', 'logs');
    if (!fs.existsSync(logs)) return [];
    return fs.readdirSync(logs).flatMap((file) => fs.readFileSync(path.join(logs, file), 'utf8').split('\n'));
  }

  /** What this host's instances logged about trouble: warnings, errors and the 503s they answered. */
  trouble(): string[] {
    return this.logLines()
      .filter((line) => /"level":[456]0|"status":5|"code":"SITELOG_/.test(line))
      .map((line) => `${this.host.name}: ${line.slice(0, 400)}`);
  }

  async remove(): Promise<void> {
    await this.stop().catch(() => undefined);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The port the proxy host's nginx listens on. */
export const PROXY_PORT = 8080;

/** nginx in the foreground on the proxy host, in front of `hosts`, as renderStandalone renders it for one machine. */
export class ProxyHost {
  private readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-proxy-'));
  private readonly nginx: ChildProcess;

  constructor(
    readonly host: Host,
    upstreams: AppHost[],
  ) {
    fs.chmodSync(this.dir, 0o755);
    const conf = renderStandalone(this.dir, {
      upstreams: upstreams.map((h) => `${h.host.address}:${APP_PORT}`),
      listen: `${host.address}:${PROXY_PORT}`,
    });
    this.nginx = spawn('ip', ['netns', 'exec', host.netns, findNginx() ?? 'nginx', '-e', 'stderr', '-c', conf], { stdio: 'ignore' });
  }

  get url(): string {
    return `http://${this.host.address}:${PROXY_PORT}`;
  }

  /** nginx's graceful stop, by the pid started here, and its folder removed. */
  async remove(): Promise<void> {
    if (this.nginx.pid && this.nginx.exitCode === null && this.nginx.signalCode === null) {
      const exited = new Promise((resolve) => this.nginx.once('exit', resolve));
      // nginx's graceful stop; a worker still serving a connection after 10 s is not waited for
      this.nginx.kill('SIGQUIT');
      const late = setTimeout(() => this.nginx.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(late);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
