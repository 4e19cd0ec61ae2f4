import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { listAll } from '../src/ops/pm2.js';
import { freePort } from './support/ports.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { Stack, uncleanLines } from './support/stack.js';
import { waitFor } from './support/wait.js';

// A new user's first five minutes, as root in a 0700 home folder (most servers and containers):
// the README's `npm install && npm start`, the design's own `npx pm2 start ecosystem.config.js`,
// a first start whose logs are clean, and an `npm start` that fails fast and says why.

const ROOT = path.resolve(__dirname, '..');
const exec = promisify(execFile);

/** A fresh copy of this working tree (what a clone of it holds) in a new 0700 folder. */
class Clone {
  private constructor(
    readonly home: string,
    readonly dir: string,
    readonly env: NodeJS.ProcessEnv,
    readonly proxyPort: number,
  ) {}

  static async create(): Promise<Clone> {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-home-'));
    fs.chmodSync(home, 0o700);
    const dir = path.join(home, 'sitelog');
    fs.mkdirSync(dir);
    const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' })
      .split('\0')
      .filter((f) => f !== '' && fs.existsSync(path.join(ROOT, f)));
    for (const file of files) fs.cpSync(path.join(ROOT, file), path.join(dir, file), { recursive: true });
    const proxyPort = await freePort();
    // a user's shell: the machine's environment (its CA settings for npm, say), none of the suite's own variables
    const machine = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_.*|PM2_HOME|DATA_DIR|DATABASE_URL|API_TOKEN|ADMIN_PASSWORD|PORT|PROXY_PORT|SITELOG_.*)$/.test(k)));
    const env: NodeJS.ProcessEnv = {
      ...machine,
      PM2_HOME: path.join(home, '.pm2'),
      PORT: String(await freePort()),
      PROXY_PORT: String(proxyPort),
      EMBEDDED_PG_PORT: String(await freePort()),
    };
    return new Clone(home, dir, env, proxyPort);
  }

  async sh(command: string, args: string[]): Promise<{ code: number; output: string }> {
    try {
      const { stdout, stderr } = await exec(command, args, { cwd: this.dir, env: this.env, timeout: 300_000 });
      return { code: 0, output: stdout + stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  }

  npm(...args: string[]) {
    return this.sh('npm', [...args, '--no-audit', '--no-fund', '--no-update-notifier']);
  }

  npx(...args: string[]) {
    return this.sh('npx', ['--no-install', ...args]);
  }

  readyThroughNginx(): Promise<true> {
    return waitFor('/readyz 200 through nginx', async () => (await fetch(`http://127.0.0.1:${this.proxyPort}/readyz`)).status === 200 || undefined, {
      timeoutMs: 90_000,
    });
  }

  /** The apps in this clone's PM2 list, in its order: name, instance id, status, pid. */
  async apps(): Promise<Array<{ name: string; instance: number; status: string; pid: number }>> {
    return (await listAll(this.env)).map((p) => ({ name: p.name, instance: Number(p.pm2_env.NODE_APP_INSTANCE ?? 0), status: p.pm2_env.status, pid: p.pid }));
  }

  /** The startup log's descriptions, oldest first, read through the API with the token of the secrets file. */
  async startupLog(): Promise<string[]> {
    const secrets = fs.readFileSync(path.join(this.dir, '.data', 'secrets.env'), 'utf8');
    const token = /^API_TOKEN=(.+)$/m.exec(secrets)?.[1];
    assert.ok(token, 'API_TOKEN in .data/secrets.env');
    const response = await fetch(`http://127.0.0.1:${this.proxyPort}/api/logs?stype=system&limit=200`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    const { items, next } = (await response.json()) as { items: Array<{ description: string }>; next: string | null };
    assert.equal(next, null, 'the whole startup log on one page');
    return items.map((i) => i.description).reverse();
  }

  /** Every line of every app's PM2 log files. */
  logText(): string {
    const dir = path.join(this.env['PM2_HOME']!, 'logs');
    return fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n') : '';
  }

  async remove(): Promise<void> {
    if (fs.existsSync(path.join(this.dir, 'node_modules', 'pm2'))) await this.sh(process.execPath, ['node_modules/pm2/bin/pm2', 'kill']);
    // as root the cluster lives in the state folder that DATA_DIR/postgres links to
    const link = path.join(this.dir, '.data', 'postgres');
    if (fs.lstatSync(link, { throwIfNoEntry: false })?.isSymbolicLink()) fs.rmSync(fs.realpathSync(link), { recursive: true, force: true });
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

describe('first five minutes', { timeout: 600_000 }, () => {
  test('when a fresh clone in a 0700 folder runs npm install && npm start, then the page answers through nginx, every log is clean, a second npm start reloads web (same apps, no new "server started"), and npm stop stops it all', async () => {
    const clone = await Clone.create();
    try {
      assert.equal((await clone.npm('install')).code, 0);
      const first = await clone.npm('start');
      assert.equal(first.code, 0, first.output);
      assert.match(first.output, new RegExp(`open +http://127\\.0\\.0\\.1:${clone.proxyPort}/ +\\(through nginx\\)`));
      const page = await (await fetch(`http://127.0.0.1:${clone.proxyPort}/`)).text();
      assert.match(page, /instance <span id="instance">\d+<\/span>/);
      assert.deepEqual(uncleanLines(clone.logText()), []);
      if (process.getuid?.() === 0) {
        // root: the postgres user could not reach DATA_DIR in the 0700 home, so the cluster moved
        assert.match(fs.readlinkSync(path.join(clone.dir, '.data', 'postgres')), /^\/var\/lib\/sitelog\/cluster-/);
      }

      // SPEC: npm start again while up is safe: a reload, not a second stack
      const appsBefore = await clone.apps();
      const webBefore = appsBefore.filter((a) => a.name === 'web');
      assert.equal(webBefore.length, 2, 'WEB_INSTANCES defaults to 2');
      const logBefore = await clone.startupLog();
      assert.equal(logBefore.filter((d) => d === 'server started').length, 1);
      const again = await clone.npm('start');
      assert.equal(again.code, 0, again.output);
      assert.match(again.output, /sitelog is running: reloading web/);
      const appsAfter = await clone.apps();
      assert.deepEqual(appsAfter.map((a) => `${a.name}#${a.instance}`), appsBefore.map((a) => `${a.name}#${a.instance}`), 'the same apps, the same web instances, none twice');
      assert.equal(new Set(appsAfter.map((a) => `${a.name}#${a.instance}`)).size, appsAfter.length, 'no app twice in PM2\'s list');
      assert.ok(appsAfter.every((a) => a.status === 'online'), JSON.stringify(appsAfter));
      const webAfter = appsAfter.filter((a) => a.name === 'web');
      for (const web of webAfter) assert.notEqual(web.pid, webBefore.find((w) => w.instance === web.instance)!.pid, `web ${web.instance} was reloaded`);
      // the reload's entries are in; then the log holds them and nothing else new: no "server started"
      const logAfter = await waitFor('each web instance\'s "reloaded" entry', async () => {
        const log = await clone.startupLog();
        return log.filter((d) => / reloaded /.test(d)).length >= webBefore.length ? log : undefined;
      });
      assert.deepEqual(logAfter.slice(0, logBefore.length), logBefore);
      assert.deepEqual(
        logAfter.slice(logBefore.length).sort(),
        webAfter.map((w) => `instance ${w.instance} reloaded (pid ${w.pid})`).sort(),
        'one "reloaded" entry per instance, no new "server started"',
      );

      assert.equal((await clone.npm('stop')).code, 0);
      assert.deepEqual(await listAll(clone.env).catch(() => []), [], 'npm stop leaves no process (and no daemon)');
      const secrets = fs.statSync(path.join(clone.dir, '.data', 'secrets.env'));
      assert.equal(secrets.mode & 0o777, 0o600);
    } finally {
      await clone.remove();
    }
  });

  test('when a fresh clone runs npx pm2 start ecosystem.config.js straight after npm install, then it serves through nginx; a missing or stale build is one line naming the command', async () => {
    const clone = await Clone.create();
    try {
      assert.equal((await clone.npm('install')).code, 0);
      const start = await clone.npx('pm2', 'start', 'ecosystem.config.js');
      assert.equal(start.code, 0, start.output);
      await clone.readyThroughNginx();
      assert.equal((await clone.npx('pm2', 'reload', 'ecosystem.config.js')).code, 0);
      await clone.readyThroughNginx();
      assert.deepEqual(uncleanLines(clone.logText()), []);
      await clone.npx('pm2', 'kill');

      fs.rmSync(path.join(clone.dir, 'dist'), { recursive: true });
      for (const command of [['npx', 'pm2', 'start', 'ecosystem.config.js'], ['npm', 'stop'], ['npm', 'run', 'doctor']]) {
        const missing = await clone.sh(command[0]!, command.slice(1));
        assert.notEqual(missing.code, 0, command.join(' '));
        assert.match(missing.output, /^sitelog: there is no build in dist\/; run: npm run build$/m, command.join(' '));
        assert.doesNotMatch(missing.output, /^\s+at /m, `${command.join(' ')}: no stack trace`);
      }
      assert.equal((await clone.npm('run', 'build')).code, 0);
      fs.appendFileSync(path.join(clone.dir, 'src', 'home.ts'), '\n// edited after the build\n');
      const stale = await clone.npx('pm2', 'start', 'ecosystem.config.js');
      assert.notEqual(stale.code, 0);
      assert.match(stale.output, /^sitelog: the build in dist\/ is older than src\/; run: npm run build$/m);
    } finally {
      await clone.remove();
    }
  });
});

describe('npm start fails fast', { timeout: 120_000 }, () => {
  let postgres: TestPostgres;
  before(async () => {
    postgres = await startPostgres();
  });
  after(async () => {
    await postgres?.stop();
  });

  test('when the embedded database cannot start, then npm start stops within 10 s of it, prints the reason PostgreSQL gives, exits non-zero and leaves nothing restarting; fixed, it starts', async () => {
    const stack = await Stack.create({ instances: 2 });
    try {
      // a cluster folder that is no cluster: PostgreSQL refuses it
      const cluster = path.join(stack.env['DATA_DIR']!, 'postgres', 'data');
      fs.mkdirSync(cluster, { recursive: true });
      fs.writeFileSync(path.join(cluster, 'PG_VERSION'), '9.6\n');
      const result = await stack.npmStart();
      assert.equal(result.code, 1, result.output);
      assert.match(result.output, /^sitelog: db (is restarting|errored|stopped).*its last lines:$/m);
      assert.match(result.output, /sitelog db: PostgreSQL did not start .*could not access the server configuration file/);
      assert.doesNotMatch(result.output, /^\s+at /m, 'no stack trace');
      assert.ok(result.ms < 15_000, `npm start took ${result.ms} ms to fail`);
      const states = (await stack.processes('db')).map((p) => p.pm2_env.status);
      assert.deepEqual(states, ['stopped']);
      // once the cause is gone, the next npm start comes up: the failed one's leftovers are not taken for a failure
      fs.rmSync(cluster, { recursive: true });
      const again = await stack.npmStart();
      assert.equal(again.code, 0, again.output);
    } finally {
      await stack.stop();
    }
  });

  test('when a web instance exits during startup, then npm start prints its own line and exits non-zero', async () => {
    const stack = await Stack.create({ instances: 1, databaseUrl: postgres.url('sitelog'), env: { DB_POOL_MAX: '500' } });
    try {
      const result = await stack.npmStart();
      assert.equal(result.code, 1, result.output);
      assert.match(result.output, /^sitelog: web stopped \(exit code 78\); its last lines:$/m);
      assert.match(result.output, /pool budget exceeded: WEB_INSTANCES 1/);
      assert.ok(result.ms < 15_000, `npm start took ${result.ms} ms to fail`);
    } finally {
      await stack.stop();
    }
  });

  test('when nginx is not installed, then npm start says the proxy is off and how to get it, and prints the direct URL', { skip: process.getuid?.() !== 0 && 'hiding nginx takes a mount namespace (root)' }, async () => {
    const stack = await Stack.create({ instances: 1, databaseUrl: postgres.url('sitelog'), env: { PROXY_PORT: String(await freePort()) } });
    try {
      // nginx stays installed for the other tests; this start (and the PM2 daemon it spawns) sees none
      const hidden = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/sbin/nginx'].filter((f) => fs.existsSync(f));
      const script = [...hidden.map((f) => `mount --bind /dev/null ${f}`), `exec "${process.execPath}" dist/ops/stack-up.js`].join(' && ');
      const { stdout } = await exec('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { cwd: ROOT, env: stack.env, timeout: 120_000 });
      assert.match(stdout, /^sitelog: nginx is not installed, so the proxy app is off \(apt-get install nginx-light\)$/m);
      assert.match(stdout, new RegExp(`open +http://127\\.0\\.0\\.1:${stack.port}/ +\\(the web instances directly\\)`));
      assert.equal((await stack.processes('proxy')).length, 0);
      assert.equal((await fetch(`http://127.0.0.1:${stack.port}/readyz`)).status, 200);
    } finally {
      await stack.stop();
    }
  });
});
