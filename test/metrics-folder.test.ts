import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import client from 'prom-client';
import { highest, holdCounters, isGone, processFileName, type Metrics } from '../src/metrics/counters.js';
import { HostMetrics } from '../src/metrics/host.js';
import { Instruments } from '../src/metrics/instruments.js';
import { seriesValue } from './support/scraper.js';

// The host's sum over DATA_DIR/metrics (src/metrics/host.ts, counters.ts), on a folder of made-up
// files: processes that are gone, a corrupt file, a reused pid. test/metrics.test.ts runs it on PM2.

/** A pid no process has: one of a child that has exited. */
const deadPid = () => spawnSync('true').pid;

/** A registry's JSON with one counter at `n` requests. */
async function countedRequests(n: number): Promise<Metrics> {
  const registry = new client.Registry();
  new client.Counter({ name: 'sitelog_http_requests_total', help: 'h', labelNames: ['method', 'route', 'status'], registers: [registry] }).inc(
    { method: 'GET', route: '/healthz', status: '200' },
    n,
  );
  return (await registry.getMetricsAsJSON());
}

function processFile(dir: string, pid: number, started: number, content: { instance: number; final: boolean; metrics: Metrics }): string {
  const name = processFileName(pid, started);
  fs.writeFileSync(path.join(dir, name), JSON.stringify({ app: 'web', pid, socket: '\0nobody', writtenAt: started, ...content }));
  return name;
}

const healthz = { method: 'GET', route: '/healthz', status: '200' };

test('when processes are gone and a file is corrupt, then the scrape sums the gone ones, skips the corrupt one, and a fold keeps the sum while deleting their files', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-metrics-'));
  const instruments = new Instruments(() => ({ size: 0, using: 0, waiting: 0 }));
  const host = new HostMetrics(dir, { app: 'web', instance: 0, pid: process.pid }, instruments, pino({ level: 'silent' }));
  try {
    const gone = [
      processFile(dir, deadPid(), 1_000, { instance: 0, final: true, metrics: await countedRequests(3) }),
      processFile(dir, deadPid(), 2_000, { instance: 0, final: false, metrics: await countedRequests(4) }),
      processFile(dir, deadPid(), 3_000, { instance: 3, final: false, metrics: await countedRequests(5) }),
    ];
    fs.writeFileSync(path.join(dir, processFileName(deadPid(), 4_000)), '{"cut short');
    await host.start();
    const before = await host.scrape();
    assert.equal(seriesValue(before, 'sitelog_http_requests_total', healthz), 12);
    assert.equal(seriesValue(before, 'sitelog_http_requests_total', { ...healthz, instance: '0' }), 7);
    assert.equal(seriesValue(before, 'sitelog_http_requests_total', { ...healthz, instance: '3' }), 5, 'an instance id a scale-down removed');
    // host.start() folded them: their files are gone, their counts are in the retired files
    assert.deepEqual(gone.filter((name) => fs.existsSync(path.join(dir, name))), []);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('r-')).sort(), ['r-web-0-1.json', 'r-web-3-1.json']);
    const after = await host.scrape();
    assert.equal(seriesValue(after, 'sitelog_http_requests_total', healthz), 12);
  } finally {
    instruments.stop();
    await host.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('when a pid is reused, then the older file of that pid is taken for gone', () => {
  const names = [processFileName(42, 1_000), processFileName(42, 2_000)];
  const running = () => true;
  assert.equal(isGone(names[0]!, { final: false, pid: 42 }, names, running), true);
  assert.equal(isGone(names[1]!, { final: false, pid: 42 }, names, running), false);
  assert.equal(isGone(names[1]!, { final: true, pid: 42 }, names, running), true, 'a final file');
  assert.equal(isGone(names[1]!, { final: false, pid: 42 }, names, () => false), true, 'no such process');
});

test('when counters fall below what was reported, then they are held there, and reports merge at their highest', async () => {
  const reported = holdCounters(await countedRequests(10), {}).now;
  const { held, now } = holdCounters(await countedRequests(7), reported);
  assert.equal(held[0]!.values[0]!.value, 10, 'held at the reported 10');
  assert.deepEqual(now, reported);
  assert.equal(holdCounters(await countedRequests(15), reported).held[0]!.values[0]!.value, 15, 'past it, counted again');
  assert.deepEqual(highest({ a: 1, b: 5 }, { a: 3, c: 2 }), { a: 3, b: 5, c: 2 });
});
