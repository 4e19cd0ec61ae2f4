// A burst of the largest pages against one web instance: what a worker's RSS reaches. 250 entries of
// 10,000 control characters (6 bytes each in JSON), then 8 connections asking GET /api/logs?limit=200
// for 10 s, straight to the instance. Without PAGE_BYTES (src/logs/queries.ts) each answer was 12 MB.
// Run: node --import tsx bench/research/page-burst.ts
import fs from 'node:fs';
import autocannon from 'autocannon';
import { startPostgres } from '../../test/support/postgres.js';
import { authHeaders, Stack } from '../../test/support/stack.js';

const rssMb = (pid: number, field: 'VmRSS' | 'VmHWM') =>
  Math.round(Number(fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+)`))![1]) / 1024);

async function main(): Promise<void> {
  const postgres = await startPostgres();
  const stack = await Stack.create({ instances: 1, databaseUrl: postgres.url('sitelog'), proxy: false });
  try {
    await stack.start();
    await postgres.query('sitelog', `INSERT INTO system_logs (stype, description, host) SELECT 'error', repeat(chr(1), 10000), 'heavy' FROM generate_series(1, 250)`);
    const [web] = await stack.processes('web');
    const pid = web!.pid;
    const before = rssMb(pid, 'VmRSS');
    const r = await autocannon({ url: `http://127.0.0.1:${stack.port}/api/logs?limit=200&stype=error`, headers: authHeaders(), connections: 8, duration: 10, timeout: 30 });
    process.stdout.write(
      `${r.requests.total} pages, ${r.non2xx} non-2xx, ${r.errors} errors, ${Math.round(r.throughput.total / r.requests.total / 1024)} KB each; ` +
        `web RSS ${before} MB before, ${rssMb(pid, 'VmRSS')} MB after, peak ${rssMb(pid, 'VmHWM')} MB\n`,
    );
  } finally {
    await stack.stop();
    await postgres.stop();
  }
}
void main();
