import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { startApp } from './support/app.js';
import { BAD_INPUTS, send } from './support/bad-input.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { authHeaders } from './support/stack.js';

// The HTTP API of one web process against a real PostgreSQL, through its real startup path.

let postgres: TestPostgres;
let app: Awaited<ReturnType<typeof startApp>>;
before(async () => {
  postgres = await startPostgres();
  app = await startApp(postgres.url('api_test'));
});
after(async () => {
  await app?.stop();
  await postgres?.stop();
});

type Entry = { id: number; stype: string; description: string; timestamp: string; ip: string; user_agent: string; host: string; instance: number; request_id: string };

async function post(body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${app.base}/api/logs`, {
    method: 'POST',
    headers: authHeaders({ 'content-type': 'application/json', ...headers }),
    body: JSON.stringify(body),
  });
  return { response, body: (await response.json()) as Entry & { error?: { code: string } } };
}

async function get<T>(path: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`${app.base}${path}`, { headers: authHeaders() });
  return { status: response.status, body: (await response.json()) as T };
}

type Row = Record<string, unknown> & { id: number; description: string };

/** Every row of system_logs, field for field, and every table of the database: what a request may not touch. */
async function snapshot(): Promise<{ rows: Row[]; tables: string[] }> {
  const rows = await postgres.query<{ row: Row }>('api_test', 'SELECT to_jsonb(s) AS row FROM system_logs s ORDER BY id');
  const tables = await postgres.query<{ name: string }>(
    'api_test',
    `SELECT table_schema || '.' || table_name AS name FROM information_schema.tables
     WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
  );
  return { rows: rows.map((r) => r.row), tables: tables.map((t) => t.name) };
}

describe('health', () => {
  test('when the process runs, then /healthz names its instance and pid (spec.test.ts: also without the database)', async () => {
    const { status, body } = await get<{ status: string; instance: number; pid: number }>('/healthz');
    assert.equal(status, 200);
    assert.deepEqual(body, { status: 'ok', instance: 0, pid: process.pid });
  });

  test('when the database answers and migrations ran, then /readyz is 200', async () => {
    const { status } = await get('/readyz');
    assert.equal(status, 200);
  });

  test('when / is opened, then it names the instance, pid and host', async () => {
    const html = await (await fetch(`${app.base}/`)).text();
    assert.match(html, new RegExp(`instance <span id="instance">0</span>`));
    assert.match(html, new RegExp(`pid <span id="pid">${process.pid}</span>`));
    assert.match(html, /<span id="host">test-host<\/span>/);
  });
});

describe('security headers', () => {
  test('when the API answers, then it carries the headers of a JSON API, not those of a page', async () => {
    for (const path of ['/api/logs?limit=1', '/api/logs/999999', '/healthz']) {
      const response = await fetch(`${app.base}${path}`, { headers: authHeaders() });
      assert.equal(response.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'", path);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff', path);
      assert.equal(response.headers.get('x-frame-options'), 'DENY', path);
      assert.equal(response.headers.get('cache-control'), 'no-store', path);
      assert.equal(response.headers.get('referrer-policy'), null, path);
    }
  });

  test('when a page is served, then it carries helmet\'s document headers', async () => {
    const response = await fetch(`${app.base}/`);
    assert.match(response.headers.get('content-security-policy')!, /default-src 'self'/);
    assert.equal(response.headers.get('referrer-policy'), 'no-referrer');
    assert.equal(response.headers.get('x-frame-options'), 'SAMEORIGIN');
  });
});

describe('POST /api/logs', () => {
  test('when an entry is posted, then it is stored with the caller, host and instance, and can be read back', async () => {
    const { response, body } = await post({ stype: 'app', description: 'hello' }, { 'user-agent': 'sitelog-test/1' });
    assert.equal(response.status, 201);
    assert.equal(response.headers.get('location'), `/api/logs/${body.id}`);
    assert.equal(body.stype, 'app');
    assert.equal(body.description, 'hello');
    assert.equal(body.ip, '127.0.0.1');
    assert.equal(body.user_agent, 'sitelog-test/1');
    assert.equal(body.host, 'test-host');
    assert.equal(body.instance, 0);
    // SPEC "Log entry fields", exactly: the id a number, the time ISO 8601 in UTC with milliseconds
    assert.deepEqual(Object.keys(body), ['id', 'stype', 'timestamp', 'description', 'ip', 'user_agent', 'host', 'instance', 'request_id']);
    assert.ok(Number.isSafeInteger(body.id) && body.id > 0);
    assert.equal(new Date(body.timestamp).toISOString(), body.timestamp);
    const read = await get<Entry>(`/api/logs/${body.id}`);
    assert.deepEqual(read.body, body);
    const page = await get<{ items: Entry[] }>(`/api/logs?limit=200`);
    assert.deepEqual(page.body.items.find((e) => e.id === body.id), body, 'the list answers the same entry, field for field');
  });

  test("when the seed's Chinese text is posted, then it reads back byte for byte", async () => {
    const description = '服务器启动成功...';
    const { body } = await post({ stype: 'system', description });
    const read = await fetch(`${app.base}/api/logs/${body.id}`, { headers: authHeaders() });
    const raw = Buffer.from(await read.arrayBuffer());
    assert.ok(raw.includes(Buffer.from(description, 'utf8')));
    const [row] = await postgres.query<{ description: string }>('api_test', 'SELECT description FROM system_logs WHERE id = $1', [body.id]);
    assert.equal(Buffer.compare(Buffer.from(row!.description, 'utf8'), Buffer.from(description, 'utf8')), 0);
  });

  test('when SQL-looking text is posted and queried for, then it is stored verbatim as one new row and nothing else changes', async () => {
    const description = `'); DROP TABLE system_logs; --`;
    const before = await snapshot();
    const { response, body } = await post({ stype: 'security', description });
    assert.equal(response.status, 201);
    assert.equal(body.description, description);
    // the same text where it reaches a query: the text filter, and an id
    const found = await get<{ items: Entry[] }>(`/api/logs?q=${encodeURIComponent(description)}&limit=200`);
    assert.equal(found.status, 200);
    assert.deepEqual(found.body.items.map((e) => e.id), [body.id]);
    assert.equal((await get(`/api/logs/${encodeURIComponent(`1; DELETE FROM system_logs`)}`)).status, 404);
    const after = await snapshot();
    assert.deepEqual(after.tables, before.tables, 'no table dropped or added');
    const added = after.rows.filter((row) => !before.rows.some((old) => old.id === row.id));
    assert.deepEqual(added.map((r) => [r.id, r.description]), [[body.id, description]], 'one new row: the posted text, verbatim');
    assert.deepEqual(after.rows.filter((row) => row.id !== body.id), before.rows, 'every other row as it was, field for field');
  });

  test('when the same Idempotency-Key is sent twice, then the same entry comes back and one row exists', async () => {
    const key = `key-${Date.now()}`;
    const first = await post({ stype: 'app', description: 'once' }, { 'idempotency-key': key });
    const second = await post({ stype: 'app', description: 'once' }, { 'idempotency-key': key });
    assert.equal(first.response.status, 201);
    assert.equal(second.response.status, 201);
    assert.equal(second.response.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(second.body, first.body);
    const rows = await postgres.query('api_test', 'SELECT id FROM system_logs WHERE request_id = $1', [key]);
    assert.equal(rows.length, 1);
  });

  test('when an Idempotency-Key is reused for a different entry, then 422 and nothing is stored', async () => {
    const key = `key-reuse-${Date.now()}`;
    await post({ stype: 'app', description: 'first' }, { 'idempotency-key': key });
    const reused = await post({ stype: 'app', description: 'second' }, { 'idempotency-key': key });
    assert.equal(reused.response.status, 422);
    assert.equal(reused.body.error?.code, 'SITELOG_IDEMPOTENCY_KEY_REUSED');
    const rows = await postgres.query('api_test', `SELECT 1 FROM system_logs WHERE description = 'second'`);
    assert.equal(rows.length, 0);
  });

  test('when one request id arrives from nginx twice (its retry), then the same entry comes back and one row holds it', async () => {
    const requestId = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
    const first = await post({ stype: 'app', description: 'retried by nginx' }, { 'x-request-id': requestId });
    const second = await post({ stype: 'app', description: 'retried by nginx' }, { 'x-request-id': requestId });
    assert.equal(first.response.status, 201);
    assert.equal(second.response.status, 201);
    assert.equal(first.body.request_id, requestId);
    assert.deepEqual(second.body, first.body);
    const rows = await postgres.query<{ id: string }>('api_test', 'SELECT id FROM system_logs WHERE request_id = $1', [requestId]);
    assert.deepEqual(rows.map((r) => Number(r.id)), [first.body.id]);
  });
});

describe('bad input', () => {
  for (const input of BAD_INPUTS) {
    test(`when ${input.name}, then ${input.status} ${input.code} and nothing stored`, async () => {
      const before = await snapshot();
      const response = await send(app.base, input);
      assert.equal(response.status, input.status);
      const body = (await response.json()) as { error: { code: string; message: string } };
      assert.equal(typeof body.error.message, 'string');
      assert.doesNotMatch(body.error.message, /\n\s+at /, 'no stack trace');
      assert.equal(body.error.code, input.code);
      assert.deepEqual(await snapshot(), before);
    });
  }
});

describe('GET /api/logs', () => {
  before(async () => {
    // 45 entries a millisecond apart at most, so paging crosses equal timestamps too
    await postgres.query(
      'api_test',
      `INSERT INTO system_logs (stype, description, host, "timestamp")
       SELECT (ARRAY['app','error','security'])[1 + g % 3], 'paged entry ' || g, 'test-host',
              timestamp '2030-01-01 00:00:00+00' + (g / 2) * interval '1 millisecond'
       FROM generate_series(1, 45) g`,
    );
  });

  test('when paged with limit and the opaque cursor, then every entry comes once, newest first', async () => {
    const seen: Entry[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const query: string = `/api/logs?q=paged%20entry&limit=10${next ? `&before=${next}` : ''}`;
      const { status, body } = await get<{ items: Entry[]; next: string | null }>(query);
      assert.equal(status, 200);
      seen.push(...body.items);
      next = body.next;
      pages += 1;
    } while (next && pages < 10);
    assert.equal(seen.length, 45);
    assert.equal(new Set(seen.map((e) => e.id)).size, 45);
    for (let i = 1; i < seen.length; i += 1) {
      const [a, b] = [seen[i - 1]!, seen[i]!];
      assert.ok(a.timestamp > b.timestamp || (a.timestamp === b.timestamp && a.id > b.id), 'newest first');
    }
  });

  test('when filtered by stype, text and time range, then only matching entries come back', async () => {
    const { body } = await get<{ items: Entry[] }>(
      '/api/logs?stype=error&q=PAGED&since=2030-01-01T00:00:00.005Z&until=2030-01-01T00:00:00.010Z&limit=200',
    );
    assert.ok(body.items.length > 0);
    for (const item of body.items) {
      assert.equal(item.stype, 'error');
      assert.match(item.description, /paged entry/);
      assert.ok(item.timestamp >= '2030-01-01T00:00:00.005Z' && item.timestamp < '2030-01-01T00:00:00.010Z');
    }
  });

  test('when the text filter holds LIKE wildcards, then they match literally', async () => {
    const { body } = await get<{ items: Entry[] }>('/api/logs?q=%25_%25');
    assert.deepEqual(body.items, []);
  });
});

describe('instances and starts', () => {
  test('when one process runs, then /api/instances lists it live and /api/starts has its start', async () => {
    const instances = await get<{ items: Array<{ host: string; instance: number; pid: number; rss: number; restarts: number }> }>('/api/instances');
    assert.equal(instances.status, 200);
    const mine = instances.body.items.filter((i) => i.host === 'test-host');
    assert.deepEqual(mine.map((i) => [i.instance, i.pid, i.restarts]), [[0, process.pid, 0]]);
    assert.ok(mine[0]!.rss > 0);
    const starts = await get<{ items: Array<{ host: string; entries: Array<{ instance: number; pid: number; event: string }> }> }>('/api/starts');
    assert.equal(starts.body.items[0]!.host, 'test-host');
    assert.deepEqual(starts.body.items[0]!.entries.map((e) => [e.instance, e.pid, e.event]), [[0, process.pid, 'started']]);
  });
});

describe('the HTTP server of a web process', () => {
  /** The requests and responses whose prototype is changed, by constructor name, while `during` runs. */
  async function prototypeChanges(during: () => Promise<number[]>): Promise<{ statuses: number[]; changed: string[] }> {
    const changed: string[] = [];
    const setPrototypeOf = Object.setPrototypeOf;
    Object.setPrototypeOf = (o: object, proto: object | null): object => {
      if ((o instanceof http.IncomingMessage || o instanceof http.ServerResponse) && Object.getPrototypeOf(o) !== proto) changed.push(o.constructor.name);
      return setPrototypeOf(o, proto) as object;
    };
    try {
      return { statuses: await during(), changed };
    } finally {
      Object.setPrototypeOf = setPrototypeOf;
    }
  }

  test('when an Express app is served the usual way, then each request and response gets a new prototype (what the next test checks)', async () => {
    const server = http.createServer(express().get('/', (_req, res) => res.end()));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const { statuses, changed } = await prototypeChanges(async () => [(await fetch(`http://127.0.0.1:${port}/`)).status]);
      assert.deepEqual(statuses, [200]);
      assert.deepEqual(changed, ['IncomingMessage', 'ServerResponse']);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  test('when the API, a probe, a console page and a missing path are answered, then no request or response gets a new prototype (requestClasses in src/app.ts)', async () => {
    const { body: entry } = await post({ stype: 'app', description: 'prototype check' });
    const { statuses, changed } = await prototypeChanges(async () => {
      const paths = [`/api/logs/${entry.id}`, '/api/logs?limit=5', '/healthz', '/console/login', '/api/nothing'];
      const reads = await Promise.all(paths.map((p) => fetch(`${app.base}${p}`, { headers: authHeaders() })));
      const { response } = await post({ stype: 'app', description: 'prototype check, written' });
      return [...reads.map((r) => r.status), response.status];
    });
    assert.deepEqual(statuses, [200, 200, 200, 200, 404, 201]);
    assert.deepEqual(changed, []);
  });
});
