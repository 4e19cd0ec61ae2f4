import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadConfig, ConfigError } from '../src/config.js';
import { startApp } from './support/app.js';
import { ConsoleClient } from './support/console.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { ADMIN_PASSWORD, API_TOKEN, authHeaders } from './support/stack.js';
import { waitFor } from './support/wait.js';

// The app's side of the security review (#11), item by item, against real web processes and a real
// PostgreSQL. nginx's side (the login limit's spellings, TLS, retries) is in test/nginx-security.test.ts.
// Each test comes from addresses of its own (X-Forwarded-For, believed from the loopback proxy), so
// no test's failed logins count against another's.

let postgres: TestPostgres;
let one: Awaited<ReturnType<typeof startApp>>;
let two: Awaited<ReturnType<typeof startApp>>;
const DB = 'security_test';

before(async () => {
  postgres = await startPostgres();
  one = await startApp(postgres.url(DB), { SITELOG_HOST: 'security-a' });
  two = await startApp(postgres.url(DB), { SITELOG_HOST: 'security-b' });
});
after(async () => {
  await one?.stop();
  await two?.stop();
  await postgres?.stop();
});

const FAILED_LOGIN = 'failed console login';

/** A console user behind nginx at `address` (each test its own: the untrusting app's client is 127.0.0.1). */
const browserAt = (base: string, address: string) => new ConsoleClient(base, { 'x-forwarded-for': address });

/** A login attempt as nginx would pass it on for a browser at `address`. */
const attempt = (base: string, address: string, password = 'wrong-password', headers: Record<string, string> = {}) =>
  new ConsoleClient(base, { 'x-forwarded-for': address, ...headers }).login(password);

async function failuresRecorded(ip: string): Promise<number> {
  const rows = await postgres.query<{ n: number }>(DB, `SELECT count(*)::int AS n FROM system_logs WHERE stype = 'security' AND description = $1 AND ip = $2`, [FAILED_LOGIN, ip]);
  return rows[0]!.n;
}

describe('the login throttle', () => {
  test('when 20 wrong guesses from one address arrive at once on two instances, then exactly 5 are checked and 15 refused', async () => {
    const address = '198.51.100.20';
    const statuses = await Promise.all(Array.from({ length: 20 }, (_, i) => attempt(i % 2 ? two.base : one.base, address).then((r) => r.status)));
    assert.equal(statuses.filter((s) => s === 401).length, 5, `statuses: ${statuses.join(',')}`);
    assert.equal(statuses.filter((s) => s === 429).length, 15, `statuses: ${statuses.join(',')}`);
    assert.equal(await failuresRecorded(address), 5);
  });

  test('when an address has used its guesses, then even the right password waits (Retry-After)', async () => {
    const address = '198.51.100.21';
    for (let i = 0; i < 5; i += 1) assert.equal((await attempt(one.base, address)).status, 401);
    const right = await attempt(two.base, address, ADMIN_PASSWORD);
    assert.equal(right.status, 429);
    assert.ok(Number(right.headers.get('retry-after')) > 0);
  });

  test('when a client rotates addresses within one IPv6 /64, then they share one limit; another /64 has its own', async () => {
    const statuses = [];
    for (let i = 1; i <= 7; i += 1) statuses.push((await attempt(one.base, `2001:db8:1:2::${i.toString(16)}`)).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429, 429]);
    assert.equal((await attempt(one.base, '2001:db8:1:2:ffff:ffff:ffff:ffff')).status, 429, 'the last address of the /64');
    assert.equal((await attempt(one.base, '2001:db8:1:3::1')).status, 401, 'the next /64');
  });

  test('when an IPv4 client arrives as an IPv4-mapped IPv6 address, then it is limited as its IPv4 address', async () => {
    for (let i = 0; i < 5; i += 1) assert.equal((await attempt(one.base, '198.51.100.22')).status, 401);
    assert.equal((await attempt(one.base, '::ffff:198.51.100.22')).status, 429);
    assert.equal((await attempt(one.base, '::ffff:198.51.100.23')).status, 401, 'another IPv4 address is not its /64');
  });

  test('when the proxy repeats one X-Request-Id on every guess, then every failure still counts', async () => {
    const statuses = [];
    for (let i = 0; i < 6; i += 1) statuses.push((await attempt(one.base, '198.51.100.25', 'wrong-password', { 'x-request-id': 'one-id-for-every-guess' })).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
  });

  test('when an API client writes an entry that looks like an unlock, then the lock stays', async () => {
    const address = '198.51.100.26';
    for (let i = 0; i < 5; i += 1) await attempt(one.base, address);
    const forged = await fetch(`${one.base}/api/logs`, {
      method: 'POST',
      headers: authHeaders({ 'content-type': 'application/json', 'x-forwarded-for': address }),
      body: JSON.stringify({ stype: 'security', description: `console: unlocked ${address} (from ${address})` }),
    });
    assert.equal(forged.status, 201);
    assert.equal((await attempt(one.base, address)).status, 429);
  });

  test('when a failure cannot be recorded, then the login is refused, not checked', async () => {
    const address = '198.51.100.24';
    // system_logs refuses writes for the moment: the throttle cannot count, so it does not let the guess through
    await postgres.query(DB, `ALTER TABLE system_logs ADD CONSTRAINT security_test_no_writes CHECK (description <> '${FAILED_LOGIN}') NOT VALID`);
    try {
      const wrong = await attempt(one.base, address);
      assert.equal(wrong.status, 503);
      const right = await attempt(one.base, address, ADMIN_PASSWORD);
      assert.equal(right.status, 303, 'the right password still logs in: only an unrecorded failure is refused');
    } finally {
      await postgres.query(DB, 'ALTER TABLE system_logs DROP CONSTRAINT security_test_no_writes');
    }
  });
});

describe('whom the app believes', () => {
  let untrusting: Awaited<ReturnType<typeof startApp>>;
  before(async () => {
    // the app port reached without nginx: the client (loopback here) is not TRUST_PROXY's peer
    untrusting = await startApp(postgres.url(DB), { SITELOG_HOST: 'security-c', TRUST_PROXY: '192.0.2.1' });
  });
  after(() => untrusting?.stop());

  test("when a client that is not the proxy sends X-Request-Id and X-Forwarded-For, then neither is believed and every failure counts", async () => {
    const headers = { 'x-request-id': 'chosen-by-the-client-1234' };
    const statuses = [];
    for (let i = 0; i < 6; i += 1) statuses.push((await attempt(untrusting.base, '203.0.113.77', 'wrong-password', headers)).status);
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
    assert.equal(await failuresRecorded('203.0.113.77'), 0, 'the forwarded address was not believed');
    const response = await fetch(`${untrusting.base}/healthz`, { headers });
    assert.notEqual(response.headers.get('x-request-id'), headers['x-request-id']);
  });

  test('when the proxy (a TRUST_PROXY peer) sends X-Request-Id, then it is kept', async () => {
    const response = await fetch(`${one.base}/healthz`, { headers: { 'x-request-id': 'from-nginx-0123456789' } });
    assert.equal(response.headers.get('x-request-id'), 'from-nginx-0123456789');
  });

  test('when BIND_ADDRESS is reachable from other hosts and TRUST_PROXY is left at loopback, then startup refuses it', () => {
    const env = { DATABASE_URL: 'postgres://u:p@db/sitelog', API_TOKEN, ADMIN_PASSWORD };
    assert.throws(() => loadConfig({ ...env, BIND_ADDRESS: '10.1.2.3' }), (err: ConfigError) => /TRUST_PROXY/.test(err.message) && /BIND_ADDRESS/.test(err.message));
    assert.throws(() => loadConfig({ ...env, BIND_ADDRESS: '::' }), ConfigError);
    assert.equal(loadConfig({ ...env, BIND_ADDRESS: '10.1.2.3', TRUST_PROXY: '10.1.2.1' }).BIND_ADDRESS, '10.1.2.3');
    assert.equal(loadConfig({ ...env, BIND_ADDRESS: '127.0.0.1' }).BIND_ADDRESS, '127.0.0.1');
    assert.equal(loadConfig({ ...env, BIND_ADDRESS: '::1' }).BIND_ADDRESS, '::1');
  });
});

describe('console sessions', () => {
  test('when ADMIN_PASSWORD changes, then every session made with the old one ends', async () => {
    const changed = await startApp(postgres.url(DB), { SITELOG_HOST: 'security-d', ADMIN_PASSWORD: 'a-new-admin-password' });
    try {
      const client = browserAt(one.base, '198.51.100.40');
      assert.equal((await client.login()).status, 303);
      assert.equal((await client.request('/console')).status, 200);
      const elsewhere = await fetch(`${changed.base}/console`, { headers: { cookie: client.cookie }, redirect: 'manual' });
      assert.equal(elsewhere.status, 303, 'an instance with the new password refuses the old session');
      const api = await fetch(`${changed.base}/api/logs`, { headers: { cookie: client.cookie } });
      assert.equal(api.status, 401);
    } finally {
      await changed.stop();
    }
  });

  test('when a session stays idle past the idle timeout, then it ends; the instances page polling does not keep it alive', async () => {
    const client = browserAt(one.base, '198.51.100.41');
    await client.login();
    const lastUsed = async () => (await postgres.query<{ minutes: number }>(DB, `SELECT round(extract(epoch FROM now() - last_seen) / 60)::int AS minutes FROM console_sessions ORDER BY created_at DESC LIMIT 1`))[0]!.minutes;
    const idleFor = (minutes: number) => postgres.query(DB, `UPDATE console_sessions SET last_seen = now() - make_interval(mins => $1) WHERE created_at = (SELECT max(created_at) FROM console_sessions)`, [minutes]);
    await idleFor(29);
    assert.equal((await fetch(`${one.base}/api/instances`, { headers: { cookie: client.cookie } })).status, 200, 'still within the idle timeout');
    assert.equal(await lastUsed(), 29, "the page's polling of the API is not a person's activity");
    assert.equal((await client.request('/console/logs')).status, 200);
    assert.equal(await lastUsed(), 0, 'opening a page is');
    await idleFor(31);
    assert.equal((await fetch(`${one.base}/api/instances`, { headers: { cookie: client.cookie } })).status, 401);
    assert.equal((await client.request('/console')).status, 303);
  });

  test('when a person logs out everywhere, then every session ends, on every instance', async () => {
    const [a, b] = [browserAt(one.base, '198.51.100.42'), browserAt(two.base, '198.51.100.43')];
    await a.login();
    await b.login();
    const page = await (await a.request('/console/security')).text();
    const refused = await a.post('/console/logout-everywhere', { _csrf: 'forged' });
    assert.equal(refused.status, 403, 'CSRF-protected');
    const response = await a.post('/console/logout-everywhere', { _csrf: ConsoleClient.csrfOf(page) });
    assert.equal(response.status, 303);
    for (const [client, base] of [[a, two.base], [b, one.base]] as const) {
      assert.equal((await fetch(`${base}/console`, { headers: { cookie: client.cookie }, redirect: 'manual' })).status, 303);
    }
    const [entry] = await postgres.query<{ n: number }>(DB, `SELECT count(*)::int AS n FROM system_logs WHERE stype = 'security' AND description LIKE 'console: logged out everywhere%'`);
    assert.equal(entry!.n, 1);
  });
});

describe('the console security view', () => {
  test('when an address is locked, then the view lists it, and unlocking (CSRF-protected) lets it try again and is recorded', async () => {
    const address = '198.51.100.30';
    for (let i = 0; i < 5; i += 1) await attempt(one.base, address);
    assert.equal((await attempt(one.base, address)).status, 429);
    const admin = browserAt(two.base, '198.51.100.44');
    await admin.login();
    const page = await (await admin.request('/console/security')).text();
    assert.match(page, new RegExp(`<td>${address.replace(/\./g, '\\.')}</td><td>5</td>`), 'failed logins by address');
    assert.match(page, /<table id="locked">[\s\S]*198\.51\.100\.30/, 'the address is among the locked ones');
    const forged = await admin.post('/console/security/unlock', { _csrf: 'forged', address });
    assert.equal(forged.status, 403);
    assert.equal((await attempt(one.base, address)).status, 429, 'still locked');
    const unlocked = await admin.post('/console/security/unlock', { _csrf: ConsoleClient.csrfOf(page), address });
    assert.equal(unlocked.status, 303);
    assert.equal((await attempt(one.base, address)).status, 401, 'the address may try again');
    const [entry] = await postgres.query<{ ip: string; description: string }>(DB, `SELECT ip, description FROM system_logs WHERE stype = 'security' AND description LIKE 'console: unlocked%' ORDER BY id DESC LIMIT 1`);
    assert.ok(entry, 'the unlock is a security entry');
    assert.match(entry.description, /198\.51\.100\.30/);
  });

  test('when unlock is posted with an address that is not one, then 400 and nothing changes', async () => {
    const admin = browserAt(one.base, '198.51.100.45');
    await admin.login();
    const page = await (await admin.request('/console/security')).text();
    const response = await admin.post('/console/security/unlock', { _csrf: ConsoleClient.csrfOf(page), address: "1.2.3.4'; DROP TABLE x" });
    assert.equal(response.status, 400);
  });
});

describe('values the API accepts can be stored', () => {
  const dates = ['0000-01-01T00:00:00Z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z', '2026-02-30T00:00:00Z', '2026-13-01T00:00:00Z', '+275760-09-13T00:00:00Z', '1970-01-01T00:00:00+14:00', '2026-11-28T24:00:00Z'];
  for (const date of dates) {
    test(`when since=${date}, then 200 or 400 (never a 5xx)`, async () => {
      for (const name of ['since', 'until']) {
        const response = await fetch(`${one.base}/api/logs?${name}=${encodeURIComponent(date)}`, { headers: authHeaders() });
        const body = await response.text();
        assert.ok(response.status === 200 || response.status === 400, `${name}=${date}: ${response.status} ${body}`);
        if (response.status === 400) assert.equal((JSON.parse(body) as { error: { code: string } }).error.code, 'SITELOG_VALIDATION');
      }
    });
  }

  test('when a cursor carries a time PostgreSQL cannot hold, then 400', async () => {
    const before = Buffer.from(JSON.stringify(['0000-01-01T00:00:00.000Z', 5])).toString('base64url');
    const response = await fetch(`${one.base}/api/logs?before=${before}`, { headers: authHeaders() });
    assert.equal(response.status, 400);
  });
});

describe('caching and header choice', () => {
  test('when a console page is served, then Cache-Control: no-store', async () => {
    const client = browserAt(one.base, '198.51.100.46');
    await client.login();
    for (const page of ['/console', '/console/logs', '/console/starts', '/console/security', '/console/login']) {
      assert.equal((await client.request(page)).headers.get('cache-control'), 'no-store', page);
    }
  });

  test("when a person types the console's address with a slash, then it redirects; no other spelling reaches a page", async () => {
    const client = browserAt(one.base, '198.51.100.47');
    await client.login();
    const slash = await client.request('/console/');
    assert.equal(slash.status, 301);
    assert.equal(slash.headers.get('location'), '/console');
    assert.equal((await client.request('/CONSOLE/logs')).status, 404);
    assert.equal((await client.request('/console/logs/')).status, 404);
  });

  test('when the API is reached under another case, then it carries the API headers', async () => {
    const response = await fetch(`${one.base}/API/Logs?limit=1`, { headers: authHeaders() });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'");
    assert.equal(response.headers.get('cache-control'), 'no-store');
  });
});

describe('database work stops when the client goes away', () => {
  test('when a client gives up on a list that waits for a lock, then its query is cancelled at once, not at lock_timeout or statement_timeout', async () => {
    const pg = await import('pg');
    const { LOCK_WAIT_MS } = await import('../src/timeouts.js');
    const locker = new pg.default.Client({ connectionString: postgres.url(DB) });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE system_logs IN ACCESS EXCLUSIVE MODE');
      const abort = new AbortController();
      const request = fetch(`${one.base}/api/logs?q=waits-for-the-lock`, { headers: authHeaders(), signal: abort.signal }).catch(() => undefined);
      const waiting = () =>
        postgres.query<{ started: number }>(
          DB,
          `SELECT extract(epoch FROM query_start)::float8 * 1000 AS started FROM pg_stat_activity
            WHERE application_name LIKE 'sitelog-web-%' AND state = 'active' AND query LIKE '%ILIKE%'`,
        );
      const [query] = await waitFor('the list waiting on the lock', async () => {
        const rows = await waiting();
        return rows.length > 0 ? rows : undefined;
      }, { timeoutMs: 3_000, everyMs: 20 });
      abort.abort();
      await request;
      await waitFor('its query cancelled', async () => (await waiting()).length === 0, { timeoutMs: 1_500, everyMs: 20 });
      // the wait would end by itself at lock_timeout (LOCK_WAIT_MS after it began): it ended well before
      assert.ok(Date.now() < query!.started + LOCK_WAIT_MS - 100, `cancelled ${Date.now() - query!.started} ms after it began`);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
  });
});

describe('the request deadline', () => {
  test('when a request runs past its deadline, then it is answered 503 SITELOG_DEADLINE and its statement is cancelled', async () => {
    const express = (await import('express')).default;
    const { InFlight } = await import('../src/in-flight.js');
    const { withConnection } = await import('../src/db/lean.js');
    const { createSequelize } = await import('../src/db/sequelize.js');
    const { errorHandler } = await import('../src/errors.js');
    const { createLogger } = await import('../src/logger.js');
    const sequelize = createSequelize(loadConfig({ DATABASE_URL: postgres.url(DB), API_TOKEN, ADMIN_PASSWORD }));
    const app = express();
    app.use(new InFlight(300).track);
    app.get('/slow', async (req, res) => {
      await withConnection(sequelize, (run) => run({ name: '', text: 'SELECT pg_sleep(5) AS deadline_test' }, []), req.inFlight);
      res.json({ done: true });
    });
    const logged: string[] = [];
    const logger = createLogger({ host: 'test', instance: 0, level: 'silent' });
    logger.error = ((obj: unknown, msg?: string) => void logged.push(`${msg ?? ''} ${JSON.stringify(obj)}`));
    let lateHandled = false;
    app.get('/slow-then-answers', async (_req, res) => {
      try {
        await new Promise((resolve) => setTimeout(resolve, 600)); // work that outlasts the 300 ms deadline
        res.json({ late: true });
      } finally {
        lateHandled = true;
      }
    });
    app.use(errorHandler(logger, () => undefined));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const started = Date.now();
      const response = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/slow`);
      assert.equal(response.status, 503);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'SITELOG_DEADLINE');
      assert.ok(Date.now() - started < 2_000);
      const sleeping = async () => (await postgres.query<{ n: number }>(DB, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%deadline_test%' AND pid <> pg_backend_pid()`))[0]!.n;
      await waitFor('its statement cancelled', async () => (await sleeping()) === 0, { timeoutMs: 1_500 });
      // a handler that answers after the deadline did: the client had its 503, nothing is logged as an error
      const late = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/slow-then-answers`);
      assert.equal(late.status, 503);
      await waitFor('the late handler done', () => lateHandled);
      await new Promise((resolve) => setImmediate(resolve)); // its rejection reaches the error handler
      assert.deepEqual(logged, []);
    } finally {
      server.close();
      await sequelize.close();
    }
  });
});
