import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startApp } from './support/app.js';
import { ConsoleClient } from './support/console.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';

// The console over HTTP against two web processes sharing one real PostgreSQL (no sticky sessions).

let postgres: TestPostgres;
let one: Awaited<ReturnType<typeof startApp>>;
let two: Awaited<ReturnType<typeof startApp>>;
before(async () => {
  postgres = await startPostgres();
  // two processes' worth of app in this one process: distinct hosts, since liveness is per (host, pid)
  one = await startApp(postgres.url('console_test'), { SITELOG_HOST: 'console-a' });
  two = await startApp(postgres.url('console_test'), { SITELOG_HOST: 'console-b' });
});
after(async () => {
  await one?.stop();
  await two?.stop();
  await postgres?.stop();
});

const PAGES = ['/console', '/console/starts', '/console/logs', '/console/logs/1', '/console/logs?stype=app'];

describe('console sessions', () => {
  for (const page of PAGES) {
    test(`when ${page} is opened without a session, then it redirects to the login page`, async () => {
      const response = await new ConsoleClient(one.base).request(page);
      assert.equal(response.status, 303);
      assert.equal(response.headers.get('location'), '/console/login');
    });
  }

  test('when logout is posted without a session, then 401', async () => {
    const response = await new ConsoleClient(one.base).post('/console/logout', { _csrf: 'x' });
    assert.equal(response.status, 401);
  });

  test('when the login form comes without its CSRF token or with a wrong one, then 403 and no session', async () => {
    const client = new ConsoleClient(one.base);
    await client.request('/console/login');
    const missing = await client.post('/console/login', { password: 'whatever-password' });
    assert.equal(missing.status, 403);
    const wrong = await client.post('/console/login', { _csrf: 'forged', password: 'whatever-password' });
    assert.equal(wrong.status, 403);
    assert.doesNotMatch(client.cookie, /sitelog_session/);
  });

  test('when the password is right, then a HttpOnly SameSite=Strict cookie that every instance accepts', async () => {
    const client = new ConsoleClient(one.base);
    const response = await client.login();
    assert.equal(response.status, 303);
    assert.equal(response.headers.get('location'), '/console');
    const cookie = response.headers.getSetCookie().find((c) => c.startsWith('sitelog_session='))!;
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.doesNotMatch(cookie, /Secure/, 'plain HTTP: no Secure flag');
    const elsewhere = await fetch(`${two.base}/console`, { headers: { cookie: client.cookie } });
    assert.equal(elsewhere.status, 200);
    assert.match(await elsewhere.text(), /<table id="instances">/);
    const api = await fetch(`${two.base}/api/instances`, { headers: { cookie: client.cookie } });
    assert.equal(api.status, 200, 'the JSON API accepts the session too');
  });

  test('when the browser came over HTTPS (X-Forwarded-Proto from the loopback proxy), then the cookie is Secure', async () => {
    const client = new ConsoleClient(one.base, { 'x-forwarded-proto': 'https' });
    const response = await client.login();
    assert.match(response.headers.getSetCookie().find((c) => c.startsWith('sitelog_session='))!, /; Secure/);
  });

  test('when logout is posted with a wrong CSRF token, then 403 and the session lives on', async () => {
    const client = new ConsoleClient(one.base);
    await client.login();
    const response = await client.post('/console/logout', { _csrf: 'forged' });
    assert.equal(response.status, 403);
    assert.equal((await client.request('/console')).status, 200);
  });

  test('when logged out, then the session is refused on every instance', async () => {
    const client = new ConsoleClient(one.base);
    await client.login();
    const page = await (await client.request('/console')).text();
    const cookie = client.cookie;
    const response = await client.post('/console/logout', { _csrf: ConsoleClient.csrfOf(page) });
    assert.equal(response.status, 303);
    for (const base of [one.base, two.base]) {
      const refused = await fetch(`${base}/console`, { headers: { cookie }, redirect: 'manual' });
      assert.equal(refused.status, 303);
      const api = await fetch(`${base}/api/logs`, { headers: { cookie } });
      assert.equal(api.status, 401);
    }
  });

  test('when console pages are served, then strict security headers come with them', async () => {
    const client = new ConsoleClient(one.base);
    await client.login();
    const response = await client.request('/console/logs');
    const csp = response.headers.get('content-security-policy')!;
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(response.headers.get('x-frame-options'), 'SAMEORIGIN');
  });
});

describe('failed logins', () => {
  test('when the password is wrong, then 401 and a security entry with the address and user agent', async () => {
    const client = new ConsoleClient(one.base, { 'user-agent': 'intruder/1.0' });
    const response = await client.login('not-the-password');
    assert.equal(response.status, 401);
    const rows = await postgres.query<{ ip: string; user_agent: string }>(
      'console_test',
      `SELECT ip, user_agent FROM system_logs WHERE stype = 'security' AND description = 'failed console login' ORDER BY id DESC LIMIT 1`,
    );
    assert.deepEqual(rows, [{ ip: '127.0.0.1', user_agent: 'intruder/1.0' }]);
  });

  test('when failures from one address pile up across instances, then logins are throttled with 429', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 7; i += 1) {
      statuses.push((await new ConsoleClient(i % 2 ? two.base : one.base).login('wrong-again')).status);
    }
    assert.ok(statuses.includes(429), `statuses: ${statuses.join(',')}`);
    const right = await new ConsoleClient(one.base).login();
    assert.equal(right.status, 429, 'even the right password waits out the window');
  });
});
