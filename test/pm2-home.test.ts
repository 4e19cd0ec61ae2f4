import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { daemonRuns, listAll } from '../src/ops/pm2.js';

// Reading PM2 never starts it: a home whose daemon is gone, even one killed -9 with its sockets and
// pid file left behind, lists nothing.

const home = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-pm2-home-'));
after(() => fs.rmSync(home, { recursive: true, force: true }));

/** The pid of a process that has exited. */
const deadPid = () => spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).stdout.trim();

describe("a PM2 home's daemon", () => {
  test('when the home has no pid file, then no daemon runs', () => {
    assert.equal(daemonRuns(home), false);
  });

  test('when the pid file names a process that is alive, then it runs', () => {
    fs.writeFileSync(path.join(home, 'pm2.pid'), String(process.pid));
    assert.equal(daemonRuns(home), true);
  });

  test('when a daemon was killed -9 (pid file and sockets left behind), then listing finds nothing and starts nothing', async () => {
    fs.writeFileSync(path.join(home, 'pm2.pid'), deadPid());
    fs.writeFileSync(path.join(home, 'rpc.sock'), '');
    assert.equal(daemonRuns(home), false);
    assert.deepEqual(await listAll({ PM2_HOME: home, PATH: process.env['PATH'] }), []);
    assert.ok(!fs.existsSync(path.join(home, 'pm2.log')), 'no daemon was started');
  });
});
