import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { freePort } from './support/ports.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { ADMIN_PASSWORD, API_TOKEN, uncleanLines } from './support/stack.js';
import { waitFor } from './support/wait.js';

// A real race, not PM2's: under `wait_ready` PM2 starts a host's instances one after another, so the
// PM2 tests never have two instances deciding at the same moment. Here every web process of two
// hosts is launched in the same instant against a database that does not exist yet.

const ROOT = path.resolve(__dirname, '..');
const HOSTS = ['race-a', 'race-b'];
const PER_HOST = 3;

type Web = { child: ChildProcess; host: string; instance: number; lines: string[] };

let postgres: TestPostgres;
const webs: Web[] = [];

before(async () => {
  postgres = await startPostgres();
});

after(async () => {
  await Promise.all(
    webs.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGINT');
      await once(child, 'exit');
    }),
  );
  await postgres?.stop();
});

test('when every instance of two hosts starts in the same instant and the database does not exist, then it is created once, migrated once, and each host writes one "server started" and one entry per instance', async () => {
  const database = 'race_site';
  const ports = await Promise.all(HOSTS.flatMap(() => Array.from({ length: PER_HOST }, () => freePort())));
  const serverLogBefore = postgres.log().length;
  for (const [h, host] of HOSTS.entries()) {
    for (let instance = 0; instance < PER_HOST; instance += 1) {
      const env = {
        PATH: process.env['PATH'],
        DATABASE_URL: postgres.url(database),
        API_TOKEN,
        ADMIN_PASSWORD,
        SITELOG_HOST: host,
        NODE_APP_INSTANCE: String(instance),
        WEB_INSTANCES: String(PER_HOST),
        PORT: String(ports[h * PER_HOST + instance]),
        LOG_LEVEL: 'info',
      };
      const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'server.js')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      const web: Web = { child, host, instance, lines: [] };
      child.stdout.on('data', (chunk: Buffer) => web.lines.push(...chunk.toString().split('\n').filter(Boolean)));
      child.stderr.on('data', (chunk: Buffer) => web.lines.push(...chunk.toString().split('\n').filter(Boolean)));
      webs.push(web);
    }
  }
  await waitFor('every instance ready', () => webs.every((w) => w.lines.some((l) => l.includes(`"msg":"instance ${w.instance} ready"`))), { timeoutMs: 90_000 });

  const all = webs.flatMap((w) => w.lines);
  const messages = all.map((l) => (JSON.parse(l) as { msg: string }).msg);
  const migrations = fs.readdirSync(path.join(ROOT, 'src', 'db', 'migrations')).length;
  assert.equal(messages.filter((m) => m === 'database created').length, 1);
  assert.equal(messages.filter((m) => m === 'migration applied').length, migrations);
  assert.deepEqual(uncleanLines(all.join('\n')), []);
  assert.deepEqual(uncleanLines(postgres.log().slice(serverLogBefore)), []);
  for (const host of HOSTS) {
    const rows = await postgres.query<{ description: string }>(database, `SELECT description FROM system_logs WHERE host = $1 AND stype = 'system' ORDER BY id`, [host]);
    const descriptions = rows.map((r) => r.description);
    assert.equal(descriptions.filter((d) => d === 'server started').length, 1, host);
    const pids = webs.filter((w) => w.host === host).map((w) => `instance ${w.instance} started (pid ${w.child.pid})`);
    assert.deepEqual(descriptions.filter((d) => d !== 'server started').sort(), pids.sort(), host);
  }
});
