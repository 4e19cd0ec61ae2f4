import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { pm2Invocation } from '../src/ops/stack.js';

// What ecosystem.config.js declares for each PM2 command that evaluates it. The PM2 runs of
// test/startup-log.test.ts and test/first-five-minutes.test.ts prove reloads end to end.

const ROOT = path.resolve(__dirname, '..');
const PM2 = '/app/node_modules/pm2/bin/pm2';

describe("PM2's command, as the ecosystem file reads it", () => {
  const cases: Array<[string[], { reloading: boolean; production: boolean }]> = [
    [['start', 'ecosystem.config.js'], { reloading: false, production: false }],
    [['reload', 'ecosystem.config.js'], { reloading: true, production: false }],
    [['reload', 'ecosystem.config.js', '--env', 'production'], { reloading: true, production: true }],
    [['--no-color', 'reload', 'ecosystem.config.js'], { reloading: true, production: false }],
    [['start', 'ecosystem.config.js', '--env=production'], { reloading: false, production: true }],
    [['startOrReload', 'ecosystem.config.js'], { reloading: false, production: false }],
    [['start', 'ecosystem.config.js', '--only', 'reload'], { reloading: false, production: false }],
    [['start', 'ecosystem.config.js', '--env', 'staging'], { reloading: false, production: false }],
  ];
  for (const [args, expected] of cases) {
    test(`when pm2 ${args.join(' ')} evaluates it, then ${JSON.stringify(expected)}`, () => {
      assert.deepEqual(pm2Invocation(['node', PM2, ...args]), expected);
    });
  }

  /** The apps a PM2 command declares when it evaluates `file` (PROXY_PORT=0: no nginx). */
  const declared = async (file: string, ...args: string[]) => {
    const argv = ['node', 'pm2', ...args, file];
    const script = `process.argv = ${JSON.stringify(argv)}; console.log(JSON.stringify(require('./${file}').apps.map((a) => a.name)))`;
    const env = { PATH: process.env['PATH'], HOME: process.env['HOME'], DATA_DIR: '/nonexistent/sitelog-ecosystem-test', PROXY_PORT: '0' };
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { cwd: ROOT, env });
    return JSON.parse(stdout) as string[];
  };

  test('when the file is evaluated for a local reload, then it declares web alone; for a start, web, the database and the log rotation (PROXY_PORT=0: no nginx)', async () => {
    assert.deepEqual(await declared('ecosystem.config.js', 'reload'), ['web']);
    assert.deepEqual(await declared('ecosystem.config.js', 'start'), ['web', 'db', 'logrotate']);
  });

  test('when the file is evaluated with --env production, then only web runs from it (SPEC); deploy.sh starts the log rotation from deploy/logrotate.config.js', async () => {
    assert.deepEqual(await declared('ecosystem.config.js', 'start', '--env', 'production'), ['web']);
    assert.deepEqual(await declared('ecosystem.config.js', 'reload', '--env', 'production'), ['web']);
    assert.deepEqual(await declared('deploy/logrotate.config.js', 'start'), ['logrotate']);
  });
});
