import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  checks,
  clock,
  clockSkewMs,
  clusterMode,
  database,
  instancesOnline,
  judge,
  keepaliveOrder,
  killTimeout,
  listenTimeout,
  logDisk,
  migrations,
  nginxConfig,
  nginxDurationMs,
  pm2,
  poolBudget,
  trustedProxy,
  waitReady,
  type ClockSample,
  type DatabaseFacts,
  type Facts,
  type Finding,
  type PgSetting,
  type Pm2App,
  type Pm2Facts,
} from '../src/ops/doctor.js';
import { isWebApp } from '../src/ops/stack.js';
import { DATABASE_WAIT_MS, SHUTDOWN_MS } from '../src/timeouts.js';

// The doctor's checks, pure functions of facts. The facts of a sound local stack come from samples
// of what the doctor collects (test/fixtures/doctor/: `pm2 jlist`, `nginx -T`, pg_settings rows);
// each case changes one of them.

const fixture = (name: string) => fs.readFileSync(path.join(__dirname, 'fixtures', 'doctor', name), 'utf8');
const jlist = JSON.parse(fixture('pm2-jlist.json')) as Pm2App[];
const pgSettings = JSON.parse(fixture('pg-settings.json')) as PgSetting[];
const nginxT = fixture('nginx-T.stdout.txt');
const LOCAL_CONF = '/home/sitelog/sitelog/.data/nginx/local.conf';

/** The sample's web processes, each with `settings` over its pm2_env and `env` where PM2 puts the environment (both places). */
function web(settings: Record<string, unknown> = {}, env: Record<string, string> = {}): Facts['web'] {
  const [first, ...rest] = jlist.filter(isWebApp).map((p) => ({
    ...p,
    pm2_env: { ...p.pm2_env, ...settings, ...env, env: { ...p.pm2_env.env, ...env } },
  }));
  assert.ok(first, 'the jlist sample has web processes');
  return [first, ...rest];
}

const scaled = (processes: Facts['web'], count: number): Facts['web'] => [processes[0], ...Array.from({ length: count - 1 }, () => processes[0])];

function reachable(over: Partial<Omit<Extract<DatabaseFacts, { state: 'reachable' }>, 'state'>> = {}): DatabaseFacts {
  return { state: 'reachable', settings: pgSettings, pending: [], clock: [{ sentMs: 1_000, serverMs: 1_012, receivedMs: 1_020 }], ...over };
}

const unreachable: DatabaseFacts = { state: 'unreachable', error: 'connect ECONNREFUSED 127.0.0.1:5433' };
const nginxFailing = (stderr: string, asRoot = false): Facts['nginx'] => ({ installed: true, config: undefined, asRoot, test: { passed: false, stderr } });
const nginxPassing = (stdout: string, config?: string): Facts['nginx'] => ({ installed: true, config, asRoot: false, test: { passed: true, stdout } });

function facts(over: Partial<Facts> = {}): Facts {
  return {
    web: web(),
    database: reachable(),
    nginx: nginxPassing(nginxT, LOCAL_CONF),
    disk: { dir: '/home/sitelog/.pm2/logs', freeMb: 20_480 },
    limits: { minFreeMb: 256, maxSkewMs: 1_000 },
    ...over,
  };
}

/** A finding as the doctor prints it, its fix on the same line. */
const line = (f: Finding) => `${f.ok ? 'ok' : 'FAIL'} ${f.id}: ${f.detail}${f.fix ? ` | fix: ${f.fix}` : ''}`;

type Case<F> = { when: string; then: string; facts: F; expect: RegExp[] };

/** One test per case: the check's findings, as printed, match `expect` one for one (none: the check does not apply). */
function table<F = Facts>(check: (facts: F) => Finding | Finding[], cases: Case<F>[]): void {
  for (const c of cases) {
    test(`when ${c.when}, then ${c.then}`, () => {
      const lines = [check(c.facts)].flat().map(line);
      assert.equal(lines.length, c.expect.length, lines.join('\n'));
      lines.forEach((l, i) => assert.match(l, c.expect[i]!));
    });
  }
}

describe('pm2', () => {
  const home = '/home/sitelog/.pm2';
  table<Pm2Facts>(pm2, [
    { when: 'no daemon runs', then: 'pm2 fails naming PM2_HOME', facts: { home, daemon: false, processes: [] }, expect: [/^FAIL pm2: no PM2 daemon runs for PM2_HOME=\/home\/sitelog\/\.pm2 \| fix: npm start/] },
    {
      when: 'PM2 runs db and proxy but no web',
      then: 'pm2 fails',
      facts: { home, daemon: true, processes: jlist.filter((p) => !isWebApp(p)) },
      expect: [/^FAIL pm2: PM2 runs no web app in the sitelog namespace/],
    },
    { when: 'PM2 runs web', then: 'pm2 has nothing to say', facts: { home, daemon: true, processes: jlist }, expect: [] },
    { when: 'PM2 runs a blue/green slot', then: 'pm2 has nothing to say', facts: { home, daemon: true, processes: web().map((p) => ({ ...p, name: 'web-green' })) }, expect: [] },
  ]);
});

describe('cluster-mode', () => {
  table(clusterMode, [
    { when: 'web runs in cluster mode', then: 'it passes with the instance count', facts: facts(), expect: [/^ok cluster-mode: web runs in cluster mode \(2 instances\)$/] },
    { when: 'web runs in fork mode', then: 'it fails naming the mode', facts: facts({ web: web({ exec_mode: 'fork_mode' }) }), expect: [/^FAIL cluster-mode: web runs in fork_mode mode: .* \| fix: exec_mode: 'cluster'/] },
    { when: 'PM2 reports no exec_mode', then: 'it fails as fork', facts: facts({ web: web({ exec_mode: undefined }) }), expect: [/^FAIL cluster-mode: web runs in fork mode:/] },
  ]);
});

describe('wait-ready', () => {
  table(waitReady, [
    { when: 'wait_ready is on', then: 'it passes', facts: facts(), expect: [/^ok wait-ready: wait_ready is on/] },
    { when: 'wait_ready is off', then: 'it fails', facts: facts({ web: web({ wait_ready: false }) }), expect: [/^FAIL wait-ready: wait_ready is off: .* \| fix: wait_ready: true/] },
    { when: 'wait_ready is unset', then: 'it fails', facts: facts({ web: web({ wait_ready: undefined }) }), expect: [/^FAIL wait-ready:/] },
  ]);
});

// PM2's two timers: each must outlast what the instance does meanwhile
for (const { check, id, timer, bound, what, sound } of [
  { check: listenTimeout, id: 'listen-timeout', timer: 'listen_timeout', bound: DATABASE_WAIT_MS, what: 'the database wait', sound: 75_000 },
  { check: killTimeout, id: 'kill-timeout', timer: 'kill_timeout', bound: SHUTDOWN_MS, what: 'the shutdown bound', sound: 10_000 },
]) {
  describe(id, () => {
    const withTimer = (ms: number | undefined) => facts({ web: web({ [timer]: ms }) });
    table(check, [
      { when: `${timer} is above ${what}`, then: 'it passes', facts: facts(), expect: [new RegExp(`^ok ${id}: ${timer} ${sound} ms is above ${what} \\(${bound} ms\\)$`)] },
      { when: `${timer} is 1000`, then: 'it fails', facts: withTimer(1_000), expect: [new RegExp(`^FAIL ${id}: ${timer} 1000 ms is not above .* \\| fix: ${timer} above ${bound}`)] },
      { when: `${timer} equals ${what}`, then: 'it fails', facts: withTimer(bound), expect: [new RegExp(`^FAIL ${id}:`)] },
      { when: `${timer} is unset`, then: 'it fails saying so', facts: withTimer(undefined), expect: [new RegExp(`^FAIL ${id}: ${timer} unset ms`)] },
    ]);
  });
}

describe('instances-online', () => {
  const [first, second] = web();
  const stopped = { ...second!, pm2_env: { ...second!.pm2_env, status: 'stopped' } };
  table(instancesOnline, [
    { when: 'every instance is online', then: 'it passes', facts: facts(), expect: [/^ok instances-online: 2 of 2 web instances online$/] },
    { when: 'one instance is stopped', then: 'it fails counting', facts: facts({ web: [first, stopped] }), expect: [/^FAIL instances-online: 1 of 2 web instances online \| fix: npx pm2 logs web/] },
  ]);
});

describe('trusted-proxy', () => {
  table(trustedProxy, [
    { when: 'web listens on loopback', then: 'it passes', facts: facts(), expect: [/^ok trusted-proxy: web listens on 127\.0\.0\.1 and believes X-Forwarded-For and X-Request-Id from loopback only$/] },
    { when: 'web listens on a LAN address and trusts the nginx host', then: 'it passes', facts: facts({ web: web({}, { BIND_ADDRESS: '10.0.0.5', TRUST_PROXY: '10.0.0.2' }) }), expect: [/^ok trusted-proxy: web listens on 10\.0\.0\.5 .* from 10\.0\.0\.2 only$/] },
    { when: 'web listens on a LAN address and trusts only loopback', then: 'it fails naming TRUST_PROXY', facts: facts({ web: web({}, { BIND_ADDRESS: '10.0.0.5' }) }), expect: [/^FAIL trusted-proxy: BIND_ADDRESS 10\.0\.0\.5 is reachable from other hosts, but TRUST_PROXY trusts only loopback.* \| fix: TRUST_PROXY=/] },
  ]);
});

describe('database', () => {
  table(database, [
    { when: 'PostgreSQL answers', then: 'it passes', facts: facts(), expect: [/^ok database: PostgreSQL answers$/] },
    { when: 'PostgreSQL refuses', then: "it fails with the driver's message", facts: facts({ database: unreachable }), expect: [/^FAIL database: PostgreSQL does not answer: connect ECONNREFUSED 127\.0\.0\.1:5433 \|/] },
    { when: 'web has no DATABASE_URL', then: 'it fails', facts: facts({ database: { state: 'no-url' } }), expect: [/^FAIL database: web has no DATABASE_URL/] },
  ]);
});

describe('pool-budget', () => {
  const settings = (max: string) => pgSettings.map((row) => (row.name === 'max_connections' ? { ...row, setting: max } : row));
  table(poolBudget, [
    { when: 'DB_POOL_MAX is unset', then: "it counts config.ts's default pool", facts: facts(), expect: [/^ok pool-budget: 2 instances × pool 10 need 27 of 97 connections$/] },
    { when: 'DB_POOL_MAX is not a number', then: "it counts config.ts's default pool", facts: facts({ web: web({}, { DB_POOL_MAX: 'lots' }) }), expect: [/^ok pool-budget: 2 instances × pool 10 need 27/] },
    { when: 'WEB_INSTANCES is above what runs', then: 'it counts WEB_INSTANCES', facts: facts({ web: web({}, { WEB_INSTANCES: '4' }) }), expect: [/^ok pool-budget: 4 instances × pool 10 need 49 of 97/] },
    { when: 'WEB_INSTANCES is max', then: 'it counts what runs', facts: facts({ web: web({}, { WEB_INSTANCES: 'max' }) }), expect: [/^ok pool-budget: 2 instances × pool 10/] },
    {
      when: 'web is scaled to 4 with pools of 30',
      then: 'it fails with the budget spelled out',
      facts: facts({ web: scaled(web({}, { DB_POOL_MAX: '30' }), 4) }),
      expect: [
        /^FAIL pool-budget: pool budget exceeded: instances 4 × \(DB_POOL_MAX 30 \+ 1\) \+ reserve 5 = 129 connections, but the server allows 97 \(max_connections 100 − superuser_reserved_connections 3\); .* \| fix: lower DB_POOL_MAX or the instance count, or raise max_connections$/,
      ],
    },
    { when: 'max_connections is 20', then: 'it fails', facts: facts({ database: reachable({ settings: settings('20') }) }), expect: [/^FAIL pool-budget: .* = 27 connections, but the server allows 17/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
  ]);
});

describe('migrations', () => {
  table(migrations, [
    { when: 'every migration is applied', then: 'it passes', facts: facts(), expect: [/^ok migrations: every migration of this build is applied$/] },
    { when: 'two are pending', then: 'it fails naming them', facts: facts({ database: reachable({ pending: ['0004-a', '0005-b'] }) }), expect: [/^FAIL migrations: not applied: 0004-a, 0005-b \| fix: npm run migrate/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
  ]);
});

describe('clock', () => {
  const sample = (skewMs: number, roundTripMs = 20): ClockSample => ({ sentMs: 1_000, serverMs: 1_000 + roundTripMs / 2 + skewMs, receivedMs: 1_000 + roundTripMs });
  for (const { when, samples, skew } of [
    { when: 'one sample', samples: [sample(2)], skew: 2 },
    { when: 'a slow sample beside a quick one', samples: [sample(900, 2_000), sample(-3, 4)], skew: -3 },
  ]) {
    test(`when ${when}, then the clock skew is ${skew} ms`, () => assert.equal(clockSkewMs(samples), skew));
  }
  table(clock, [
    { when: 'the clocks agree', then: 'it passes', facts: facts(), expect: [/^ok clock: this host and PostgreSQL agree within 2 ms$/] },
    { when: 'the skew equals the limit', then: 'it passes', facts: facts({ database: reachable({ clock: [sample(-1_000)] }) }), expect: [/^ok clock: .* within 1000 ms$/] },
    { when: 'this host is 120 s ahead', then: 'it fails', facts: facts({ database: reachable({ clock: [sample(-120_000)] }) }), expect: [/^FAIL clock: this host's clock is 120000 ms off PostgreSQL's: .* \| fix: run NTP/] },
    { when: 'PostgreSQL does not answer', then: 'it does not apply', facts: facts({ database: unreachable }), expect: [] },
  ]);
});

describe('nginx-config', () => {
  table(nginxConfig, [
    { when: 'nginx -T passes', then: 'it passes naming the config', facts: facts(), expect: [/^ok nginx-config: nginx -t passes \(\/home\/sitelog\/sitelog\/\.data\/nginx\/local\.conf\)$/] },
    { when: 'nginx -T passes on the system config', then: 'it passes', facts: facts({ nginx: nginxPassing(nginxT) }), expect: [/^ok nginx-config: nginx -t passes$/] },
    {
      when: 'a directive is misspelt',
      then: "it fails with nginx's [emerg] line",
      facts: facts({ nginx: nginxFailing(fixture('nginx-T-unknown-directive.stderr.txt')) }),
      expect: [/^FAIL nginx-config: nginx -t fails: unknown directive "proxy_pas" in \/home\/sitelog\/sitelog\/\.data\/nginx\/sitelog-site\.conf:74 \| fix: fix the file it names/],
    },
    {
      when: 'nginx -T is denied to a user other than root',
      then: 'it fails asking for root',
      facts: facts({ nginx: nginxFailing(fixture('nginx-T-not-root.stderr.txt')) }),
      expect: [/^FAIL nginx-config: nginx -t cannot run as this user \(open\(\) "\/run\/nginx\.pid" failed \(13: Permission denied\)\) \| fix: run the doctor as root/],
    },
    { when: 'nginx -T is denied to root', then: 'it fails as a broken config', facts: facts({ nginx: nginxFailing(fixture('nginx-T-not-root.stderr.txt'), true) }), expect: [/^FAIL nginx-config: nginx -t fails: open\(\)/] },
    { when: 'nginx fails without an [emerg] line', then: 'it fails with all nginx said', facts: facts({ nginx: nginxFailing('  killed\n') }), expect: [/^FAIL nginx-config: nginx -t fails: killed \|/] },
    { when: 'nginx is not installed', then: 'it fails', facts: facts({ nginx: { installed: false } }), expect: [/^FAIL nginx-config: no nginx binary on this host \| fix: apt-get install nginx/] },
  ]);
});

describe('keepalive-order', () => {
  const withTimeout = (replacement: string) => nginxPassing(nginxT.replace('    keepalive_timeout 30s;\n    keepalive_requests', `${replacement}    keepalive_requests`));
  table(keepaliveOrder, [
    { when: 'the upstream keeps idle connections 30 s', then: 'it passes', facts: facts(), expect: [/^ok keepalive-order: nginx drops idle upstream connections after 30 s, before the app does \(65 s\)$/] },
    { when: 'the upstream keeps them 90 s', then: 'it fails', facts: facts({ nginx: withTimeout('    keepalive_timeout 90s;\n') }), expect: [/^FAIL keepalive-order: nginx keeps idle upstream connections 90 s, the app 65 s: .* \| fix: keepalive_timeout below 65s/] },
    { when: 'the upstream keeps them 1m5s, as long as the app', then: 'it fails', facts: facts({ nginx: withTimeout('    keepalive_timeout 1m5s;\n') }), expect: [/^FAIL keepalive-order: nginx keeps idle upstream connections 65 s/] },
    { when: 'the upstream sets no keepalive_timeout', then: "it passes on nginx's default of 60 s", facts: facts({ nginx: withTimeout('') }), expect: [/^ok keepalive-order: .* after 60 s/] },
    { when: 'there is no upstream sitelog_web', then: 'it fails', facts: facts({ nginx: nginxPassing(nginxT.replace(/sitelog_web/g, 'other')) }), expect: [/^FAIL keepalive-order: no upstream sitelog_web/] },
    { when: 'nginx -T fails', then: 'it does not apply', facts: facts({ nginx: nginxFailing('') }), expect: [] },
    { when: 'nginx is not installed', then: 'it does not apply', facts: facts({ nginx: { installed: false } }), expect: [] },
  ]);
  for (const [text, ms] of [['30', 30_000], ['30s', 30_000], ['500ms', 500], ['1m', 60_000], ['1m30s', 90_000], ['1h', 3_600_000]] as const) {
    test(`when nginx says ${text}, then it means ${ms} ms`, () => assert.equal(nginxDurationMs(text), ms));
  }
});

describe('log-disk', () => {
  table(logDisk, [
    { when: '20 GB are free', then: 'it passes', facts: facts(), expect: [/^ok log-disk: 20480 MB free for logs in \/home\/sitelog\/\.pm2\/logs$/] },
    { when: 'exactly the minimum is free', then: 'it passes', facts: facts({ disk: { dir: '/logs', freeMb: 256 } }), expect: [/^ok log-disk:/] },
    { when: '100 MB are free', then: 'it fails', facts: facts({ disk: { dir: '/logs', freeMb: 100 } }), expect: [/^FAIL log-disk: 100 MB free for logs in \/logs \(below 256 MB\): .* \| fix: free space/] },
  ]);
});

describe('all checks', () => {
  const ids = (findings: Finding[]) => findings.map((f) => `${f.ok ? 'ok' : 'FAIL'} ${f.id}`);
  test('when the stack is sound, then every check passes, in the order the doctor prints', () => {
    assert.equal(checks.length, 13);
    assert.deepEqual(ids(judge(facts())), [
      ...['cluster-mode', 'wait-ready', 'listen-timeout', 'kill-timeout', 'instances-online', 'trusted-proxy', 'database'],
      ...['pool-budget', 'migrations', 'clock', 'nginx-config', 'keepalive-order', 'log-disk'],
    ].map((id) => `ok ${id}`));
  });
  test('when PostgreSQL and nginx fail, then only their first checks speak for them', () => {
    const findings = judge(facts({ database: unreachable, nginx: nginxFailing('') }));
    assert.deepEqual(ids(findings).filter((l) => l.startsWith('FAIL')), ['FAIL database', 'FAIL nginx-config']);
    assert.equal(findings.length, 9);
  });
});
