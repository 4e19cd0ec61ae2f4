import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { ROOT } from '../src/ops/pm2.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { Stack } from './support/stack.js';

// `npm run doctor` against a real deployment: silent on a good one, and each known trap, planted
// for real, found and named.

const run = promisify(execFile);
const DOCTOR = path.join(ROOT, 'dist', 'ops', 'doctor.js');

type Report = { code: number; failed: string[]; output: string };

async function doctor(stack: Stack, opts: { prefix?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<Report> {
  const [command, ...args] = [...(opts.prefix ?? []), process.execPath, DOCTOR];
  const result = await run(command, args, { env: { ...stack.env, ...opts.env } }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
  );
  const failed = [...result.stdout.matchAll(/^FAIL (\S+):/gm)].map((m) => m[1]!);
  return { code: result.code, failed, output: result.stdout };
}

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.stop();
});

describe('npm run doctor', { timeout: 180_000 }, () => {
  let stack: Stack;
  before(async () => {
    // pool 30: two instances fit max_connections (2 × 31 + 5), four do not
    stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('sitelog'), proxy: true, env: { DB_POOL_MAX: '30' } });
    await stack.start();
  });
  after(async () => {
    await stack?.stop();
  });

  /** Plants a trap, expects the doctor to name exactly `expected`, then undoes it. */
  async function planted(expected: string[], plant: () => unknown, undo: () => unknown, opts?: Parameters<typeof doctor>[1]) {
    await plant();
    try {
      const report = await doctor(stack, opts);
      assert.equal(report.code, 1, report.output);
      assert.deepEqual(report.failed, expected, report.output);
      assert.match(report.output, /fix: /);
    } finally {
      await undo();
    }
  }

  test('when the deployment is sound, then every check passes and it exits 0', async () => {
    const report = await doctor(stack);
    assert.equal(report.code, 0, report.output);
    assert.deepEqual(report.failed, []);
    assert.match(report.output, /all checks pass/);
    // the report names no secret
    assert.doesNotMatch(report.output, new RegExp(`${stack.env['API_TOKEN']}|test-password`));
  });

  test('when nginx keeps idle upstream connections longer than the app, then keepalive-order fails', async () => {
    const file = path.join(stack.env['DATA_DIR']!, 'nginx', 'sitelog.conf');
    const good = fs.readFileSync(file, 'utf8');
    await planted(
      ['keepalive-order'],
      () => fs.writeFileSync(file, good.replace(/keepalive_timeout 30s;/, 'keepalive_timeout 90s;')),
      () => fs.writeFileSync(file, good),
    );
  });

  test('when the nginx configuration is broken, then nginx-config fails with nginx\'s own message', async () => {
    const file = path.join(stack.env['DATA_DIR']!, 'nginx', 'sitelog-site.conf');
    const good = fs.readFileSync(file, 'utf8');
    await planted(
      ['nginx-config'],
      () => fs.writeFileSync(file, `${good}\nproxy_pas http://sitelog_web;\n`),
      () => fs.writeFileSync(file, good),
    );
  });

  test('when a migration is not applied, then migrations fails naming it', async () => {
    const [row] = await postgres.query<{ name: string }>('sitelog', 'SELECT name FROM sitelog_migrations ORDER BY name DESC LIMIT 1');
    await planted(
      ['migrations'],
      () => postgres.query('sitelog', 'DELETE FROM sitelog_migrations WHERE name = $1', [row!.name]),
      () => postgres.query('sitelog', 'INSERT INTO sitelog_migrations (name) VALUES ($1)', [row!.name]),
    );
  });

  test('when web is scaled past what max_connections allows, then pool-budget fails', async () => {
    await planted(
      ['pool-budget'],
      () => stack.pm2('scale', 'web', '4'),
      async () => {
        await stack.pm2('scale', 'web', '2');
      },
    );
  });

  test("when this host's clock is off, then clock fails", async () => {
    await planted(['clock'], () => undefined, () => undefined, {
      prefix: ['faketime', '-f', '+120s'],
      env: { FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    });
  });

  test('when the log disk is nearly full, then log-disk fails', async () => {
    // a 4 MB file system over PM2's log folder, for the length of the check
    const logs = stack.logDir;
    await planted(
      ['log-disk'],
      () => run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', logs]),
      () => run('umount', [logs]),
    );
  });
});

describe('npm run doctor on PM2 settings that break reloads', { timeout: 120_000 }, () => {
  test('when web runs in fork mode without wait_ready and with short timeouts, then each is named', async () => {
    const stack = await Stack.create({ instances: 1, databaseUrl: postgres.url('sitelog'), proxy: true });
    const trap = path.join(stack.dir, 'trap.config.js');
    fs.writeFileSync(
      trap,
      `const config = require(${JSON.stringify(path.join(ROOT, 'ecosystem.config.js'))});
const web = config.apps.find((a) => a.name === 'web');
Object.assign(web, { exec_mode: 'fork', wait_ready: false, listen_timeout: 3000, kill_timeout: 1000 });
module.exports = config;
`,
    );
    try {
      await stack.pm2('start', trap);
      await stack.waitReady(1);
      const report = await doctor(stack);
      assert.equal(report.code, 1, report.output);
      assert.deepEqual(report.failed, ['cluster-mode', 'wait-ready', 'listen-timeout', 'kill-timeout'], report.output);
    } finally {
      await stack.stop();
    }
  });
});
