import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT } from '../src/ops/pm2.js';
import { AppHost, hostOnLan, ProxyHost } from './support/app-host.js';
import { PG_PASSWORD, sampleConnections, startPgBouncerFor, startPrimary, startReplica, type PgBouncer, type PgServer } from './support/cluster.js';
import { Lan } from './support/netns.js';
import { authHeaders } from './support/stack.js';
import { percentile, startTraffic, type Ack, type Sample } from './support/traffic.js';
import { waitFor } from './support/wait.js';

// Past one database server (#12): three app hosts × four instances behind one nginx, their pools
// through PgBouncer (transaction mode) to a PostgreSQL 15 primary whose max_connections is 40, their
// sessions (liveness locks, migrations) straight to the primary, their list reads on a streaming
// replica made with pg_basebackup. All on a LAN of network namespaces made here, every server on
// this machine's Debian binaries. Each test brings the setup to the state it needs.

const HOSTS = ['app-a', 'app-b', 'app-c'];
const INSTANCES = 4;
/** The default pool: behind PgBouncer a pool is client connections, cheap; the server side stays at PgBouncer's 20. */
const DB_POOL_MAX = 10;
const MAX_CONNECTIONS = 40;
const REPLICA_MAX_CONNECTIONS = HOSTS.length * INSTANCES * (DB_POOL_MAX + 1) + 5 + 3;
/** The primary's budget: 40 − 3 superuser_reserved − 12 liveness (one per instance) − 5 reserve. */
const PGBOUNCER_SERVER_CONNECTIONS = MAX_CONNECTIONS - 3 - HOSTS.length * INSTANCES - 5;
/** After PgBouncer is back, how long 503s remain the promised answer (the app's gate probes, PgBouncer's login retry is 1 s). */
const OUTAGE_TAIL_MS = 3_000;
const LOAD_MS = 15_000;

let lan: Lan;
let primary: PgServer;
let replica: PgServer;
let bouncer: PgBouncer;
let hosts: AppHost[] = [];
let proxy: ProxyHost | undefined;

const ok = (s: Sample) => s.status >= 200 && s.status < 300;

/** Every acknowledged write is in the database once, as acknowledged. */
async function assertStoredOnce(acks: Ack[]): Promise<void> {
  const rows = await primary.query<{ request_id: string; n: string; id: string; description: string }>(
    'sitelog',
    `SELECT request_id, count(*) AS n, min(id) AS id, min(description) AS description FROM system_logs WHERE request_id = ANY($1) GROUP BY request_id`,
    [acks.map((a) => a.key)],
  );
  const stored = new Map(rows.map((r) => [r.request_id, r]));
  const lost = acks.filter((a) => !stored.has(a.key));
  const wrong = acks.filter((a) => {
    const row = stored.get(a.key);
    return row && (row.n !== '1' || Number(row.id) !== a.id || row.description !== a.description);
  });
  assert.deepEqual(lost.slice(0, 5), [], `${lost.length} of ${acks.length} acknowledged writes are not stored`);
  assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} acknowledged writes are stored twice or otherwise`);
}

/** Failures by kind, status and error code, for the assertion messages. */
function tally(samples: Sample[]): string {
  const counts = new Map<string, number>();
  for (const s of samples) counts.set(`${s.kind} ${s.status} ${s.code ?? ''}`, (counts.get(`${s.kind} ${s.status} ${s.code ?? ''}`) ?? 0) + 1);
  return JSON.stringify(Object.fromEntries(counts));
}

const trouble = () =>
  hosts
    .flatMap((h) => h.trouble())
    .slice(-15)
    .join('\n');

/** The app's read connections to the replica now: its read pools', not the lag monitors' (…-read-monitor). */
async function replicaConnections(): Promise<number> {
  const [row] = await replica.query<{ n: string }>(
    'postgres',
    `SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name ~ '^sitelog-web-[0-9]+-read$'`,
  );
  return Number(row?.n);
}

async function upAll(): Promise<void> {
  if (!replica.running()) await replica.start();
  if (!bouncer.pid) await bouncer.start();
  await Promise.all(hosts.map((h) => h.up()));
}

describe('past one database server: 3 hosts × 4 instances, PgBouncer, a streaming replica', { timeout: 170_000 }, () => {
  before(async () => {
    lan = await Lan.create([...HOSTS, 'proxy']);
    primary = await startPrimary({ address: lan.gateway, subnet: lan.subnet, maxConnections: MAX_CONNECTIONS });
    // the replica's connections are direct ones: 12 instances × (DB_POOL_MAX + 1 for the lag) + 5 spare
    replica = await startReplica(primary, { address: lan.gateway, subnet: lan.subnet, maxConnections: REPLICA_MAX_CONNECTIONS });
    bouncer = await startPgBouncerFor(primary, lan.gateway, PGBOUNCER_SERVER_CONNECTIONS);
    const proxyHost = lan.host('proxy');
    hosts = HOSTS.map(
      (name) =>
        hostOnLan(lan, name, {
          DATABASE_URL: bouncer.url('sitelog', { host: lan.gateway }),
          DATABASE_DIRECT_URL: primary.url('sitelog', { host: lan.gateway }),
          DATABASE_READ_URLS: replica.url('sitelog', { host: lan.gateway }),
          DB_POOL_MAX: String(DB_POOL_MAX),
          WEB_INSTANCES: String(INSTANCES),
          // debug: each 503 an instance answers is logged with its cause, shown when the test fails
          LOG_LEVEL: 'debug',
        }),
    );
    proxy = new ProxyHost(proxyHost, hosts);
  });

  after(async () => {
    await Promise.all(hosts.map((h) => h.remove()));
    await proxy?.remove();
    await bouncer?.remove();
    await replica?.remove();
    await primary?.remove();
    await lan?.remove();
  });

  test('when 3 hosts × 4 instances start at once behind PgBouncer, then all 12 run, migrations run once, and each host writes one "server started" and one entry per instance', async () => {
    await Promise.all(hosts.map((h) => h.start({ timeoutMs: 90_000 })));

    const instances = await waitFor('12 live instances', async () => {
      const response = await fetch(`${proxy!.url}/api/instances`, { headers: authHeaders() });
      const { items } = (await response.json()) as { items: Array<{ host: string; instance: number }> };
      return items.length === HOSTS.length * INSTANCES && items;
    });
    for (const name of HOSTS) {
      assert.deepEqual(
        instances
          .filter((i) => i.host === name)
          .map((i) => i.instance)
          .sort(),
        [0, 1, 2, 3],
        `${name}'s instances`,
      );
    }

    const migrations = fs.readdirSync(path.join(ROOT, 'src', 'db', 'migrations')).filter((f) => /^\d+-.*\.ts$/.test(f));
    const applied = await primary.query<{ name: string }>('sitelog', 'SELECT name FROM sitelog_migrations ORDER BY name');
    assert.equal(applied.length, migrations.length, 'each migration is recorded once');
    const appliedLines = hosts.flatMap((h) => h.logLines().filter((l) => l.includes('"migration applied"')));
    assert.equal(appliedLines.length, migrations.length, `"migration applied" once per migration across all hosts:\n${appliedLines.join('\n')}`);

    for (const name of HOSTS) {
      const entries = await primary.query<{ description: string }>(
        'sitelog',
        `SELECT description FROM system_logs WHERE host = $1 AND stype = 'system' ORDER BY id`,
        [name],
      );
      const descriptions = entries.map((e) => e.description);
      assert.equal(descriptions.filter((d) => d === 'server started').length, 1, `${name}: one "server started" in ${JSON.stringify(descriptions)}`);
      const started = descriptions.map((d) => d.match(/^instance (\d+) started \(pid \d+\)$/)?.[1]).filter((k) => k !== undefined);
      assert.deepEqual(started.sort(), ['0', '1', '2', '3'], `${name}: one entry per instance`);
    }

    const errors = hosts.flatMap((h) => h.logLines().filter((l) => /"level":[56]0|\bERROR\b|\bFATAL\b/.test(l)).map((l) => `${h.host.name}: ${l.slice(0, 300)}`));
    assert.deepEqual(errors.slice(0, 10), [], 'no error in any host\'s PM2 logs');
  });

  test('when 200 clients mix transactional writes and reads through nginx, then zero failed requests and every acknowledged write is stored once', async () => {
    await upAll();
    const connections = sampleConnections({ primary, replica, bouncer });
    const { samples, acks, mismatches } = await startTraffic(proxy!.url, { connections: 200, maxMs: LOAD_MS }).done;
    const peak = await connections.stop();

    const rps = samples.length / (LOAD_MS / 1000);
    const p99 = percentile(
      samples.map((s) => s.ms),
      99,
    );
    process.stdout.write(
      `# scaling: 3 hosts × ${INSTANCES} instances, DB_POOL_MAX ${DB_POOL_MAX}, PgBouncer pool ${PGBOUNCER_SERVER_CONNECTIONS}, 200 clients ${LOAD_MS / 1000} s: ` +
        `${samples.length} requests (${rps.toFixed(0)} req/s), ${acks.length} writes, p99 ${p99.toFixed(0)} ms; ` +
        `primary peak ${peak.total} connections (${peak.pgbouncer} from PgBouncer, ${peak.direct} direct), replica peak ${peak.replica}; ` +
        `SHOW POOLS peaks: cl_active ${peak.clActive}, cl_waiting ${peak.clWaiting}, sv_active ${peak.svActive}, maxwait ${peak.maxwaitMs.toFixed(0)} ms\n`,
    );
    const failed = samples.filter((s) => !ok(s));
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${samples.length} failed: ${tally(failed)}; the hosts logged:\n${trouble()}`);
    assert.deepEqual(mismatches.slice(0, 5), []);
    assert.ok(acks.length > 500, `enough writes to mean something (${acks.length})`);
    await assertStoredOnce(acks);
    assert.ok(peak.pgbouncer <= PGBOUNCER_SERVER_CONNECTIONS, `PgBouncer kept to its ${PGBOUNCER_SERVER_CONNECTIONS} server connections (${peak.pgbouncer})`);
    assert.ok(peak.total <= MAX_CONNECTIONS - 3, `the primary stayed within max_connections (${peak.total})`);
  });

  test('when the replica stops under load, then no request fails, lists are answered by the primary, and reads return to the replica once it is back', async () => {
    await upAll();
    const traffic = startTraffic(proxy!.url, { connections: 64, maxMs: 60_000 });
    let down: { from: number; to: number } | undefined;
    let back: number | undefined;
    let failure: Error | undefined;
    try {
      await waitFor('list reads on the replica', async () => traffic.acks.length > 50 && (await replicaConnections()) > 0, { timeoutMs: 15_000 });
      const listsBefore = traffic.samples.filter((s) => s.kind === 'list').length;
      const stopping = Date.now();
      await replica.stop('fast');
      down = { from: stopping, to: Date.now() };
      await waitFor('lists answered while the replica is down', () => traffic.samples.filter((s) => s.kind === 'list' && ok(s)).length > listsBefore + 300, {
        timeoutMs: 20_000,
      });
      await replica.start();
      down.to = Date.now();
      await waitFor('the app reading from the replica again', async () => (await replicaConnections()) > 0, { timeoutMs: 15_000 });
      back = Date.now() - down.to;
    } catch (err) {
      // the traffic stops first; its figures and failures say more than the wait that timed out
      failure = err as Error;
    }
    const { samples, acks, mismatches } = await traffic.stop();
    if (down) {
      const during = samples.filter((s) => s.kind === 'list' && s.at >= down.from && s.at <= down.to);
      process.stdout.write(
        `# scaling: replica stopped (pg_ctl -m fast) for ${down.to - down.from} ms under 64 clients: ${during.length} lists answered meanwhile ` +
          `(${during.filter(ok).length} × 2xx), slowest ${Math.max(0, ...during.map((s) => s.ms)).toFixed(0)} ms; reads on the replica again ${back ?? '–'} ms after it started\n`,
      );
    }
    const failed = samples.filter((s) => !ok(s));
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${samples.length} failed: ${tally(failed)}; the hosts logged:\n${trouble()}`);
    assert.deepEqual(mismatches.slice(0, 5), []);
    await assertStoredOnce(acks);
    if (failure) throw failure;
    // falling back costs a list at most a second beyond what lists took just before the stop
    const slowest = (from: number, to: number) => Math.max(0, ...samples.filter((s) => s.kind === 'list' && s.at >= from && s.at <= to).map((s) => s.ms));
    const span = down!.to - down!.from;
    assert.ok(slowest(down!.from, down!.to) <= slowest(down!.from - span, down!.from) + 1_000, 'lists fell back to the primary within a second');
  });

  test('when PgBouncer restarts under load, then 503s only until shortly after it is back, and every acknowledged write is stored once', async () => {
    await upAll();
    const traffic = startTraffic(proxy!.url, { connections: 64, maxMs: 60_000 });
    await waitFor('traffic flowing', () => traffic.acks.length > 100, { timeoutMs: 15_000 });
    const from = Date.now();
    // SIGINT: a safe shutdown (PAUSE, then SHUTDOWN), as systemd's unit stops it
    await bouncer.restart('SIGINT');
    const back = Date.now();
    const until = back + OUTAGE_TAIL_MS;
    await waitFor('writes acknowledged after the restart', () => traffic.samples.filter((s) => s.kind === 'write' && ok(s) && s.at > until).length > 100, {
      timeoutMs: 20_000,
    });
    const { samples, acks, mismatches } = await traffic.stop();

    const promised = (s: Sample) => s.status === 503 && s.at >= from && s.at <= until;
    const failed = samples.filter((s) => !ok(s) && !promised(s));
    const answered503 = samples.filter(promised);
    const firstOk = samples.filter((s) => s.kind === 'write' && ok(s) && s.at >= back).sort((a, b) => a.at - b.at)[0];
    assert.deepEqual(failed.slice(0, 5), [], `${failed.length} of ${samples.length} failed other than the promised 503s: ${tally(failed)}; the hosts logged:\n${trouble()}`);
    assert.deepEqual(mismatches.slice(0, 5), []);
    await assertStoredOnce(acks);
    process.stdout.write(
      `# scaling: PgBouncer restarted (SIGINT) in ${back - from} ms under 64 clients: ${answered503.length} × 503 of ${samples.length} requests, ` +
        `slowest 503 ${Math.max(0, ...answered503.map((s) => s.ms)).toFixed(0)} ms, first write acknowledged ${firstOk ? firstOk.at - back : '–'} ms after it was back\n`,
    );
  });

  test('when npm run doctor runs on a host, then it sees the budget through PgBouncer, the pooling settings and the replica\'s lag, and finds them right', async () => {
    await upAll();
    const { out } = await hosts[0]!.doctor();
    const line = (id: string) => out.split('\n').find((l) => l.includes(` ${id}: `)) ?? `(no ${id} line)`;
    for (const id of ['pgbouncer', 'pgbouncer-budget', 'pgbouncer-clients', 'session-pooling', 'session-settings', 'pgbouncer-outage', 'replica-lag', 'replica-budget']) {
      assert.match(line(id), /^ok {2}/, `${id}:\n${out}`);
    }
    assert.match(line('pgbouncer-budget'), new RegExp(`\\b${PGBOUNCER_SERVER_CONNECTIONS}\\b`), 'the budget names PgBouncer\'s server connections');
    assert.doesNotMatch(out, new RegExp(PG_PASSWORD), 'no password in what it prints');
  });
});
