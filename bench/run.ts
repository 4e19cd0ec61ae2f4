import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import pg from 'pg';
import { findNginx, renderStandalone } from '../src/ops/nginx.js';
import { listAll, pm2 } from '../src/ops/pm2.js';
import { cpuPerRequest, cpuSnapshot } from './cpu.js';
import { ENDPOINTS, endpointRequest } from './endpoints.js';
import { freePort } from '../test/support/ports.js';
import { startPostgres } from '../test/support/postgres.js';
import { decreases, startScraper } from '../test/support/scraper.js';
import { authHeaders, Stack } from '../test/support/stack.js';
import { waitFor } from '../test/support/wait.js';
import { retentionPhase, writeRetentionResults } from './retention.js';
import { listLogsStatement } from '../src/logs/queries.js';
import { encodeCursor, listLogsQuery } from '../src/logs/schema.js';
import type { TestPostgres } from '../test/support/postgres.js';

// `npm run bench`: the baseline (node:http + pg under PM2 cluster), the Express floor, sitelog
// direct and sitelog through nginx, side by side in one run, everything on loopback with its own
// ports and PM2_HOME.

const OUT = path.join(__dirname, 'results');
const CONNECTIONS = 64;
const DURATION_S = Number(process.env['BENCH_SECONDS'] ?? 6);
/** `npm run bench -- --rows 10000000`: the scale run measures at a tenth of this and at this. */
function rowsArgument(argv: string[]): number {
  const i = argv.indexOf('--rows');
  if (i === -1) return 1_000_000;
  const rows = Number(argv[i + 1]);
  if (!Number.isInteger(rows) || rows < 1_000 || rows > 100_000_000) {
    process.stderr.write('bench: --rows takes a whole number between 1000 and 100000000\n');
    process.exit(2);
  }
  return rows;
}
const ROWS = rowsArgument(process.argv.slice(2));
/** `npm run bench -- --rows N --retention-only`: the log seeded to N rows, then the retention phase alone. */
const RETENTION_ONLY = process.argv.includes('--retention-only');
const SOAK_REQUESTS = 100_000;

type ScaleRow = { rows: number; query: string; httpMedianMs: number; httpP95Ms: number; serverMs: number; index: string };

/** A 22-character base64 token per entry: the rare identifier a person searches for (a request id, a user). */
const TOKEN_SQL = `translate(rtrim(encode(decode(md5(g::text), 'hex'), 'base64'), '='), '+/', 'xy')`;

/**
 * Grows system_logs to `rows` with generated entries spread over the past year, four stypes. A big
 * load goes in the way ops would bulk-load: the secondary indexes dropped, the rows inserted, the
 * indexes built again from their own definitions (a GIN index fed row by row is the slow part).
 */
async function seed(postgres: TestPostgres, rows: number): Promise<void> {
  const db = new pg.Client({ connectionString: postgres.url('sitelog') });
  await db.connect();
  try {
    const from = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM system_logs')).rows[0]!.n) + 1;
    const bulk = rows - from > 1_000_000;
    const indexes = bulk
      ? (await db.query<{ name: string; def: string }>(
          `SELECT indexname AS name, indexdef AS def FROM pg_indexes
           WHERE tablename = 'system_logs' AND indexname IN ('system_logs_timeline', 'system_logs_stype_timeline', 'system_logs_description_trgm')`,
        )).rows
      : [];
    for (const index of indexes) await db.query(`DROP INDEX ${index.name}`);
    const batch = 1_000_000;
    for (let start = from; start <= rows; start += batch) {
      await db.query(
        `INSERT INTO system_logs (stype, "timestamp", description, ip, host, instance)
         SELECT (ARRAY['system','security','app','error'])[1 + g % 4],
                now() - interval '365 days' * (g::float8 / $2),
                'generated entry ' || g || ' token ' || ${TOKEN_SQL}, '127.0.0.1', 'seed-' || (g % 3), g % 4
         FROM generate_series($1::bigint, $3::bigint) g`,
        [start, rows, Math.min(rows, start + batch - 1)],
      );
    }
    await db.query(`SET maintenance_work_mem = '512MB'`);
    for (const index of indexes) await db.query(index.def);
    await db.query('VACUUM ANALYZE system_logs');
  } finally {
    await db.end();
  }
}

/** First page, a page deep in the history, stype + time range, text search: HTTP through nginx and EXPLAIN ANALYZE. */
async function scale(postgres: TestPostgres, db: pg.Client, proxy: string, rows: number, explain: string[]): Promise<ScaleRow[]> {
  const auth = authHeaders();
  // a cursor four fifths of the way back, a month of one stype in the middle, one entry's hash
  const [deep] = await postgres.query<{ timestamp: Date; id: string }>(
    'sitelog',
    `SELECT "timestamp", id FROM system_logs ORDER BY "timestamp" DESC, id DESC OFFSET $1 LIMIT 1`,
    [Math.floor(rows * 0.8)],
  );
  const [mid] = await postgres.query<{ id: string }>('sitelog', `SELECT (max(id) / 2)::bigint AS id FROM system_logs`);
  const needle = (await postgres.query<{ h: string }>('sitelog', `SELECT substr(${TOKEN_SQL}, 3, 12) AS h FROM (SELECT $1::bigint AS g) s`, [mid!.id]))[0]!.h;
  const until = new Date(Date.now() - 180 * 86_400_000);
  const since = new Date(until.getTime() - 30 * 86_400_000);
  const queries: Array<[string, Record<string, string>]> = [
    ['first page', { limit: '20' }],
    ['deep page (keyset cursor)', { limit: '20', before: encodeCursor(deep!.timestamp.toISOString(), Number(deep!.id)) }],
    ['stype + time range', { limit: '20', stype: 'security', since: since.toISOString(), until: until.toISOString() }],
    ['text search (pg_trgm)', { limit: '20', q: needle }],
  ];
  const out: ScaleRow[] = [];
  for (const [name, params] of queries) {
    const url = `${proxy}/api/logs?${new URLSearchParams(params).toString()}`;
    const times: number[] = [];
    for (let i = 0; i < 40; i++) {
      const t = performance.now();
      const res = await fetch(url, { headers: auth });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`${name}: HTTP ${res.status}`);
      if (i >= 5) times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const { statement, values } = listLogsStatement(listLogsQuery.parse(params));
    // the app's connections are warm and its statements prepared: the last of three runs on one connection
    let lines: string[] = [];
    for (let i = 0; i < 3; i++) {
      const plan = await db.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${statement.text}`, values);
      lines = plan.rows.map((r) => r['QUERY PLAN']);
    }
    const ms = (label: string) => Number(lines.find((l) => l.startsWith(label))?.match(/([\d.]+) ms/)?.[1] ?? NaN);
    const index = [...new Set(lines.flatMap((l) => [...l.matchAll(/(?:Index|Bitmap Index) Scan(?: Backward)? on (\w+)|Index Scan(?: Backward)? using (\w+)/g)].map((m) => m[1] ?? m[2])))].join(', ') || 'none';
    const fence = '```';
    explain.push(`## ${name}, ${rows.toLocaleString('en')} rows\n\n${fence}sql\n${statement.text.replace(/\s+/g, ' ')}\n${fence}\n\n${fence}\n${lines.join('\n')}\n${fence}\n`);
    out.push({ rows, query: name, httpMedianMs: times[Math.floor(times.length / 2)]!, httpP95Ms: times[Math.floor(times.length * 0.95)]!, serverMs: ms('Planning Time') + ms('Execution Time'), index });
  }
  return out;
}

type Row = {
  setup: string;
  endpoint: string;
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  ratio?: number;
  /** req/s against the Express floor's, both through nginx: the target is ≥ 1.2 for sitelog via nginx */
  floorRatio?: number;
  /** µs of CPU per request by part: load generator, nginx, the app's workers, postgres, other */
  cpuUs: Record<string, number>;
};

/** PM2 apps of the bench and the part their processes count for. */
const APP_PARTS: Record<string, string> = { web: 'app', baseline: 'app', 'express-floor': 'app', proxy: 'nginx' };

/** Waits until `url` answers an API read: the bench's servers are up. */
const answering = (what: string, url: string) =>
  waitFor(what, async () => (await fetch(`${url}/api/logs/1`, { headers: authHeaders() })).status === 200);

/** The processes of each part, by the pid they descend from (for the CPU per request). */
async function parts(stack: Stack, postgres: TestPostgres, proxies: ChildProcess[]): Promise<Map<number, string>> {
  const [{ dir }] = await postgres.query<{ dir: string }>('sitelog', `SELECT setting AS dir FROM pg_settings WHERE name = 'data_directory'`) as [{ dir: string }];
  const postmaster = Number(fs.readFileSync(path.join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const roots = new Map<number, string>([[process.pid, 'load'], [postmaster, 'postgres'], ...proxies.map((p): [number, string] => [p.pid!, 'nginx'])]);
  for (const p of await listAll(stack.env)) {
    const part = APP_PARTS[p.name];
    if (part) roots.set(p.pid, part);
  }
  return roots;
}

/** nginx with sitelog's own site config in front of a reference server, so the proxy's share shows on its own. */
async function proxyFor(upstreamPort: number): Promise<{ url: string; child: ChildProcess; stop: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-bench-nginx-'));
  fs.chmodSync(dir, 0o755);
  const port = await freePort();
  const conf = renderStandalone(dir, { upstreams: [`127.0.0.1:${upstreamPort}`], listen: `127.0.0.1:${port}` });
  const child = spawn(findNginx() ?? 'nginx', ['-e', 'stderr', '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  await answering(`nginx in front of 127.0.0.1:${upstreamPort}`, url);
  return {
    url,
    child,
    async stop() {
      if (child.exitCode === null) {
        const exited = once(child, 'exit');
        child.kill('SIGQUIT'); // nginx's graceful stop, by the pid we started
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function load(url: string, endpoint: string, id: number): Promise<autocannon.Result> {
  return autocannon({ ...endpointRequest(url, endpoint, id), connections: CONNECTIONS, duration: DURATION_S });
}

/** Round tick steps for an axis from 0 to about `max`: 1, 2 or 5 × 10^n, about five of them. */
function ticks(max: number): number[] {
  const raw = max / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  return Array.from({ length: Math.ceil(max / step) + 1 }, (_, i) => i * step);
}

/**
 * req/s as bars on the left axis, p99 as red diamonds on the right axis, one group per endpoint, the
 * legend in rows under the plot: readable without the table.
 */
function chart(rows: Row[]): string {
  const endpoints = [...new Set(rows.map((r) => r.endpoint))];
  const setups = [...new Set(rows.map((r) => r.setup))];
  const colors = ['#6b7280', '#a3a3a3', '#d97706', '#2563eb', '#16a34a'];
  const [left, right, top, bottom] = [70, 890, 40, 290];
  const rpsTicks = ticks(Math.max(...rows.map((r) => r.rps)));
  const p99Ticks = ticks(Math.max(...rows.map((r) => r.p99)));
  const rpsY = (v: number) => bottom - (v / rpsTicks[rpsTicks.length - 1]!) * (bottom - top);
  const p99Y = (v: number) => bottom - (v / p99Ticks[p99Ticks.length - 1]!) * (bottom - top);
  const group = (right - left) / endpoints.length;
  const bar = (group - 40) / setups.length;
  const axes = [
    ...rpsTicks.map((t) => `<line x1="${left}" x2="${right}" y1="${rpsY(t)}" y2="${rpsY(t)}" stroke="#e5e7eb"/><text x="${left - 6}" y="${rpsY(t) + 4}" font-size="11" text-anchor="end">${t}</text>`),
    ...p99Ticks.map((t) => `<text x="${right + 6}" y="${p99Y(t) + 4}" font-size="11" fill="#dc2626">${t}</text>`),
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${bottom}" stroke="#374151"/><line x1="${right}" x2="${right}" y1="${top}" y2="${bottom}" stroke="#dc2626"/>`,
    `<text x="16" y="${(top + bottom) / 2}" font-size="12" transform="rotate(-90 16 ${(top + bottom) / 2})" text-anchor="middle">req/s (bars)</text>`,
    `<text x="950" y="${(top + bottom) / 2}" font-size="12" fill="#dc2626" transform="rotate(90 950 ${(top + bottom) / 2})" text-anchor="middle">p99 latency, ms (◆)</text>`,
  ];
  const bars = endpoints.flatMap((e, i) =>
    setups.map((s, j) => {
      const r = rows.find((x) => x.endpoint === e && x.setup === s)!;
      const x = left + i * group + 20 + j * bar;
      const cx = x + (bar - 4) / 2;
      const py = p99Y(r.p99);
      return `<rect x="${x}" y="${rpsY(r.rps)}" width="${bar - 4}" height="${bottom - rpsY(r.rps)}" fill="${colors[j]}"><title>${s}, ${e}: ${Math.round(r.rps)} req/s, p99 ${r.p99} ms</title></rect>
<text x="${cx}" y="${rpsY(r.rps) - 4}" font-size="10" text-anchor="middle">${Math.round(r.rps)}</text>
<path d="M${cx} ${py - 5} L${cx + 5} ${py} L${cx} ${py + 5} L${cx - 5} ${py} Z" fill="#dc2626" stroke="#fff"><title>p99 ${r.p99} ms</title></path>`;
    }),
  );
  const labels = endpoints.map((e, i) => `<text x="${left + i * group + group / 2}" y="${bottom + 18}" font-size="12" text-anchor="middle">${e}</text>`);
  const legend = setups.map((s, j) => {
    const [x, y] = [left + (j % 3) * 280, bottom + 42 + Math.floor(j / 3) * 20];
    return `<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${colors[j]}"/><text x="${x + 18}" y="${y}" font-size="12">${s}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 960 ${bottom + 90}" font-family="sans-serif">
<rect width="100%" height="100%" fill="#fff"/>
<text x="${left}" y="20" font-size="13">Throughput and p99 latency, ${CONNECTIONS} connections, ${DURATION_S} s per bar, 2 instances per setup</text>
${axes.join('\n')}
${bars.join('\n')}
${labels.join('\n')}
${legend.join('\n')}
</svg>`;
}

async function main(): Promise<void> {
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const postgres = await startPostgres();
  const proxies: Array<Awaited<ReturnType<typeof proxyFor>>> = [];
  const stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('sitelog'), proxy: true, env: { LOG_LEVEL: 'info' } });
  try {
    // the PM2 daemon is already up, as on a server: the figure is the app's start, not the daemon's
    await stack.pm2('ping');
    const started = Date.now();
    await stack.start();
    const readyAt = stack.webLogLines().filter((l) => /^instance \d+ ready$/.test(String(l['msg']))).map((l) => Date.parse(String(l['time'])));
    const startToReadyMs = Math.max(...readyAt) - started;
    log(`pm2 start → all ready: ${startToReadyMs} ms`);
    // Prometheus, as in production: GET /metrics through nginx every second for the whole run
    const scraper = startScraper(`http://127.0.0.1:${stack.proxyPort}/metrics`, { everyMs: 1_000, maxMs: 3 * 3_600_000 });
    await postgres.query(
      'sitelog',
      `INSERT INTO system_logs (stype, description, host) SELECT 'app', 'seed ' || g, 'bench' FROM generate_series(1, 10000) g`,
    );
    const [{ id }] = (await postgres.query<{ id: string }>('sitelog', 'SELECT max(id) AS id FROM system_logs')) as [{ id: string }];
    const retention = () => retentionPhase({ stack, postgres, url: `http://127.0.0.1:${stack.proxyPort}`, seconds: DURATION_S, log });
    if (RETENTION_ONLY) {
      await seed(postgres, ROWS);
      log(writeRetentionResults(OUT, await retention()));
      return;
    }

    /** A reference server (reference.js) under PM2 in cluster mode like web, and nginx in front of it. */
    const reference = async (name: string) => {
      const port = await freePort();
      await pm2(['start', path.join(__dirname, `${name}.js`), '-i', '2', '--name', name, '--wait-ready'], { ...stack.env, PORT: String(port) });
      const url = `http://127.0.0.1:${port}`;
      await answering(`${name} answering`, url);
      const proxy = await proxyFor(port);
      proxies.push(proxy);
      return { url, proxied: proxy.url };
    };
    const baseline = await reference('baseline');
    const floor = await reference('express-floor');
    const sitelogVia = `http://127.0.0.1:${stack.proxyPort}`;
    const setups: Array<[string, string]> = [
      ['baseline (node:http + pg)', baseline.url],
      ['baseline via nginx', baseline.proxied],
      ['Express floor via nginx', floor.proxied],
      ['sitelog direct', `http://127.0.0.1:${stack.port}`],
      ['sitelog via nginx', sitelogVia],
    ];
    const roots = await parts(stack, postgres, proxies.map((p) => p.child));
    const endpoints = ENDPOINTS;
    // warm-up: JIT, pools, nginx keepalive
    for (const [, url] of setups) await autocannon({ url: `${url}/api/logs/${id}`, headers: authHeaders(), connections: 16, duration: 2 });
    const rss = async () => (await stack.processes('web')).map((p) => Math.round(((p as unknown as { monit?: { memory: number } }).monit?.memory ?? 0) / 1048576));
    const rssWarm = await rss();

    const rows: Row[] = [];
    let sitelogRequests = 0;
    for (const endpoint of endpoints) {
      for (const [setup, url] of setups) {
        const before = cpuSnapshot(roots);
        const r = await load(url, endpoint, Number(id));
        const cpuUs = cpuPerRequest(before, cpuSnapshot(roots), r.requests.total);
        if (setup.startsWith('sitelog')) sitelogRequests += r.requests.total;
        rows.push({ setup, endpoint, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors, cpuUs });
        const cpu = Object.entries(cpuUs).map(([part, us]) => `${part} ${us}`).join(', ');
        log(`${setup.padEnd(26)} ${endpoint.padEnd(24)} ${Math.round(r.requests.average)} req/s p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms non2xx ${r.non2xx} | CPU µs/request: ${cpu}`);
      }
    }
    for (const row of rows) {
      const of = (setup: string) => rows.find((r) => r.endpoint === row.endpoint && r.setup === setup)!.rps;
      row.ratio = row.rps / of(setups[0]![0]);
      row.floorRatio = row.rps / of('Express floor via nginx');
    }
    const rssAfter = await rss();

    // memory over a long run: RSS after 100k and after 200k requests through nginx
    const soak = async () => {
      const r = await autocannon({ url: `${sitelogVia}/api/logs/${id}`, headers: authHeaders(), connections: CONNECTIONS, amount: SOAK_REQUESTS, timeout: 10 });
      log(`soak: ${r.requests.total} requests, ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
      return rss();
    };
    const rss100k = await soak();
    const rss200k = await soak();
    log(`RSS after 100k / 200k requests: ${rss100k.join(', ')} / ${rss200k.join(', ')} MB`);

    const reloadStarted = Date.now();
    await stack.pm2('reload', 'ecosystem.config.js');
    const reloadMs = Date.now() - reloadStarted;
    log(`pm2 reload of 2 instances: ${reloadMs} ms`);

    const explain: string[] = [];
    const scaleRows: ScaleRow[] = [];
    const db = new pg.Client({ connectionString: postgres.url('sitelog') });
    await db.connect();
    for (const step of [Math.floor(ROWS / 10), ROWS]) {
      const seeded = Date.now();
      await seed(postgres, step);
      log(`seeded ${step} rows in ${((Date.now() - seeded) / 1000).toFixed(1)} s`);
      for (const r of await scale(postgres, db, sitelogVia, step, explain)) {
        scaleRows.push(r);
        log(`${String(step).padStart(9)} rows  ${r.query.padEnd(26)} http median ${r.httpMedianMs.toFixed(1)} ms  server ${r.serverMs.toFixed(2)} ms  ${r.index}`);
      }
    }
    await db.end();

    const scrapes = await scraper.stop();
    const metricsScrapes = { total: scrapes.length, failed: scrapes.filter((s) => s.status !== 200).length, decreases: decreases(scrapes).length, slowestMs: Math.round(Math.max(0, ...scrapes.map((s) => s.ms))) };
    log(`GET /metrics every second: ${metricsScrapes.total} scrapes, ${metricsScrapes.failed} failed, host counter decreased ${metricsScrapes.decreases} times, slowest ${metricsScrapes.slowestMs} ms`);
    const webArgs = (await stack.processes('web'))[0]?.pm2_env as { node_args?: string[] } | undefined;
    const results = { date: new Date().toISOString(), webNodeArgs: webArgs?.node_args ?? [], connections: CONNECTIONS, durationSeconds: DURATION_S, startToReadyMs, reloadMs, rssWarmMb: rssWarm, rssAfterMb: rssAfter, rss100kMb: rss100k, rss200kMb: rss200k, sitelogRequests, metricsScrapes, rows, scale: scaleRows };
    fs.mkdirSync(OUT, { recursive: true });
    fs.writeFileSync(path.join(OUT, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    // every run is kept, for the medians of several (docs/measurements.md)
    fs.mkdirSync(path.join(OUT, 'runs'), { recursive: true });
    fs.writeFileSync(path.join(OUT, 'runs', `${results.date.replace(/[:.]/g, '-')}.json`), `${JSON.stringify(results)}\n`);
    const md = [
      `# sitelog bench (${results.date})`,
      '',
      `${CONNECTIONS} connections, ${DURATION_S} s per cell, 2 instances each, everything on loopback on this machine. sitelog's web: \`${results.webNodeArgs.join(' ')}\`.`,
      '',
      '| setup | endpoint | req/s | × baseline | × Express floor | p50 | p99 | non-2xx | CPU µs/request: app | nginx | postgres | load generator | other | total |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
      ...rows.map((r) => {
        const c = r.cpuUs;
        const total = Object.values(c).reduce((a, b) => a + b, 0);
        const cpu = [c['app'], c['nginx'], c['postgres'], c['load'], c['other']].map((us) => us ?? 0).join(' | ');
        return `| ${r.setup} | ${r.endpoint} | ${Math.round(r.rps)} | ${r.ratio!.toFixed(2)} | ${r.floorRatio!.toFixed(2)} | ${r.p50} ms | ${r.p99} ms | ${r.non2xx} | ${cpu} | ${total} |`;
      }),
      '',
      'CPU per request is read from /proc for the processes of each part (2 cores: at saturation req/s ≈ 2 s / total).',
      '',
      `- pm2 start → all instances ready (database up): ${startToReadyMs} ms`,
      `- pm2 reload of 2 instances: ${reloadMs} ms`,
      `- GET /metrics through nginx every second during the whole run: ${metricsScrapes.total} scrapes, ${metricsScrapes.failed} failed, the host's request counter decreased ${metricsScrapes.decreases} times, slowest ${metricsScrapes.slowestMs} ms`,
      `- RSS per web instance: ${rssWarm.join(', ')} MB after warm-up; ${rssAfter.join(', ')} MB after the ${sitelogRequests} requests above; ${rss100k.join(', ')} MB after ${SOAK_REQUESTS / 1000}k more through nginx; ${rss200k.join(', ')} MB after ${(2 * SOAK_REQUESTS) / 1000}k`,
      '',
      `## Scale: \`GET /api/logs\` through nginx as the log grows (EXPLAIN in explain.md)`,
      '',
      '| rows | query | HTTP median | HTTP p95 | server (plan + execute) | index used |',
      '|---|---|---|---|---|---|',
      ...scaleRows.map((r) => `| ${r.rows.toLocaleString('en')} | ${r.query} | ${r.httpMedianMs.toFixed(1)} ms | ${r.httpP95Ms.toFixed(1)} ms | ${r.serverMs.toFixed(2)} ms | ${r.index} |`),
      '',
      '![throughput and p99](chart.svg)',
      '',
    ].join('\n');
    fs.writeFileSync(path.join(OUT, 'results.md'), md);
    fs.writeFileSync(path.join(OUT, 'chart.svg'), chart(rows));
    fs.writeFileSync(path.join(OUT, 'explain.md'), `# EXPLAIN (ANALYZE, BUFFERS) of the scale run (${results.date})\n\n${explain.join('\n')}`);
    log(`\n${md}`);
    // last: it starts the web instances again with LOG_RETENTION_DAYS and removes most of the log
    log(writeRetentionResults(OUT, await retention()));
  } finally {
    for (const proxy of proxies) await proxy.stop();
    await stack.stop();
    await postgres.stop();
  }
}

void main();
