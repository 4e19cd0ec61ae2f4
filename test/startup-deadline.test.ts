import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError, loadConfig } from '../src/config.js';
import { DATABASE_WAIT_MS, STARTUP_DEADLINE_MS, WATCHDOG_CHECK_MS } from '../src/timeouts.js';
import { freePort } from './support/ports.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { ADMIN_PASSWORD, API_TOKEN, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// A web process that never becomes ready is killed at the startup deadline by its watchdog thread,
// with one fatal line naming the step it is stuck in, and PM2 restarts it (docs/watchdog.md). Before,
// such a process stayed "online" for good, and with wait_ready the instances after it waited too.

const ROOT = path.resolve(__dirname, '..');
/** The tests' deadline (SITELOG_TEST_STARTUP_DEADLINE_MS): a start here takes 1-4 s, migrations included. */
const DEADLINE_MS = 6_000;
/** The thread sees the deadline within a check; the kill follows the line by 250 ms. */
const KILLED_BY_MS = DEADLINE_MS + WATCHDOG_CHECK_MS + 1_000;

const baseEnv = { DATABASE_URL: 'postgres://u:p@127.0.0.1:1/sitelog', API_TOKEN, ADMIN_PASSWORD, SITELOG_HOST: 'h', LOG_LEVEL: 'silent' };

describe('the startup deadline, as configured', () => {
  test('when nothing is set, then it is STARTUP_DEADLINE_MS, above the whole database wait', () => {
    assert.equal(loadConfig(baseEnv).STARTUP_DEADLINE_MS, STARTUP_DEADLINE_MS);
    assert.ok(STARTUP_DEADLINE_MS > DATABASE_WAIT_MS);
  });

  test('when the test variables are set without SITELOG_TEST_ROUTES=1, then the configuration is refused naming each', () => {
    assert.throws(
      () => loadConfig({ ...baseEnv, SITELOG_TEST_STARTUP_HANG: 'await:migrations', SITELOG_TEST_STARTUP_DEADLINE_MS: '3000' }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.problems.length === 2 &&
        err.problems.every((p) => /^SITELOG_TEST_STARTUP_(HANG|DEADLINE_MS): tests only/.test(p)),
    );
  });

  test('when the hang names no step, then the configuration is refused listing the steps', () => {
    assert.throws(
      () => loadConfig({ ...baseEnv, SITELOG_TEST_ROUTES: '1', SITELOG_TEST_STARTUP_HANG: 'await:nowhere' }),
      /SITELOG_TEST_STARTUP_HANG: must name a step: starting, waiting for the database, pool budget, migrations/,
    );
  });
});

type Ended = { code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string };

/** `dist/server.js` as PM2 runs it, without PM2: an IPC channel of its own ('ready' comes back on it), its fatal line to stderr. */
function webProcess(env: NodeJS.ProcessEnv) {
  const started = performance.now();
  // a deadline that never fires must fail the test, not leave a process behind
  const child: ChildProcess = spawn(process.execPath, [path.join(ROOT, 'dist', 'server.js')], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    timeout: 60_000,
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let ready = false;
  child.on('message', (m) => (ready ||= m === 'ready'));
  const ended = new Promise<Ended>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, ms: performance.now() - started, stderr })));
  return { child, ended, isReady: () => ready, elapsedMs: () => performance.now() - started, stderr: () => stderr };
}

describe('a web process whose startup hangs', { timeout: 180_000 }, () => {
  let postgres: TestPostgres;
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  let env: (extra: Record<string, string>) => Promise<NodeJS.ProcessEnv>;

  before(async () => {
    postgres = await startPostgres();
    // the database made and migrated first (`npm run migrate`), so every start below is the quick one
    await promisify(execFile)(process.execPath, [path.join(ROOT, 'dist', 'db', 'migrate-cli.js')], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'], DATABASE_URL: postgres.url('sitelog'), LOG_LEVEL: 'warn' },
    });
    env = async (extra) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-deadline-'));
      dirs.push(dir);
      return {
        PATH: process.env['PATH'],
        HOME: process.env['HOME'],
        ...baseEnv,
        DATABASE_URL: postgres.url('sitelog'),
        LOG_LEVEL: 'info',
        DATA_DIR: dir,
        PORT: String(await freePort()),
        SITELOG_TEST_ROUTES: '1',
        SITELOG_TEST_STARTUP_DEADLINE_MS: String(DEADLINE_MS),
        ...extra,
      };
    };
  });
  after(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
    await postgres?.stop();
  });

  test('when it starts normally, then it turns ready and outlives the deadline: the deadline ends with the startup', async () => {
    const web = webProcess(await env({}));
    children.push(web.child);
    await waitFor('ready', () => web.isReady(), { timeoutMs: DEADLINE_MS });
    await waitFor('the deadline passed, the process alive', () => {
      if (web.child.exitCode !== null || web.child.signalCode !== null) throw new Error(`exited: ${web.child.exitCode ?? web.child.signalCode}\n${web.stderr()}`);
      return web.elapsedMs() > KILLED_BY_MS;
    }, { timeoutMs: KILLED_BY_MS + 1_000 });
    web.child.kill('SIGINT');
    const ended = await web.ended;
    assert.deepEqual([ended.code, ended.signal], [0, null], ended.stderr);
  });

  test('when a pending migration takes longer than the deadline, then the process is not killed: applying migrations is not bounded', async (t) => {
    // a database of its own, made and migrated by this start: the one start that applies migrations
    const web = webProcess(await env({ DATABASE_URL: postgres.url('sitelog_unbounded'), SITELOG_TEST_STARTUP_HANG: 'await:applying migrations' }));
    children.push(web.child);
    await waitFor('the deadline passed twice over, the process alive', () => {
      if (web.child.exitCode !== null || web.child.signalCode !== null) throw new Error(`exited: ${web.child.exitCode ?? web.child.signalCode}\n${web.stderr()}`);
      return web.elapsedMs() > 2 * KILLED_BY_MS;
    }, { timeoutMs: 2 * KILLED_BY_MS + 1_000 });
    t.diagnostic(`alive ${Math.round(web.elapsedMs())} ms into its start (deadline ${DEADLINE_MS} ms)`);
    assert.equal(web.isReady(), false);
    web.child.kill('SIGINT');
    const ended = await web.ended;
    assert.notEqual(ended.signal, 'SIGKILL', ended.stderr);
    assert.doesNotMatch(ended.stderr, /startup_deadline/);
  });

  test('when its event loop blocks for good in the startup log step, then the watchdog kills it within the deadline, naming the step', async (t) => {
    const web = webProcess(await env({ SITELOG_TEST_STARTUP_HANG: 'block:startup log' }));
    children.push(web.child);
    const ended = await web.ended;
    t.diagnostic(`killed ${Math.round(ended.ms)} ms after spawn (deadline ${DEADLINE_MS} ms)`);
    assert.equal(ended.signal, 'SIGKILL');
    assert.ok(ended.ms >= DEADLINE_MS && ended.ms < KILLED_BY_MS, `killed after ${Math.round(ended.ms)} ms`);
    const lines = ended.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, ended.stderr);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.deepEqual([line['level'], line['event'], line['step']], [60, 'startup_deadline', 'startup log']);
    assert.match(String(line['msg']), /stuck in startup step "startup log"/);
  });

  test('when its startup awaits for good in migrations under PM2, then it is killed within the deadline, its log names the step, and PM2 restarts it', async (t) => {
    const stack = await Stack.create({
      instances: 1,
      databaseUrl: postgres.url('sitelog'),
      env: { SITELOG_TEST_ROUTES: '1', SITELOG_TEST_STARTUP_DEADLINE_MS: String(DEADLINE_MS), SITELOG_TEST_STARTUP_HANG: 'await:migrations' },
    });
    try {
      const startedAt = Date.now();
      // returns once the instance is ready or gone: here, when the watchdog has killed it
      await stack.pm2('start', 'ecosystem.config.js');
      const [first] = await waitFor('the fatal line', () => {
        const found = stack.webLogLines().filter((l) => l['event'] === 'startup_deadline');
        return found.length > 0 ? found : undefined;
      }, { timeoutMs: KILLED_BY_MS });
      const restarted = await waitFor('PM2 restarting it', async () => {
        const [web] = await stack.processes('web');
        return web && web.pm2_env.restart_time >= 1 && web.pid !== first!['pid'] ? web : undefined;
      }, { timeoutMs: KILLED_BY_MS });
      const exitedMs = Date.now() - startedAt;
      t.diagnostic(`line at startupMs ${String(first!['startupMs'])}; pm2 start → restarted (pid ${restarted.pid}) in ${exitedMs} ms`);

      assert.deepEqual([first!['level'], first!['step'], first!['instance']], [60, 'migrations', 0]);
      assert.ok(Number(first!['startupMs']) >= DEADLINE_MS && Number(first!['startupMs']) < DEADLINE_MS + 2 * WATCHDOG_CHECK_MS);
      const pm2Log = fs.readFileSync(path.join(stack.env['PM2_HOME']!, 'pm2.log'), 'utf8');
      assert.match(pm2Log, /App \[web:0\] exited with code \[0\] via signal \[SIGKILL\]/);
      // the instance never got as far as the startup log
      const lines = stack.webLogLines();
      assert.equal(lines.filter((l) => l['pid'] === first!['pid'] && /instance 0 (started|restarted)/.test(String(l['msg']))).length, 0);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await stack.diagnosis()}`, { cause: err });
    } finally {
      await stack.stop();
    }
  });
});
