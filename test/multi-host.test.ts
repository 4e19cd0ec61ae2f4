import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AppHost, hostOnLan, ProxyHost } from './support/app-host.js';
import { Lan } from './support/netns.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { API_TOKEN } from './support/stack.js';
import { startTraffic } from './support/traffic.js';
import { waitFor } from './support/wait.js';

// Past one machine: two app hosts, each its own PM2 with `web` in cluster mode, one nginx host in
// front, one PostgreSQL, all on a LAN of network namespaces made here. The startup log keeps its
// rules per host, and a host going away and coming back costs no request through nginx. Each test
// brings the hosts to the state it needs and counts "server started" from there.

let lan: Lan;
let postgres: TestPostgres;
let hosts: AppHost[] = [];
let proxy: ProxyHost | undefined;

/** The host's "server started" entries so far (none before the first start made the database). */
async function serverStarts(host: string): Promise<number> {
  const rows = await postgres
    .query('sitelog', `SELECT 1 FROM system_logs WHERE host = $1 AND stype = 'system' AND description = 'server started'`, [host])
    .catch((err: { code?: string }) => {
      if (err.code === '3D000') return [];
      throw err;
    });
  return rows.length;
}

describe('several hosts behind one nginx', { timeout: 240_000 }, () => {
  before(async () => {
    lan = await Lan.create(['app-a', 'app-b', 'proxy']);
    postgres = await startPostgres({ address: lan.gateway, subnet: lan.subnet });
    const databaseUrl = postgres.url('sitelog').replace('127.0.0.1', lan.gateway);
    const proxyHost = lan.host('proxy');
    hosts = ['app-a', 'app-b'].map(
      (name) =>
        hostOnLan(lan, name, {
          DATABASE_URL: databaseUrl,
          WEB_INSTANCES: '2',
          // debug: each 503 an instance answers is logged with its cause, shown when the test fails
          LOG_LEVEL: 'debug',
        }),
    );
    proxy = new ProxyHost(proxyHost, hosts);
  });

  after(async () => {
    await Promise.all(hosts.map((h) => h.remove()));
    await proxy?.remove();
    await postgres?.stop();
    await lan?.remove();
  });

  test('when two hosts start together, each writes its own one "server started", and nginx reaches both', async () => {
    await Promise.all(hosts.map((h) => h.stop()));
    const before = [await serverStarts('app-a'), await serverStarts('app-b')];
    await Promise.all(hosts.map((h) => h.start()));
    assert.deepEqual([await serverStarts('app-a'), await serverStarts('app-b')], [before[0]! + 1, before[1]! + 1]);

    const base = proxy!.url;
    const answered = new Set<string>();
    await waitFor('answers from both hosts through nginx', async () => {
      const page = await (await fetch(`${base}/`)).text();
      const host = page.match(/id="host">([^<]+)</)?.[1];
      if (host) answered.add(host);
      return answered.has('app-a') && answered.has('app-b');
    });
    // the browser's address, as nginx saw it: the app trusts the proxy host's X-Forwarded-For
    const created = await fetch(`${base}/api/logs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json', 'x-forwarded-for': '203.0.113.9' },
      body: JSON.stringify({ stype: 'app', description: 'through the proxy host' }),
    });
    assert.equal(created.status, 201);
    assert.equal(((await created.json()) as { ip: string }).ip, lan.gateway);
  });

  test('when one host stops under load and comes back, then no request fails and that host writes one new "server started"', async () => {
    await Promise.all(hosts.map((h) => h.up()));
    const before = [await serverStarts('app-a'), await serverStarts('app-b')];
    const base = proxy!.url;
    const traffic = startTraffic(base, { connections: 32, maxMs: 90_000 });
    await waitFor('traffic flowing', () => traffic.acks.length > 50);
    const [a] = hosts as [AppHost, AppHost];
    await a.stop();
    const whileDown = traffic.samples.length;
    await waitFor('requests served while app-a is down', () => traffic.samples.length > whileDown + 500);
    await a.start();
    const afterBack = traffic.samples.length;
    await waitFor('requests served after app-a came back', () => traffic.samples.length > afterBack + 500);
    const { samples, acks, mismatches } = await traffic.stop();

    const failed = samples.filter((s) => s.status < 200 || s.status >= 300);
    const trouble = () => hosts.flatMap((h) => h.trouble()).slice(-20).join('\n');
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${samples.length} requests failed; the hosts logged:\n${trouble()}`);
    assert.deepEqual(mismatches, []);
    const stored = await postgres.query<{ request_id: string; n: string }>(
      'sitelog',
      `SELECT request_id, count(*) AS n FROM system_logs WHERE request_id = ANY($1) GROUP BY request_id`,
      [acks.map((k) => k.key)],
    );
    assert.equal(stored.length, acks.length, 'every acknowledged write is stored');
    assert.ok(stored.every((r) => r.n === '1'), 'and stored once');
    assert.equal(await serverStarts('app-a'), before[0]! + 1, 'the host that came back started once more');
    assert.equal(await serverStarts('app-b'), before[1], 'the other host did not start again');
    process.stdout.write(`# multi-host: ${samples.length} requests, ${acks.length} writes, 0 failed while app-a stopped and came back\n`);
  });
});
