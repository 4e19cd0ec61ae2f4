import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { findNginx, renderStandalone, renderTemplate } from '../src/ops/nginx.js';
import { POOL_ACQUIRE_MS, REQUEST_DEADLINE_MS, STATEMENT_TIMEOUT_MS } from '../src/timeouts.js';
import { startApp } from './support/app.js';
import { freePort } from './support/ports.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { API_TOKEN } from './support/stack.js';
import { waitFor } from './support/wait.js';

// nginx's side of the security review (#11): sitelog's own rendered config in front of a real web
// process, each test's requests from a loopback address of its own (127.0.0.0/8), so nginx's
// per-address limits of one test never touch another's.

const exec = promisify(execFile);
const NGINX = findNginx() ?? 'nginx';

type Reply = { status: number; headers: http.IncomingHttpHeaders; body: string };

/** One request with a raw path (no client-side normalisation) from `localAddress`. */
function request(url: string, opts: { method?: string; path: string; localAddress?: string; headers?: Record<string, string>; body?: string }): Promise<Reply> {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(
      {
        host: target.hostname,
        port: target.port,
        method: opts.method ?? 'GET',
        path: opts.path,
        localAddress: opts.localAddress,
        headers: { ...(opts.body ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers },
        rejectUnauthorized: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** sitelog's nginx, rendered by its one renderer into a folder of its own, in the foreground. */
class Nginx {
  private constructor(
    readonly dir: string,
    readonly conf: string,
    private readonly child: ChildProcess,
  ) {}

  static async start(site: Parameters<typeof renderStandalone>[1], extra?: (dir: string) => void): Promise<Nginx> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-nginx-security-'));
    fs.chmodSync(dir, 0o755);
    const conf = renderStandalone(dir, site);
    extra?.(dir);
    await exec(NGINX, ['-t', '-q', '-e', 'stderr', '-c', conf]).catch((err: unknown) => {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    });
    // stderr ignored: every request nginx's limit refuses is an [error] line there
    const child = spawn(NGINX, ['-e', 'stderr', '-c', conf], { stdio: 'ignore' });
    const nginx = new Nginx(dir, conf, child);
    return nginx;
  }

  /** The whole configuration as nginx reads it (`nginx -T`). */
  async dump(): Promise<string> {
    return (await exec(NGINX, ['-T', '-q', '-e', 'stderr', '-c', this.conf])).stdout;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      const exited = once(this.child, 'exit');
      this.child.kill('SIGQUIT'); // nginx's graceful stop, by the pid this test started
      await exited;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let postgres: TestPostgres;
let app: Awaited<ReturnType<typeof startApp>>;
let upstream: string;
before(async () => {
  postgres = await startPostgres();
  app = await startApp(postgres.url('nginx_security_test'));
  upstream = new URL(app.base).host;
});
after(async () => {
  await app?.stop();
  await postgres?.stop();
});

const listening = (url: string) => waitFor(`nginx on ${url}`, async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.status === 200);

describe("nginx's login limit", () => {
  let nginx: Nginx;
  let url: string;
  before(async () => {
    const port = await freePort();
    nginx = await Nginx.start({ upstreams: [upstream], listen: `127.0.0.1:${port}` });
    url = `http://127.0.0.1:${port}`;
    await listening(url);
  });
  after(() => nginx?.stop());

  // Express matches routes case-insensitively and ignores a trailing slash unless told otherwise; nginx
  // normalises dots, double slashes and percent-encoding before it picks a location.
  const spellings = ['/console/login', '/console/login/', '/CONSOLE/Login', '/Console/login', '/console//login', '/console/%6Cogin', '/console/./login', '/console/login//', '/console/login%2F', '/console/LOGIN/'];
  spellings.forEach((spelling, i) => {
    test(`when a script posts to ${spelling} again and again, then it is limited or refused`, async () => {
      // a wrong CSRF token: the login handler answers 403 without counting, so only nginx's limit can stop it
      const statuses: number[] = [];
      for (let n = 0; n < 14; n += 1) {
        const reply = await request(url, {
          method: 'POST',
          path: spelling,
          localAddress: `127.0.1.${i + 1}`,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: '_csrf=forged&password=guess',
        });
        statuses.push(reply.status);
      }
      const reachedHandler = statuses.filter((s) => s === 403).length;
      const limited = statuses.slice(-3).every((s) => s === 429);
      const refused = statuses.every((s) => s === 404 || s === 401 || s === 400);
      assert.ok(refused || (limited && reachedHandler <= 11), `${spelling}: ${statuses.join(',')}`);
    });
  });
});

describe('client keys by address', () => {
  let nginx: Nginx;
  let url: string;
  before(async () => {
    const [port, echo] = [await freePort(), await freePort()];
    // the same http-level files, plus a server that believes X-Real-Client (realip) and echoes the key
    nginx = await Nginx.start({ upstreams: [upstream], listen: `127.0.0.1:${port}` }, (dir) => {
      fs.appendFileSync(
        path.join(dir, 'sitelog.conf'),
        `\nserver {\n    listen 127.0.0.1:${echo};\n    set_real_ip_from 127.0.0.1;\n    real_ip_header X-Real-Client;\n    location / { return 200 "$sitelog_client_key"; }\n}\n`,
      );
    });
    url = `http://127.0.0.1:${echo}`;
    await waitFor('the echo server', async () => (await fetch(url).catch(() => undefined))?.status === 200);
  });
  after(() => nginx?.stop());

  const cases: Array<[string, string]> = [
    ['198.51.100.7', '198.51.100.7'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2'],
    ['2001:db8:1:2::1', '2001:db8:1:2'],
    ['2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:db8:1:2'],
    ['2001:db8:1::5', '2001:db8:1:0'],
    ['2001:db8::5', '2001:db8:0:0'],
    ['2001::1:2:3:4:5', '2001:0:0:1'],
    ['fe80::1', 'fe80:0:0:0'],
    ['::1', '0:0:0:0'],
    ['::ffff:198.51.100.7', '198.51.100.7'],
    ['::a:b:c:d:e:f', '0:0:a:b'],
    ['::a:b:c:d:e', '0:0:0:a'],
  ];
  for (const [address, key] of cases) {
    test(`when a request comes from ${address}, then nginx limits it as ${key}`, async () => {
      const reply = await request(url, { path: '/', headers: { 'x-real-client': address } });
      assert.equal(reply.body, key);
    });
  }
});

describe('HTTPS', () => {
  let nginx: Nginx;
  let plain: string;
  let secure: string;
  let dir: string;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-cert-'));
    const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
    await exec('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost']);
    fs.chmodSync(dir, 0o755);
    const [httpPort, httpsPort] = [await freePort(), await freePort()];
    nginx = await Nginx.start({ upstreams: [upstream], listen: `127.0.0.1:${httpPort}`, tls: { cert, key, listen: `127.0.0.1:${httpsPort}` } });
    [plain, secure] = [`http://127.0.0.1:${httpPort}`, `https://127.0.0.1:${httpsPort}`];
    await waitFor('nginx over HTTPS', async () => (await request(secure, { path: '/healthz' }).catch(() => undefined))?.status === 200);
  });
  after(async () => {
    await nginx?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('when TLS is on, then port 80 redirects everything to HTTPS: no password or token travels in clear', async () => {
    for (const p of ['/', '/console/login', '/api/logs?limit=1']) {
      const reply = await request(plain, { path: p, headers: { authorization: 'Bearer would-travel-in-clear' } });
      assert.equal(reply.status, 301, p);
      assert.equal(reply.headers.location, `${secure}${p}`);
    }
    const post = await request(plain, { method: 'POST', path: '/console/login', body: 'password=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.ok(post.status === 301 || post.status === 308, `a POST is not proxied: ${post.status}`);
  });

  test('when the health probe asks on loopback over plain HTTP, then it is answered there', async () => {
    const reply = await request(plain, { path: '/healthz' });
    assert.equal(reply.status, 200);
    assert.equal((JSON.parse(reply.body) as { status: string }).status, 'ok');
  });

  test('when a browser comes over HTTPS, then the app answers, with HSTS, and TLS session tickets are off', async () => {
    const reply = await request(secure, { path: '/healthz' });
    assert.equal(reply.status, 200);
    assert.match(String(reply.headers['strict-transport-security']), /max-age=\d+/);
    assert.match(await nginx.dump(), /^\s*ssl_session_tickets off;/m);
  });
});

describe('retries and timeouts', () => {
  test("when nginx may retry on a timeout, then its read timeout sits above the app's request deadline", () => {
    const site = renderTemplate(fs.readFileSync(path.join(__dirname, '..', 'nginx', 'sitelog-site.conf'), 'utf8'), { SITE_DIR: '/x', METRICS_ALLOW: '' });
    const directive = (name: string) => site.match(new RegExp(`^${name}\\s+([^;]+);`, 'm'))?.[1]?.split(/\s+/) ?? [];
    assert.deepEqual(directive('proxy_next_upstream'), ['error', 'timeout', 'non_idempotent']);
    const readTimeoutMs = Number(directive('proxy_read_timeout')[0]?.replace(/s$/, '')) * 1000;
    assert.ok(readTimeoutMs >= REQUEST_DEADLINE_MS + 2_000, `proxy_read_timeout ${readTimeoutMs} ms against the deadline ${REQUEST_DEADLINE_MS} ms`);
    assert.ok(REQUEST_DEADLINE_MS > POOL_ACQUIRE_MS + STATEMENT_TIMEOUT_MS, 'the deadline leaves a request its pool wait and one full statement');
  });

  test('when the database is too slow, then the app answers 503 within its deadline, nginx sends the request once, and nothing keeps running', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const nginx = await Nginx.start({ upstreams: [upstream], listen: `127.0.0.1:${port}` });
    const pg = await import('pg');
    const locker = new pg.default.Client({ connectionString: postgres.url('nginx_security_test') });
    await locker.connect();
    try {
      await listening(`http://127.0.0.1:${port}`);
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE system_logs IN ACCESS EXCLUSIVE MODE');
      const running = async () =>
        (await postgres.query<{ n: number }>('nginx_security_test', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'sitelog-web-%' AND state = 'active' AND query LIKE '%ILIKE%'`))[0]!.n;
      let most = 0;
      const answer = request(`http://127.0.0.1:${port}`, { path: '/api/logs?q=slow-database', headers: { authorization: `Bearer ${API_TOKEN}` } });
      const watching = (async () => {
        for (let settled = false; !settled; ) {
          most = Math.max(most, await running());
          settled = await Promise.race([answer.then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 200, false))]);
        }
      })();
      const started = Date.now();
      const reply = await answer;
      const tookMs = Date.now() - started;
      await watching;
      assert.equal(reply.status, 503);
      // the statement's lock timeout (1 s) answers first here; the deadline bounds the requests of several statements
      assert.ok(['SITELOG_DB_BUSY', 'SITELOG_DEADLINE'].includes((JSON.parse(reply.body) as { error: { code: string } }).error.code), reply.body);
      assert.ok(tookMs < REQUEST_DEADLINE_MS + 1_000, `answered after ${tookMs} ms`);
      assert.equal(most, 1, 'one copy of the statement at a time, never a second one from a retry');
      assert.equal(await running(), 0, 'nothing of the request runs on after its answer');
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
      await nginx.stop();
    }
  });
});
