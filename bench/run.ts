import fs from 'node:fs';
import path from 'node:path';
import autocannon from 'autocannon';
import { pm2 } from '../src/ops/pm2.js';
import { freePort } from '../test/support/ports.js';
import { startPostgres } from '../test/support/postgres.js';
import { API_TOKEN, Stack } from '../test/support/stack.js';
import { waitFor } from '../test/support/wait.js';

// `npm run bench`: the baseline (node:http + pg under PM2 cluster), sitelog direct and sitelog
// through nginx, side by side in one run, everything on loopback with its own ports and PM2_HOME.

const OUT = path.join(__dirname, 'results');
const CONNECTIONS = 64;
const DURATION_S = Number(process.env['BENCH_SECONDS'] ?? 6);

type Row = { setup: string; endpoint: string; rps: number; p50: number; p99: number; non2xx: number; errors: number; ratio?: number };

async function load(url: string, endpoint: string, id: number): Promise<autocannon.Result> {
  const auth = { authorization: `Bearer ${API_TOKEN}` };
  const opts: autocannon.Options =
    endpoint === 'POST /api/logs'
      ? { url: `${url}/api/logs`, method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ stype: 'app', description: 'bench write' }) }
      : endpoint === 'GET /api/logs/:id'
        ? { url: `${url}/api/logs/${id}`, headers: auth }
        : { url: `${url}/api/logs?limit=20`, headers: auth };
  return autocannon({ ...opts, connections: CONNECTIONS, duration: DURATION_S });
}

function chart(rows: Row[]): string {
  const endpoints = [...new Set(rows.map((r) => r.endpoint))];
  const setups = [...new Set(rows.map((r) => r.setup))];
  const colors = ['#6b7280', '#2563eb', '#16a34a'];
  const max = Math.max(...rows.map((r) => r.rps));
  const maxP99 = Math.max(...rows.map((r) => r.p99));
  const w = 720;
  const h = 260;
  const group = w / endpoints.length;
  const bar = (group - 40) / setups.length;
  const bars = endpoints.flatMap((e, i) =>
    setups.map((s, j) => {
      const r = rows.find((x) => x.endpoint === e && x.setup === s)!;
      const bh = (r.rps / max) * 180;
      const x = i * group + 20 + j * bar;
      const p99y = 210 - (r.p99 / maxP99) * 180;
      return `<rect x="${x}" y="${210 - bh}" width="${bar - 4}" height="${bh}" fill="${colors[j]}"><title>${s} ${e}: ${Math.round(r.rps)} req/s, p99 ${r.p99} ms</title></rect>
<text x="${x + (bar - 4) / 2}" y="${205 - bh}" font-size="10" text-anchor="middle">${Math.round(r.rps)}</text>
<circle cx="${x + (bar - 4) / 2}" cy="${p99y}" r="4" fill="#dc2626"><title>p99 ${r.p99} ms</title></circle>`;
    }),
  );
  const labels = endpoints.map((e, i) => `<text x="${i * group + group / 2}" y="228" font-size="12" text-anchor="middle">${e}</text>`);
  const legend = setups.map((s, j) => `<rect x="${20 + j * 170}" y="240" width="12" height="12" fill="${colors[j]}"/><text x="${36 + j * 170}" y="250" font-size="12">${s}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}" font-family="sans-serif">
<text x="10" y="16" font-size="13">req/s (bars) and p99 latency (red dots, scaled to ${maxP99} ms), ${CONNECTIONS} connections, ${DURATION_S} s each</text>
${bars.join('\n')}${labels.join('')}${legend.join('')}<circle cx="${20 + setups.length * 170}" cy="246" r="4" fill="#dc2626"/><text x="${28 + setups.length * 170}" y="250" font-size="12">p99</text></svg>`;
}

async function main(): Promise<void> {
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const postgres = await startPostgres();
  const stack = await Stack.create({ instances: 2, databaseUrl: postgres.url('sitelog'), proxy: true, env: { LOG_LEVEL: 'info' } });
  try {
    const started = Date.now();
    await stack.start();
    const readyAt = stack.webLogLines().filter((l) => /^instance \d+ ready$/.test(String(l['msg']))).map((l) => Date.parse(String(l['time'])));
    const startToReadyMs = Math.max(...readyAt) - started;
    log(`pm2 start → all ready: ${startToReadyMs} ms`);
    await postgres.query(
      'sitelog',
      `INSERT INTO system_logs (stype, description, host) SELECT 'app', 'seed ' || g, 'bench' FROM generate_series(1, 10000) g`,
    );
    const [{ id }] = (await postgres.query<{ id: string }>('sitelog', 'SELECT max(id) AS id FROM system_logs')) as [{ id: string }];

    const basePort = await freePort();
    await pm2(['start', path.join(__dirname, 'baseline.js'), '-i', '2', '--name', 'baseline', '--wait-ready'], {
      ...stack.env,
      PORT: String(basePort),
    });
    await waitFor('baseline answering', async () => (await fetch(`http://127.0.0.1:${basePort}/api/logs/1`, { headers: { authorization: `Bearer ${API_TOKEN}` } })).status === 200);

    const setups: Array<[string, string]> = [
      ['baseline (node:http + pg)', `http://127.0.0.1:${basePort}`],
      ['sitelog direct', `http://127.0.0.1:${stack.port}`],
      ['sitelog via nginx', `http://127.0.0.1:${stack.proxyPort}`],
    ];
    const endpoints = ['GET /api/logs/:id', 'GET /api/logs?limit=20', 'POST /api/logs'];
    // warm-up: JIT, pools, nginx keepalive
    for (const [, url] of setups) await autocannon({ url: `${url}/api/logs/${id}`, headers: { authorization: `Bearer ${API_TOKEN}` }, connections: 16, duration: 2 });
    const rss = async () => (await stack.processes('web')).map((p) => Math.round(((p as unknown as { monit?: { memory: number } }).monit?.memory ?? 0) / 1048576));
    const rssWarm = await rss();

    const rows: Row[] = [];
    let sitelogRequests = 0;
    for (const endpoint of endpoints) {
      for (const [setup, url] of setups) {
        const r = await load(url, endpoint, Number(id));
        if (setup !== setups[0]![0]) sitelogRequests += r.requests.total;
        rows.push({ setup, endpoint, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors });
        log(`${setup.padEnd(26)} ${endpoint.padEnd(24)} ${Math.round(r.requests.average)} req/s p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms non2xx ${r.non2xx}`);
      }
    }
    for (const row of rows) row.ratio = row.rps / rows.find((r) => r.endpoint === row.endpoint && r.setup === setups[0]![0])!.rps;
    const rssAfter = await rss();

    const reloadStarted = Date.now();
    await stack.pm2('reload', 'ecosystem.config.js');
    const reloadMs = Date.now() - reloadStarted;
    log(`pm2 reload of 2 instances: ${reloadMs} ms`);

    const results = { date: new Date().toISOString(), connections: CONNECTIONS, durationSeconds: DURATION_S, startToReadyMs, reloadMs, rssWarmMb: rssWarm, rssAfterMb: rssAfter, sitelogRequests, rows };
    fs.mkdirSync(OUT, { recursive: true });
    fs.writeFileSync(path.join(OUT, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    const md = [
      `# sitelog bench (${results.date})`,
      '',
      `${CONNECTIONS} connections, ${DURATION_S} s per cell, 2 instances each, everything on loopback on this machine.`,
      '',
      '| setup | endpoint | req/s | × baseline | p50 | p99 | non-2xx |',
      '|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.setup} | ${r.endpoint} | ${Math.round(r.rps)} | ${r.ratio!.toFixed(2)} | ${r.p50} ms | ${r.p99} ms | ${r.non2xx} |`),
      '',
      `- pm2 start → all instances ready (database up): ${startToReadyMs} ms`,
      `- pm2 reload of 2 instances: ${reloadMs} ms`,
      `- RSS per web instance: ${rssWarm.join(', ')} MB after warm-up; ${rssAfter.join(', ')} MB after ${sitelogRequests} sitelog requests`,
      '',
      '![throughput and p99](chart.svg)',
      '',
    ].join('\n');
    fs.writeFileSync(path.join(OUT, 'results.md'), md);
    fs.writeFileSync(path.join(OUT, 'chart.svg'), chart(rows));
    log(`\n${md}`);
  } finally {
    await stack.stop();
    await postgres.stop();
  }
}

void main();
