import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { findNginx } from '../src/ops/nginx.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { decreases, seriesValue, startScraper } from './support/scraper.js';
import { authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// GET /metrics (SPEC, issue #13): the sum over every live web instance of the host, exact across
// reloads, plus one series per instance; only METRICS_ALLOW may scrape it.

const hasNginx = findNginx() !== undefined;

/** Every value of `name` labelled with an instance, by instance. */
function perInstance(text: string, name: string, labels: Record<string, string>): Map<string, number> {
  const byInstance = new Map<string, number>();
  for (const instance of new Set([...text.matchAll(/instance="(\d+)"/g)].map((m) => m[1]!))) {
    const value = seriesValue(text, name, { ...labels, instance });
    if (value !== undefined) byInstance.set(instance, value);
  }
  return byInstance;
}

/** A GET from a chosen local address (127.0.0.0/8 is all loopback on Linux). */
function getFrom(url: string, localAddress: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { localAddress }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres();
});
after(async () => {
  await postgres?.stop();
});

describe('GET /metrics', { skip: !hasNginx && 'nginx is not installed', timeout: 240_000 }, () => {
  test('when K requests were answered and every instance is reloaded twice while scraping 20 times, then each scrape counts exactly K', async (t) => {
    const stack = await Stack.create({ instances: 3, proxy: true, databaseUrl: postgres.url('sitelog') });
    try {
      await stack.start();
      const K = 240;
      for (let i = 0; i < K; i += 40) {
        await Promise.all(Array.from({ length: 40 }, async () => assert.equal((await fetch(stack.url('/healthz'))).status, 200)));
      }
      const healthz = { method: 'GET', route: '/healthz', status: '200' };
      const before = new Set([...(await stack.web()).values()].map((p) => p.pid));
      const reloads = (async () => {
        await stack.pm2('reload', 'web');
        await stack.pm2('reload', 'web');
      })();
      let reloading = true;
      void reloads.finally(() => (reloading = false));
      const seen: Array<{ total: number | undefined; sum: number; pids: Set<number> }> = [];
      while (seen.length < 20 || reloading) {
        const response = await fetch(stack.url('/metrics'));
        assert.equal(response.status, 200);
        const text = await response.text();
        const pids = new Set([...(await stack.web()).values()].map((p) => p.pid));
        const sum = [...perInstance(text, 'sitelog_http_requests_total', healthz).values()].reduce((a, b) => a + b, 0);
        seen.push({ total: seriesValue(text, 'sitelog_http_requests_total', healthz), sum, pids });
        if (seen.length > 400) break;
      }
      await reloads;
      assert.deepEqual(
        seen.filter((s) => s.total !== K || s.sum !== K).map((s) => `${s.total}/${s.sum}`),
        [],
        `every one of ${seen.length} scrapes: host total and per-instance sum = ${K}`,
      );
      const mixed = seen.filter((s) => [...s.pids].some((p) => before.has(p)) && [...s.pids].some((p) => !before.has(p))).length;
      t.diagnostic(`${seen.length} scrapes, ${mixed} of them while old and new instances served side by side, each counting ${K}`);
      const after = new Set([...(await stack.web()).values()].map((p) => p.pid));
      assert.ok([...after].every((pid) => !before.has(pid)), 'every instance was replaced');
      assert.ok(
        seen.some((s) => [...s.pids].some((p) => before.has(p)) && [...s.pids].some((p) => !before.has(p))),
        'some scrape ran while old and new instances served side by side',
      );
    } finally {
      await stack.stop();
    }
  });

  test('when an instance is killed -9 right after a scrape, then the host total never goes below what was reported', async () => {
    const stack = await Stack.create({ instances: 2, proxy: true, databaseUrl: postgres.url('sitelog') });
    try {
      await stack.start();
      const K = 200;
      await Promise.all(Array.from({ length: K }, async () => assert.equal((await fetch(stack.url('/healthz'))).status, 200)));
      const healthz = { method: 'GET', route: '/healthz', status: '200' };
      // reported now, live from both processes; the victim's file copy may be up to a second older
      assert.equal(seriesValue(await (await fetch(stack.url('/metrics'))).text(), 'sitelog_http_requests_total', healthz), K);
      const victim = (await stack.web()).get(0)!;
      process.kill(victim.pid, 'SIGKILL');
      const scraper = startScraper(stack.url('/metrics'), { everyMs: 100, maxMs: 60_000 });
      await waitFor('instance 0 replaced', async () => {
        const replacement = (await stack.web()).get(0);
        return replacement !== undefined && replacement.pid !== victim.pid;
      });
      await Promise.all(Array.from({ length: 20 }, () => fetch(stack.url('/api/logs'), { headers: authHeaders() })));
      const text = await (await fetch(stack.url('/metrics'))).text();
      const scrapes = await scraper.stop();
      assert.equal(seriesValue(text, 'sitelog_http_requests_total', healthz), K, 'held at what was reported');
      assert.ok(scrapes.length >= 5 && scrapes.every((s) => s.status === 200), `every scrape answered (${scrapes.length})`);
      assert.deepEqual(decreases(scrapes), [], 'the host total never went down');
    } finally {
      await stack.stop();
    }
  });

  test('when the API is used, then the issue\'s counters, histogram and gauges are there, for the host and per instance', async () => {
    const stack = await Stack.create({ instances: 2, proxy: true, databaseUrl: postgres.url('sitelog') });
    try {
      await stack.start();
      const post = (key: string) =>
        fetch(stack.url('/api/logs'), {
          method: 'POST',
          headers: authHeaders({ 'content-type': 'application/json', 'idempotency-key': key }),
          body: JSON.stringify({ stype: 'app', description: `metrics ${key}` }),
        });
      const created = (await (await post('metrics-key-1')).json()) as { id: number };
      assert.equal((await post('metrics-key-1')).status, 201);
      assert.equal((await post('metrics-key-2')).status, 201);
      assert.equal((await fetch(stack.url(`/api/logs/${created.id}`), { headers: authHeaders() })).status, 200);
      assert.equal((await fetch(stack.url('/api/logs/999999999'), { headers: authHeaders() })).status, 404);
      const text = await (await fetch(stack.url('/metrics'))).text();

      assert.equal(seriesValue(text, 'sitelog_log_entries_stored_total', {}), 2);
      assert.equal(seriesValue(text, 'sitelog_idempotent_replays_total', {}), 1);
      assert.equal(seriesValue(text, 'sitelog_db_gate_refusals_total', {}), 0);
      assert.equal(seriesValue(text, 'sitelog_http_requests_total', { method: 'POST', route: '/api/logs', status: '201' }), 3);
      assert.equal(seriesValue(text, 'sitelog_http_requests_total', { method: 'GET', route: '/api/logs/:id', status: '200' }), 1);
      assert.equal(seriesValue(text, 'sitelog_http_requests_total', { method: 'GET', route: '/api/logs/:id', status: '404' }), 1);
      assert.equal(seriesValue(text, 'sitelog_http_request_duration_seconds_count', { method: 'GET', route: '/api/logs/:id' }), 2);
      assert.equal(seriesValue(text, 'sitelog_http_request_duration_seconds_bucket', { method: 'GET', route: '/api/logs/:id', le: '+Inf' }), 2);
      for (const gauge of ['sitelog_db_pool_size', 'sitelog_db_pool_in_use', 'sitelog_db_pool_waiting', 'sitelog_event_loop_lag_seconds', 'sitelog_heap_used_bytes', 'sitelog_rss_bytes']) {
        assert.notEqual(seriesValue(text, gauge, {}), undefined, `${gauge} for the host`);
        assert.deepEqual([...perInstance(text, gauge, {}).keys()].sort(), ['0', '1'], `${gauge} per instance`);
      }
      const rss = perInstance(text, 'sitelog_rss_bytes', {});
      assert.equal(seriesValue(text, 'sitelog_rss_bytes', {}), rss.get('0')! + rss.get('1')!, 'the host RSS is the sum of the instances');
      assert.equal(seriesValue(text, 'sitelog_db_pool_waiting', {}), 0);
    } finally {
      await stack.stop();
    }
  });

  test('when a client outside METRICS_ALLOW asks, then nginx refuses it, and so does the app when reached directly', async () => {
    const stack = await Stack.create({ instances: 1, proxy: true, databaseUrl: postgres.url('sitelog'), env: { METRICS_ALLOW: '127.0.0.1,127.0.0.5/32' } });
    try {
      await stack.start();
      const viaNginx = await getFrom(stack.url('/metrics'), '127.0.0.2');
      assert.equal(viaNginx.status, 403);
      assert.match(viaNginx.body, /"code":"SITELOG_FORBIDDEN"/);
      const direct = await getFrom(`http://127.0.0.1:${stack.port}/metrics`, '127.0.0.2');
      assert.equal(direct.status, 403);
      assert.match(direct.body, /"code":"SITELOG_FORBIDDEN"/);
      assert.equal((await getFrom(stack.url('/metrics'), '127.0.0.5')).status, 200, 'an allowed address');
      assert.equal((await getFrom(stack.url('/Metrics'), '127.0.0.2')).status, 404, 'another spelling reaches no handler');
    } finally {
      await stack.stop();
    }
  });
});
