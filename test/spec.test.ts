import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import type { AppContext } from '../src/context.js';
import { createApp } from '../src/app.js';
import { authenticate } from '../src/auth.js';
import { envFields, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
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

type Route = { method: string; path: string };
type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle: { stack?: Layer[] } };

/**
 * Every route the app declares, read from its routers' stacks (each layer's route.path and
 * route.methods), so a new route is tested here without anyone remembering to list it. The app is
 * built with the real config and authentication, and stand-ins for what only requests touch.
 */
function declaredRoutes(): Route[] {
  const config = loadConfig({ DATABASE_URL: 'postgres://u:p@127.0.0.1:1/x', API_TOKEN, ADMIN_PASSWORD, LOG_LEVEL: 'silent', DATA_DIR: os.tmpdir() });
  const ctx = {
    config,
    logger: createLogger({ host: 'routes', instance: 0, level: 'silent' }),
    auth: authenticate(config.API_TOKEN),
    metrics: { host: {}, instruments: {} },
    inFlight: {},
    gate: {},
    sequelize: {},
    addSystemLog: () => undefined,
  } as unknown as AppContext;
  const app = createApp(ctx) as unknown as { router: { stack: Layer[] } };
  const walk = (stack: Layer[]): Route[] =>
    stack.flatMap((layer) =>
      layer.route
        ? Object.keys(layer.route.methods).map((method) => ({ method: method.toUpperCase(), path: layer.route!.path }))
        : layer.handle.stack
          ? walk(layer.handle.stack)
          : [],
    );
  return walk(app.router.stack);
}
const routeName = (r: Route) => `${r.method} ${r.path}`;

/** The routes anyone may reach: probes, the home page, the console's login and assets, and /metrics (nginx limits it by address). */
const ANONYMOUS = [
  'GET /healthz',
  'GET /readyz',
  'GET /',
  'GET /metrics',
  'GET /console/assets/:file',
  'GET /console/',
  'GET /console/login',
  'POST /console/login',
];
const AUTHENTICATED = declaredRoutes().filter((r) => !ANONYMOUS.includes(routeName(r)));

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

  const attempts: Array<[string, Record<string, string>]> = [
    ['no credentials', {}],
    ['a wrong bearer token', { authorization: 'Bearer wrong-token-wrong-token' }],
    ['the token as Basic', { authorization: `Basic ${API_TOKEN}` }],
    ['a session cookie that names no session', { cookie: 'sitelog_session=no-such-session-no-such-session' }],
  ];
  for (const { method, path: declared } of AUTHENTICATED) {
    const url = declared.replace(/:\w+/g, '1');
    const page = method === 'GET' && declared.startsWith('/console');
    const then = page ? '303 to the login page' : '401 SITELOG_UNAUTHORIZED';
    test(`when ${method} ${declared} comes without credentials or with wrong ones, then ${then} and nothing stored`, async () => {
      const [before] = await postgres.query<{ n: string; last: string | null }>('spec_auth', 'SELECT count(*) AS n, max(id) AS last FROM system_logs');
      for (const [what, headers] of attempts) {
        const init: RequestInit = { method, redirect: 'manual', headers: { ...headers, 'content-type': 'application/json' } };
        if (method === 'POST') init.body = JSON.stringify({ stype: 'app', description: 'not allowed', address: '127.0.0.1', _csrf: 'x' });
        const response = await fetch(`${app.base}${url}`, init);
        if (page) {
          assert.equal(response.status, 303, what);
          assert.equal(response.headers.get('location'), '/console/login', what);
        } else {
          assert.equal(response.status, 401, what);
          assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'SITELOG_UNAUTHORIZED', what);
        }
      }
      const [after] = await postgres.query<{ n: string; last: string | null }>('spec_auth', 'SELECT count(*) AS n, max(id) AS last FROM system_logs');
      assert.deepEqual(after, before, 'no entry written');
    });
  }

  test('when the app declares its routes, then each is tested above unless it is anonymous by name', () => {
    const declared = declaredRoutes().map(routeName);
    const tested = AUTHENTICATED.map(routeName);
    // the introspection sees every router: SPEC's API routes, the live view and the console's forms are among those tested
    for (const name of ['GET /api/logs', 'GET /api/logs/:id', 'POST /api/logs', 'GET /api/instances', 'GET /api/starts', 'GET /api/instances/live', 'POST /console/logout', 'GET /console']) {
      assert.ok(tested.includes(name), name);
    }
    assert.deepEqual(ANONYMOUS.filter((name) => !declared.includes(name)), [], 'an anonymous route named here that the app no longer declares');
  });
});

describe('configuration', () => {
  /** `node dist/server.js` with only `env` (no PM2, no secrets file): its exit code and stderr. */
  const server = (env: Record<string, string>) =>
    exec(process.execPath, [path.join(ROOT, 'dist', 'server.js')], { env: { PATH: process.env['PATH'], ...env }, timeout: 20_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
    );
  const valid = { DATABASE_URL: 'postgres://u:secret-password@127.0.0.1:1/x', API_TOKEN, ADMIN_PASSWORD };

  type Case = { variable: string; when: string; env: Record<string, string | undefined>; line: RegExp };
  /** A bad value of each variable, and the one line that must name it (the value shown unless secret). */
  const cases: Case[] = [
    { variable: 'PORT', when: 'PORT is not a port', env: { PORT: 'http' }, line: /^ {2}PORT: .* \("http"\)$/m },
    { variable: 'PORT', when: 'PORT is above 65535', env: { PORT: '65536' }, line: /^ {2}PORT: .* \("65536"\)$/m },
    { variable: 'PROXY_PORT', when: 'PROXY_PORT is negative', env: { PROXY_PORT: '-1' }, line: /^ {2}PROXY_PORT: .* \("-1"\)$/m },
    { variable: 'WEB_INSTANCES', when: 'WEB_INSTANCES is 0', env: { WEB_INSTANCES: '0' }, line: /^ {2}WEB_INSTANCES: .* \("0"\)$/m },
    { variable: 'WEB_INSTANCES', when: 'WEB_INSTANCES is neither a number nor max', env: { WEB_INSTANCES: 'all' }, line: /^ {2}WEB_INSTANCES: .* \("all"\)$/m },
    {
      variable: 'DATABASE_URL',
      when: 'DATABASE_URL is not PostgreSQL',
      env: { DATABASE_URL: 'mysql://u:p@h/db' },
      line: /^ {2}DATABASE_URL: must be postgres:\/\/user:password@host:port\/database \(value hidden\)$/m,
    },
    // production: no secrets file, so no embedded database to fall back on
    { variable: 'DATABASE_URL', when: 'DATABASE_URL is unset in production', env: { DATABASE_URL: undefined }, line: /^ {2}DATABASE_URL: required \(unset\)$/m },
    { variable: 'EMBEDDED_PG_PORT', when: 'EMBEDDED_PG_PORT is not a port', env: { EMBEDDED_PG_PORT: '70000' }, line: /^ {2}EMBEDDED_PG_PORT: .* \("70000"\)$/m },
    { variable: 'DB_POOL_MAX', when: 'DB_POOL_MAX is 0', env: { DB_POOL_MAX: '0' }, line: /^ {2}DB_POOL_MAX: .* \("0"\)$/m },
    { variable: 'API_TOKEN', when: 'API_TOKEN is short', env: { API_TOKEN: 'short' }, line: /^ {2}API_TOKEN: must be at least 16 characters \(value hidden\)$/m },
    { variable: 'ADMIN_PASSWORD', when: 'ADMIN_PASSWORD is short', env: { ADMIN_PASSWORD: 'short' }, line: /^ {2}ADMIN_PASSWORD: must be at least 8 characters \(value hidden\)$/m },
    { variable: 'SITELOG_HOST', when: 'SITELOG_HOST is longer than a host name', env: { SITELOG_HOST: 'h'.repeat(256) }, line: /^ {2}SITELOG_HOST: .* \("h{256}"\)$/m },
    { variable: 'LOG_LEVEL', when: 'LOG_LEVEL is unknown', env: { LOG_LEVEL: 'loud' }, line: /^ {2}LOG_LEVEL: .* \("loud"\)$/m },
    { variable: 'BIND_ADDRESS', when: 'BIND_ADDRESS is a name', env: { BIND_ADDRESS: 'localhost' }, line: /^ {2}BIND_ADDRESS: must be an IPv4 or IPv6 address \("localhost"\)$/m },
    {
      variable: 'BIND_ADDRESS',
      when: 'BIND_ADDRESS is reachable from other hosts while TRUST_PROXY trusts only loopback',
      env: { BIND_ADDRESS: '10.0.0.5' },
      line: /^ {2}BIND_ADDRESS 10\.0\.0\.5 is reachable from other hosts, but TRUST_PROXY trusts only loopback: .*$/m,
    },
    { variable: 'TRUST_PROXY', when: 'TRUST_PROXY is garbage', env: { TRUST_PROXY: 'everyone' }, line: /^ {2}TRUST_PROXY: must be "loopback" or addresses\/CIDRs separated by commas \("everyone"\)$/m },
    { variable: 'LOG_RETENTION_DAYS', when: 'LOG_RETENTION_DAYS is 0', env: { LOG_RETENTION_DAYS: '0' }, line: /^ {2}LOG_RETENTION_DAYS: .* \("0"\)$/m },
    { variable: 'LOG_RETENTION_DAYS', when: 'LOG_RETENTION_DAYS is not a number', env: { LOG_RETENTION_DAYS: 'a week' }, line: /^ {2}LOG_RETENTION_DAYS: .* \("a week"\)$/m },
    {
      variable: 'DATABASE_DIRECT_URL',
      when: 'DATABASE_DIRECT_URL is not PostgreSQL',
      env: { DATABASE_DIRECT_URL: 'pgbouncer-host:6432' },
      line: /^ {2}DATABASE_DIRECT_URL: must be postgres:\/\/user:password@host:port\/database \(value hidden\)$/m,
    },
    {
      variable: 'DATABASE_READ_URLS',
      when: 'DATABASE_READ_URLS names a bad replica',
      env: { DATABASE_READ_URLS: 'postgres://u:secret-password@r1:5432/x, r2' },
      line: /^ {2}DATABASE_READ_URLS: must be postgres:\/\/ URLs separated by commas \(value hidden\)$/m,
    },
    { variable: 'METRICS_ALLOW', when: 'METRICS_ALLOW is a name', env: { METRICS_ALLOW: 'monitoring.example' }, line: /^ {2}METRICS_ALLOW: must be addresses\/CIDRs separated by commas \("monitoring\.example"\)$/m },
  ];
  for (const { variable, when, env, line } of cases) {
    test(`when ${when}, then web exits 78 with one line naming ${variable}, and no secret in it`, async () => {
      const merged = Object.entries({ ...valid, ...env }).filter((e): e is [string, string] => e[1] !== undefined);
      const { code, stderr } = await server(Object.fromEntries(merged));
      assert.equal(code, 78, stderr);
      assert.match(stderr, /^sitelog: invalid configuration:$/m);
      assert.match(stderr, line);
      assert.ok(stderr.includes(`\n  ${variable}`), `the line names ${variable}`);
      assert.equal(stderr.trim().split('\n').length, 2, stderr);
      assert.doesNotMatch(stderr, /secret-password|short/);
    });
  }

  /**
   * SPEC's Environment variables that no value makes invalid at startup: any DATA_DIR is a path
   * config.ts accepts (a folder that cannot be made fails later, at its first use, not as a line).
   */
  const NO_BAD_VALUE = new Set(['DATA_DIR']);

  // the contract lives beside the repository (../shared, as CI has it); a clone on its own has none to read
  const SPEC_FILE = path.join(ROOT, '..', 'shared', 'SPEC.md');
  const noSpec = fs.existsSync(SPEC_FILE) ? false : `no ${SPEC_FILE} beside this clone`;

  test("when SPEC's Environment table names a variable, then a case above gives it a bad value (or it has none, by name)", { skip: noSpec }, () => {
    const spec = fs.readFileSync(SPEC_FILE, 'utf8');
    const section = spec.slice(spec.indexOf('## Environment'), spec.indexOf('\n## ', spec.indexOf('## Environment') + 1));
    const rows = section.split('\n').filter((l) => /^\| `[A-Z]/.test(l));
    const variables = rows.flatMap((row) => [...row.split('|')[1]!.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]!));
    assert.ok(variables.length >= 17, `SPEC's table read: ${variables.join(', ')}`);
    const missing = variables.filter((v) => !NO_BAD_VALUE.has(v) && !cases.some((c) => c.variable === v));
    assert.deepEqual(missing, []);
    for (const name of NO_BAD_VALUE) {
      // what "no bad value" rests on: the schema takes any string for it
      const field = envFields[name as keyof typeof envFields];
      assert.equal(field.safeParse('/no/such/folder/..//x y').success, true, name);
    }
  });

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
