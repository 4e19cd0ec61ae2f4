import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { BAD_INPUTS, send } from './support/bad-input.js';
import { percentile, startTraffic } from './support/traffic.js';
import { authHeaders, Stack } from './support/stack.js';

// The whole local stack as `npm start` runs it (PM2: web ×2, embedded PostgreSQL, nginx), reached
// only through nginx, under the seed incident's load.

let stack: Stack;
let db: pg.Client;

async function restarts(): Promise<number[]> {
  return (await stack.processes('web')).map((p) => p.pm2_env.restart_time);
}

before(async () => {
  stack = await Stack.create({ instances: 2, proxy: true });
  await stack.start();
  const secrets = fs.readFileSync(path.join(stack.env['DATA_DIR']!, 'secrets.env'), 'utf8');
  const password = secrets.match(/^EMBEDDED_PG_PASSWORD=(.*)$/m)![1]!;
  db = new pg.Client({ host: '127.0.0.1', port: Number(stack.env['EMBEDDED_PG_PORT']), user: 'postgres', password, database: 'sitelog' });
  await db.connect();
});
after(async () => {
  await db?.end();
  await stack?.stop();
});

describe('the seed incident through nginx', { timeout: 180_000 }, () => {
  test('when / is opened through nginx, then it names the instance that answered', async () => {
    const response = await fetch(stack.url('/'));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('server'), 'nginx');
    assert.match(await response.text(), /served by <strong>instance <span id="instance">[01]<\/span>/);
  });

  test('when 200 clients mix transactional writes and reads for 15 s, then zero errors and every acknowledged write is stored exactly once', async () => {
    const restartsBefore = await restarts();
    const { samples, acks, mismatches } = await startTraffic(stack.url(''), { connections: 200, maxMs: 15_000 }).done;
    const failures = samples.filter((s) => s.status < 200 || s.status >= 300);
    assert.deepEqual(failures.slice(0, 5), []);
    assert.deepEqual(mismatches.slice(0, 5), [], 'every answer matches its request');
    assert.ok(acks.length > 500, `enough writes to mean something (${acks.length})`);

    const { rows } = await db.query<{ request_id: string; n: string; id: string; description: string }>(
      `SELECT request_id, count(*) AS n, min(id) AS id, min(description) AS description
       FROM system_logs WHERE request_id = ANY($1) GROUP BY request_id`,
      [acks.map((a) => a.key)],
    );
    const stored = new Map(rows.map((r) => [r.request_id, r]));
    for (const ack of acks) {
      const row = stored.get(ack.key);
      assert.ok(row, `acknowledged write ${ack.key} is stored`);
      assert.equal(row.n, '1');
      assert.equal(Number(row.id), ack.id);
      assert.equal(row.description, ack.description);
    }
    const instances = await db.query(`SELECT DISTINCT instance FROM system_logs WHERE request_id = ANY($1)`, [
      acks.map((a) => a.key),
    ]);
    assert.equal(instances.rowCount, 2, 'both instances served writes');
    assert.deepEqual(await restarts(), restartsBefore, 'no worker restarted');
    const p99 = percentile(samples.map((s) => s.ms), 99);
    process.stdout.write(`# incident load: ${samples.length} requests, ${acks.length} writes, p99 ${p99.toFixed(1)} ms\n`);
  });

  test('when bad input arrives through nginx, then each gets its status, no 5xx and no worker restart', async () => {
    const restartsBefore = await restarts();
    for (const input of BAD_INPUTS) {
      const response = await send(stack.url(''), input);
      assert.equal(response.status, input.status, input.name);
      assert.match(String(response.headers.get('content-type')), /^application\/json/, input.name);
      const body = (await response.json()) as { error: { code: string } };
      if (input.code) assert.equal(body.error.code, input.code, input.name);
    }
    assert.deepEqual(await restarts(), restartsBefore);
  });

  test('when a client forges X-Forwarded-For, then the stored ip is still its real address', async () => {
    const response = await fetch(stack.url('/api/logs'), {
      method: 'POST',
      headers: authHeaders({ 'content-type': 'application/json', 'x-forwarded-for': '6.6.6.6', 'user-agent': 'forger/1' }),
      body: JSON.stringify({ stype: 'security', description: 'forged address' }),
    });
    const entry = (await response.json()) as { ip: string; user_agent: string; request_id: string };
    assert.equal(response.status, 201);
    assert.equal(entry.ip, '127.0.0.1');
    assert.equal(entry.user_agent, 'forger/1');
    assert.match(entry.request_id, /^[0-9a-f]{32}$/, "nginx's $request_id");
  });
});
