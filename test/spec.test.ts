import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { localStack } from '../src/ops/stack.js';
import { startApp } from './support/app.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { ADMIN_PASSWORD, API_TOKEN, authHeaders } from './support/stack.js';

// SPEC.md's promises that no other test held the product to: health without the database, 503 with
// Retry-After, 401 on every authenticated route, one line per bad variable and exit 78, tokens
// required in production, PROXY_PORT=0, and an ecosystem.config.js that only declares.

const ROOT = path.resolve(__dirname, '..');
const exec = promisify(execFile);

describe('when the database goes away', () => {
  let postgres: TestPostgres;
  let app: Awaited<ReturnType<typeof startApp>>;
  before(async () => {
    postgres = await startPostgres();
    app = await startApp(postgres.url('spec_outage'));
    await postgres.stop();
  });
  after(async () => {
    await app?.stop();
  });

  test('then /healthz still answers 200, without the database', async () => {
    const response = await fetch(`${app.base}/healthz`);
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { status: string }).status, 'ok');
  });

  test('then /readyz answers 503 with Retry-After', async () => {
    const response = await fetch(`${app.base}/readyz`);
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '1');
    assert.equal(((await response.json()) as { database: boolean }).database, false);
  });

  test('then the API answers 503 with Retry-After and SITELOG_DB_UNAVAILABLE, to reads and writes', async () => {
    const requests: Array<[string, RequestInit]> = [
      ['/api/logs?limit=1', {}],
      ['/api/logs', { method: 'POST', body: JSON.stringify({ stype: 'app', description: 'while away' }), headers: { 'content-type': 'application/json' } }],
    ];
    for (const [url, init] of requests) {
      const response = await fetch(`${app.base}${url}`, { ...init, headers: authHeaders(init.headers as Record<string, string>) });
      assert.equal(response.status, 503, url);
      assert.equal(response.headers.get('retry-after'), '1', url);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'SITELOG_DB_UNAVAILABLE', url);
    }
  });
});

describe('authentication', () => {
  let postgres: TestPostgres;
  let app: Awaited<ReturnType<typeof startApp>>;
  before(async () => {
    postgres = await startPostgres();
    app = await startApp(postgres.url('spec_auth'));
  });
  after(async () => {
    await app?.stop();
    await postgres?.stop();
  });

  const routes: Array<[string, string]> = [
    ['GET', '/api/logs'],
    ['GET', '/api/logs/1'],
    ['POST', '/api/logs'],
    ['GET', '/api/instances'],
    ['GET', '/api/starts'],
  ];
  for (const [method, route] of routes) {
    test(`when ${method} ${route} comes without credentials or with a wrong token, then 401 SITELOG_UNAUTHORIZED and nothing stored`, async () => {
      const attempts: Array<Record<string, string>> = [{}, { authorization: 'Bearer wrong-token-wrong-token' }, { authorization: `Basic ${API_TOKEN}` }];
      for (const headers of attempts) {
        const init: RequestInit = { method, headers: { ...headers, 'content-type': 'application/json' } };
        if (method === 'POST') init.body = JSON.stringify({ stype: 'app', description: 'not allowed' });
        const response = await fetch(`${app.base}${route}`, init);
        assert.equal(response.status, 401, JSON.stringify(headers));
        assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'SITELOG_UNAUTHORIZED');
      }
      assert.equal((await postgres.query('spec_auth', `SELECT 1 FROM system_logs WHERE description = 'not allowed'`)).length, 0);
    });
  }
});

describe('configuration', () => {
  /** `node dist/server.js` with only `env` (no PM2, no secrets file): its exit code and stderr. */
  const server = (env: Record<string, string>) =>
    exec(process.execPath, [path.join(ROOT, 'dist', 'server.js')], { env: { PATH: process.env['PATH'], ...env }, timeout: 20_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
    );
  const valid = { DATABASE_URL: 'postgres://u:secret-password@127.0.0.1:1/x', API_TOKEN, ADMIN_PASSWORD };

  const cases: Array<[string, Record<string, string>, RegExp]> = [
    ['PORT is not a port', { PORT: 'http' }, /^ {2}PORT: .* \("http"\)$/m],
    ['PROXY_PORT is negative', { PROXY_PORT: '-1' }, /^ {2}PROXY_PORT: .* \("-1"\)$/m],
    ['WEB_INSTANCES is 0', { WEB_INSTANCES: '0' }, /^ {2}WEB_INSTANCES: .* \("0"\)$/m],
    ['DATABASE_URL is not PostgreSQL', { DATABASE_URL: 'mysql://u:p@h/db' }, /^ {2}DATABASE_URL: must be postgres:\/\/user:password@host:port\/database \(value hidden\)$/m],
    ['DATABASE_DIRECT_URL is not PostgreSQL', { DATABASE_DIRECT_URL: 'pgbouncer-host:6432' }, /^ {2}DATABASE_DIRECT_URL: must be postgres:\/\/user:password@host:port\/database \(value hidden\)$/m],
    ['DATABASE_READ_URLS names a bad replica', { DATABASE_READ_URLS: 'postgres://u:secret-password@r1:5432/x, r2' }, /^ {2}DATABASE_READ_URLS: must be postgres:\/\/ URLs separated by commas \(value hidden\)$/m],
    ['DB_POOL_MAX is 0', { DB_POOL_MAX: '0' }, /^ {2}DB_POOL_MAX: .* \("0"\)$/m],
    ['API_TOKEN is short', { API_TOKEN: 'short' }, /^ {2}API_TOKEN: must be at least 16 characters \(value hidden\)$/m],
    ['ADMIN_PASSWORD is short', { ADMIN_PASSWORD: 'short' }, /^ {2}ADMIN_PASSWORD: must be at least 8 characters \(value hidden\)$/m],
    ['LOG_LEVEL is unknown', { LOG_LEVEL: 'loud' }, /^ {2}LOG_LEVEL: .* \("loud"\)$/m],
    ['BIND_ADDRESS is a name', { BIND_ADDRESS: 'localhost' }, /^ {2}BIND_ADDRESS: must be an IPv4 or IPv6 address \("localhost"\)$/m],
    ['TRUST_PROXY is garbage', { TRUST_PROXY: 'everyone' }, /^ {2}TRUST_PROXY: must be "loopback" or addresses\/CIDRs separated by commas/m],
  ];
  for (const [when, bad, line] of cases) {
    test(`when ${when}, then web exits 78 with one line naming it, and no secret in it`, async () => {
      const { code, stderr } = await server({ ...valid, ...bad });
      assert.equal(code, 78);
      assert.match(stderr, /^sitelog: invalid configuration:$/m);
      assert.match(stderr, line);
      assert.equal(stderr.trim().split('\n').length, 2, stderr);
      assert.doesNotMatch(stderr, /secret-password|short/);
    });
  }

  test('when several variables are bad, then every one is reported at once', async () => {
    const { code, stderr } = await server({ ...valid, PORT: 'x', WEB_INSTANCES: 'many', LOG_LEVEL: 'loud' });
    assert.equal(code, 78);
    assert.deepEqual(stderr.trim().split('\n').slice(1).map((l) => l.trim().split(':')[0]).sort(), ['LOG_LEVEL', 'PORT', 'WEB_INSTANCES']);
  });

  test('when production has no secrets file and no tokens, then web refuses to start and names them', async () => {
    const { code, stderr } = await server({ DATABASE_URL: valid.DATABASE_URL });
    assert.equal(code, 78);
    assert.match(stderr, /^ {2}API_TOKEN: required \(unset\)$/m);
    assert.match(stderr, /^ {2}ADMIN_PASSWORD: required \(unset\)$/m);
  });

  test('when PROXY_PORT is 0, then the stack declares no proxy and its URL is the web instances', () => {
    const stack = localStack({ PROXY_PORT: '0', PORT: '3999' });
    assert.equal(stack.proxy, undefined);
    assert.equal(stack.url, 'http://127.0.0.1:3999/');
    assert.deepEqual(stack.notices, []);
  });

  test('when ecosystem.config.js is evaluated, then it declares the apps and writes nothing', async () => {
    const dataDir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-eco-')), 'data');
    const script = `const c = require(${JSON.stringify(path.join(ROOT, 'ecosystem.config.js'))}); console.log(JSON.stringify(c.apps.map((a) => a.name)))`;
    const { stdout } = await exec(process.execPath, ['-e', script], { env: { PATH: process.env['PATH'], DATA_DIR: dataDir, PROXY_PORT: '0' } });
    assert.deepEqual(JSON.parse(stdout), ['web', 'db', 'logrotate']);
    assert.equal(fs.existsSync(dataDir), false, 'no DATA_DIR, no secrets, no nginx config');
    fs.rmSync(path.dirname(dataDir), { recursive: true });
  });
});
