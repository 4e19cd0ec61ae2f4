import { hostOnLan, ProxyHost } from '../test/support/app-host.js';
import { sampleConnections, startPgBouncerFor, startPrimary, startReplica, type PgBouncer, type PgServer } from '../test/support/cluster.js';
import { Lan } from '../test/support/netns.js';
import { percentile, startTraffic } from '../test/support/traffic.js';

// `npm run bench:scaling` (as root: network namespaces): the seed incident's load
// (200 clients of test/support/traffic.ts through nginx) on each step of docs/scaling.md, against one
// PostgreSQL 15 whose max_connections is 40, on a LAN of network namespaces as test/scaling.test.ts:
//   1. one host × 4 instances, pools straight to PostgreSQL (and, to price PgBouncer, the same with
//      unnamed statements, then through PgBouncer);
//   2. three hosts × 4, straight to PostgreSQL (DB_POOL_MAX lowered until 12 × (pool + 1) fits);
//   3. three hosts × 4 through PgBouncer (transaction mode, 20 server connections);
//   4. the same, lists read on a streaming replica.
// Prints one markdown table. SCALING_SECONDS (15) and SCALING_CLIENTS (200) change the load; each
// step first runs it 5 s uncounted.

const SECONDS = Number(process.env['SCALING_SECONDS'] ?? 15);
const CLIENTS = Number(process.env['SCALING_CLIENTS'] ?? 200);
const WARMUP_SECONDS = 5;
const MAX_CONNECTIONS = 40;
const INSTANCES = 4;
const PGBOUNCER_SERVER_CONNECTIONS = 20;

type Step = { name: string; hosts: number; poolMax: number; pgbouncer: boolean; replica: boolean; unnamed?: boolean };
const STEPS: Step[] = [
  // direct, each step's pool is the largest the budget lets in: 4 × (7 + 1) + 5 reserve ≤ 40 − 3
  { name: 'one host, direct', hosts: 1, poolMax: 7, pgbouncer: false, replica: false },
  // what PgBouncer costs, in two parts: unnamed statements on the same direct connections (a
  // DATABASE_DIRECT_URL spelled apart from DATABASE_URL turns pooled mode on), then the hop (below)
  { name: 'one host, direct, unnamed statements', hosts: 1, poolMax: 7, pgbouncer: false, replica: false, unnamed: true },
  // 12 × (2 + 1) = 36 (3 would need 48). Before any PgBouncer step: PgBouncer keeps its server
  // connections open after a step, and the test's superuser role could take the last slots
  { name: 'three hosts, direct', hosts: 3, poolMax: 2, pgbouncer: false, replica: false },
  { name: 'one host, PgBouncer', hosts: 1, poolMax: 7, pgbouncer: true, replica: false },
  // behind PgBouncer a pool is cheap client connections (the default 10); the replica takes
  // 12 × (10 + 1) direct ones
  { name: 'three hosts, PgBouncer', hosts: 3, poolMax: 10, pgbouncer: true, replica: false },
  { name: 'three hosts, PgBouncer + replica', hosts: 3, poolMax: 10, pgbouncer: true, replica: true },
];

async function runStep(step: Step, lan: Lan, primary: PgServer, replica: PgServer, bouncer: PgBouncer) {
  const proxyHost = lan.host('proxy');
  const hosts = ['app-a', 'app-b', 'app-c'].slice(0, step.hosts).map(
    (name) =>
      hostOnLan(lan, name, {
        DATABASE_URL: step.pgbouncer ? bouncer.url('sitelog', { host: lan.gateway }) : primary.url('sitelog', { host: lan.gateway }),
        ...(step.pgbouncer && { DATABASE_DIRECT_URL: primary.url('sitelog', { host: lan.gateway }) }),
        ...(step.unnamed && { DATABASE_DIRECT_URL: `${primary.url('sitelog', { host: lan.gateway })}?sslmode=disable` }),
        ...(step.replica && { DATABASE_READ_URLS: replica.url('sitelog', { host: lan.gateway }) }),
        DB_POOL_MAX: String(step.poolMax),
        WEB_INSTANCES: String(INSTANCES),
      }),
  );
  const proxy = new ProxyHost(proxyHost, hosts);
  try {
    await Promise.all(hosts.map((h) => h.start({ timeoutMs: 90_000 })));
    // warm-up, not counted: the JIT, PostgreSQL's caches, the pools
    await startTraffic(proxy.url, { connections: CLIENTS, maxMs: WARMUP_SECONDS * 1000 }).done;
    const sampler = sampleConnections({ primary, replica, bouncer });
    const { samples } = await startTraffic(proxy.url, { connections: CLIENTS, maxMs: SECONDS * 1000 }).done;
    const peak = await sampler.stop();
    const failures = samples.filter((s) => s.status < 200 || s.status >= 300);
    const byKind = new Map<string, number>();
    for (const f of failures) byKind.set(`${f.kind} ${f.status} ${f.code ?? ''}`.trim(), (byKind.get(`${f.kind} ${f.status} ${f.code ?? ''}`.trim()) ?? 0) + 1);
    const failed = `${failures.length} of ${samples.length}${byKind.size ? ` (${[...byKind].map(([k, n]) => `${n} × ${k}`).join(', ')})` : ''}`;
    const ms = samples.map((s) => s.ms);
    return { step, failed, rps: samples.length / SECONDS, p50: percentile(ms, 50), p99: percentile(ms, 99), peak };
  } finally {
    await Promise.all(hosts.map((h) => h.remove()));
    await proxy.remove();
  }
}

async function main(): Promise<void> {
  const lan = await Lan.create(['app-a', 'app-b', 'app-c', 'proxy']);
  let primary: PgServer | undefined;
  let replica: PgServer | undefined;
  let bouncer: PgBouncer | undefined;
  try {
    primary = await startPrimary({ address: lan.gateway, subnet: lan.subnet, maxConnections: MAX_CONNECTIONS });
    replica = await startReplica(primary, { address: lan.gateway, subnet: lan.subnet, maxConnections: 140 });
    bouncer = await startPgBouncerFor(primary, lan.gateway, PGBOUNCER_SERVER_CONNECTIONS);
    const rows: string[] = [];
    let baseline: number | undefined;
    for (const step of STEPS) {
      process.stderr.write(`scaling: ${step.name}…\n`);
      const r = await runStep(step, lan, primary, replica, bouncer);
      baseline ??= r.rps;
      const connections = step.pgbouncer ? `${r.peak.total} (${r.peak.pgbouncer} PgBouncer + ${r.peak.direct} direct)` : `${r.peak.total}`;
      rows.push(
        `| ${step.name} | ${step.hosts} × ${INSTANCES} | ${step.poolMax} | ${connections} | ${step.replica ? r.peak.replica : '–'} | ` +
          `${r.rps.toFixed(0)} | ${(r.rps / baseline).toFixed(2)} | ${r.p50.toFixed(0)} ms | ${r.p99.toFixed(0)} ms | ${r.failed} |`,
      );
    }
    process.stdout.write(
      [
        `${CLIENTS} clients × ${SECONDS} s through nginx, PostgreSQL max_connections ${MAX_CONNECTIONS}, ${new Date().toISOString().slice(0, 10)}`,
        '',
        '| step | hosts × instances | DB_POOL_MAX | primary connections (peak) | replica connections (peak) | req/s | ÷ first step | p50 | p99 | failed |',
        '|---|---|---|---|---|---|---|---|---|---|',
        ...rows,
        '',
      ].join('\n'),
    );
  } finally {
    await bouncer?.remove();
    await replica?.remove();
    await primary?.remove();
    await lan.remove();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`scaling: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
