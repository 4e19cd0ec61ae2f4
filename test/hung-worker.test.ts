import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WATCHDOG_BLOCKED_MS, WATCHDOG_CHECK_MS } from '../src/timeouts.js';
import { fatalLine, stalledAfterCheck } from '../src/watchdog.js';
import { startApp } from './support/app.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { authHeaders, Stack } from './support/stack.js';
import { percentile, startTraffic, type Sample } from './support/traffic.js';
import { waitFor } from './support/wait.js';

// Issue #13, "hung workers are replaced": the watchdog thread (src/watchdog.ts) kills a web process
// whose event loop stays blocked, PM2 restarts it, and nginx's retries keep clients from noticing.

/** What issue #13 allows between a worker's loop blocking and its replacement being online. */
const REPLACED_WITHIN_MS = 10_000;
const ROOT = path.resolve(__dirname, '..');

describe('the watchdog rule', () => {
  test('when a check sees a new heartbeat, then the stall starts again from 0', () => {
    assert.equal(stalledAfterCheck(4_000, true, 500, 500), 0);
  });

  test('when checks see no heartbeat, then the stall grows by the time between them', () => {
    assert.equal(stalledAfterCheck(0, false, 500, 500), 500);
    assert.equal(stalledAfterCheck(4_600, false, 510, 500), 5_110);
  });

  test('when the whole process was suspended between two checks, then that check adds at most two checks', () => {
    assert.equal(stalledAfterCheck(0, false, 60_000, 500), 1_000);
  });

  test('when the line is written, then it is one pino line at level fatal naming the process', () => {
    const line = fatalLine({ host: 'h', instance: 3, pid: 42 }, 5_012, new Date('2026-11-29T04:00:00Z'));
    assert.ok(line.endsWith('}\n'));
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.deepEqual(
      { level: parsed['level'], time: parsed['time'], host: parsed['host'], instance: parsed['instance'], pid: parsed['pid'], event: parsed['event'] },
      { level: 60, time: '2026-11-29T04:00:00.000Z', host: 'h', instance: 3, pid: 42, event: 'event_loop_blocked' },
    );
    assert.match(String(parsed['msg']), /blocked for 5012 ms/);
  });
});

type Ended = { code: number | null; signal: string | null; ms: number; disconnectedBeforeExitMs: number | undefined };

/**
 * A node process that arms the built watchdog, then runs `body` (JavaScript, after 200 ms). It has an
 * IPC channel to this process, as a cluster worker has to its master.
 */
async function armedProcess(body: string, logFile: string): Promise<Ended> {
  const script = `
    const { armWatchdog } = require(${JSON.stringify(path.join(ROOT, 'dist', 'watchdog.js'))});
    const logger = { warn() {}, error(o, m) { process.stderr.write(m + '\\n'); } };
    armWatchdog(logger, { logFile: ${JSON.stringify(logFile)}, base: { host: 'h', instance: 0, pid: process.pid } });
    setTimeout(() => { ${body} }, 200);`;
  const started = performance.now();
  // a watchdog that never fires must fail the test, not leave a process spinning
  const child = spawn(process.execPath, ['-e', script], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], timeout: 30_000 });
  let disconnectedAt: number | undefined;
  child.once('disconnect', () => (disconnectedAt = performance.now()));
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  const exitedAt = performance.now();
  return { code, signal, ms: exitedAt - started, disconnectedBeforeExitMs: disconnectedAt && exitedAt - disconnectedAt };
}

describe('the watchdog thread', { timeout: 60_000 }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-watchdog-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('when the loop never yields, then the process leaves its master, is killed with SIGKILL past the bound, and the fatal line is in its log', async () => {
    const logFile = path.join(dir, 'blocked.log');
    const result = await armedProcess('for (;;);', logFile);
    assert.equal(result.signal, 'SIGKILL');
    // the master saw the disconnect first: it hands the dying process no new connection
    assert.ok((result.disconnectedBeforeExitMs ?? 0) >= 100, `disconnected ${result.disconnectedBeforeExitMs} ms before the exit`);
    assert.ok(result.ms >= WATCHDOG_BLOCKED_MS, `killed after ${result.ms} ms`);
    assert.ok(result.ms < WATCHDOG_BLOCKED_MS + 3 * WATCHDOG_CHECK_MS + 1_000, `killed after ${result.ms} ms`);
    const lines = fs.readFileSync(logFile, 'utf8').trimEnd().split('\n');
    assert.equal(lines.length, 1);
    assert.equal((JSON.parse(lines[0]!) as { level: number }).level, 60);
  });

  test('when the loop is blocked often but each time for less than the bound, then the process lives', async () => {
    const logFile = path.join(dir, 'busy.log');
    // four 1.5 s blocks, a turn of the loop between them: 6 s of stalls in all, none of them reaching the 3 s bound
    const body = `let left = 4; const block = () => { const end = Date.now() + 1500; while (Date.now() < end); if (--left > 0) setTimeout(block, 20); else process.exit(0); }; block();`;
    const result = await armedProcess(body, logFile);
    assert.deepEqual([result.code, result.signal], [0, null]);
    assert.equal(fs.existsSync(logFile), false);
  });
});

describe('the test route', { timeout: 120_000 }, () => {
  let postgres: TestPostgres;
  before(async () => {
    postgres = await startPostgres();
  });
  after(async () => {
    await postgres?.stop();
  });

  test('when SITELOG_TEST_ROUTES is unset, then POST /_test/block answers 404 and blocks nothing', async () => {
    const app = await startApp(postgres.url('sitelog'));
    try {
      const res = await fetch(`${app.base}/_test/block`, {
        method: 'POST',
        headers: authHeaders({ 'content-type': 'application/json' }),
        body: JSON.stringify({ ms: 1 }),
      });
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SITELOG_NOT_FOUND');
    } finally {
      await app.stop();
    }
  });

  test('when the duration is missing, not an integer, out of bounds, or the token is wrong, then 400 or 401 and nothing blocks', async () => {
    const app = await startApp(postgres.url('sitelog'), { SITELOG_TEST_ROUTES: '1' });
    try {
      const block = (body: string, headers = authHeaders({ 'content-type': 'application/json' })) =>
        fetch(`${app.base}/_test/block`, { method: 'POST', headers, body }).then((r) => r.status);
      for (const body of ['{}', '{"ms":"5"}', '{"ms":1.5}', '{"ms":0}', '{"ms":-1}', '{"ms":60001}', '{"ms":1e308}', '{"ms":5,"x":1}', '[]', 'null', '{"ms":']) {
        assert.equal(await block(body), 400, body);
      }
      assert.equal(await block('{"ms":5}', { 'content-type': 'application/json' }), 401);
      // the loop turned: this process (the app runs in it) answers at once
      assert.equal((await fetch(`${app.base}/healthz`)).status, 200);
    } finally {
      await app.stop();
    }
  });
});

type Start = { host: string; entries: Array<{ instance: number; pid: number; event: string }> };

/** What happened while one worker was blocked under load, measured once for the tests below. */
type Run = {
  victim: { instance: number; pid: number; pmId: number };
  before: Map<number, number>;
  after: Map<number, number>;
  /** From the block route's answer to PM2 listing the instance online under a new pid. */
  replacedMs: number;
  /** From the block route's answer to the watchdog's fatal line. */
  killedMs: number;
  samples: Sample[];
  duplicates: number;
  starts: Start[];
  logFiles: Map<string, string>;
};

/** When the watchdog of process `pid` wrote its fatal line (epoch ms). */
function killedAt(stack: Stack, pid: number): number {
  const line = stack.webLogLines().find((l) => l['event'] === 'event_loop_blocked' && l['pid'] === pid);
  assert.ok(line, `no fatal line from pid ${pid}`);
  return Date.parse(String(line['time']));
}

async function pids(stack: Stack): Promise<Map<number, number>> {
  return new Map([...(await stack.web())].map(([instance, p]) => [instance, p.pid]));
}

async function startHistory(stack: Stack): Promise<Start[]> {
  const res = await fetch(stack.url(`/api/starts?host=${encodeURIComponent(stack.host)}`), { headers: authHeaders() });
  assert.equal(res.status, 200);
  return ((await res.json()) as { items: Start[] }).items;
}

/** Two instances behind nginx, load through it, one worker blocked for 30 s: six times the bound. */
async function blockOneWorkerUnderLoad(postgres: TestPostgres, stack: Stack): Promise<Run> {
  await stack.start();
  await waitFor('the first start in the startup log', async () => ((await startHistory(stack))[0]?.entries.length ?? 0) >= 2);
  const before = await pids(stack);
  const traffic = startTraffic(stack.url(''), { connections: 8, maxMs: 90_000 });
  let victim: Run['victim'];
  let replacedMs: number;
  let killedMs: number;
  try {
    await waitFor('traffic flowing', () => traffic.samples.length >= 100);
    const res = await fetch(stack.url('/_test/block'), {
      method: 'POST',
      headers: authHeaders({ 'content-type': 'application/json' }),
      body: JSON.stringify({ ms: 30_000 }),
    });
    assert.equal(res.status, 202);
    const blockedAt = performance.now();
    const blockedAtClock = Date.now();
    const blocked = (await res.json()) as { pid: number; instance: number };
    victim = { ...blocked, pmId: (await stack.web()).get(blocked.instance)!.pm_id };
    await waitFor(
      `instance ${blocked.instance} online under a new pid`,
      async () => {
        const now = (await stack.web()).get(blocked.instance);
        return now !== undefined && now.pid !== blocked.pid;
      },
      { timeoutMs: 20_000, everyMs: 50 },
    );
    replacedMs = performance.now() - blockedAt;
    killedMs = killedAt(stack, blocked.pid) - blockedAtClock;
    // the load goes on until the new instance has written its entry, and a while after
    await waitFor('its "restarted" entry', async () =>
      (await startHistory(stack))[0]?.entries.some((e) => e.event === 'restarted' && e.instance === blocked.instance),
    );
    const servedAt = traffic.samples.length;
    await waitFor('more load after the replacement', () => traffic.samples.length >= servedAt + 300, { timeoutMs: 30_000 });
  } finally {
    await traffic.stop();
  }
  const [{ n: duplicates }] = (await postgres.query<{ n: number }>(
    'sitelog',
    `SELECT count(*)::int AS n FROM (SELECT description FROM system_logs WHERE description LIKE 'traffic %' GROUP BY description HAVING count(*) > 1) d`,
  )) as [{ n: number }];
  return {
    victim,
    before,
    after: await pids(stack),
    replacedMs,
    killedMs,
    samples: traffic.samples,
    duplicates,
    starts: await startHistory(stack),
    logFiles: new Map(fs.readdirSync(stack.logDir).map((f) => [f, fs.readFileSync(path.join(stack.logDir, f), 'utf8')])),
  };
}

describe('when one worker\'s event loop stays blocked for 30 s under load through nginx', { timeout: 240_000 }, () => {
  let postgres: TestPostgres;
  let stack: Stack;
  let run: Run;
  before(async () => {
    postgres = await startPostgres();
    stack = await Stack.create({ instances: 2, proxy: true, databaseUrl: postgres.url('sitelog'), env: { SITELOG_TEST_ROUTES: '1' } });
    try {
      run = await blockOneWorkerUnderLoad(postgres, stack);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${await stack.diagnosis()}`, { cause: err });
    }
  });
  after(async () => {
    await stack?.stop();
    await postgres?.stop();
  });

  test('then PM2 lists the instance under a new pid within 10 s, and the other instance keeps its pid', (t) => {
    t.diagnostic(`the watchdog fired ${run.killedMs} ms after the block began; PM2 listed the new pid after ${Math.round(run.replacedMs)} ms`);
    assert.ok(run.replacedMs <= REPLACED_WITHIN_MS, `replaced after ${Math.round(run.replacedMs)} ms`);
    assert.notEqual(run.after.get(run.victim.instance), run.victim.pid);
    const others = (m: Map<number, number>) => [...m].filter(([instance]) => instance !== run.victim.instance);
    assert.deepEqual(others(run.after), others(run.before));
  });

  test('then the startup log has one "restarted" entry for that instance, under its new pid, and no new start', () => {
    assert.equal(run.starts.length, 1, 'one start of the host: no new "server started"');
    const entries = run.starts[0]!.entries.map((e) => [e.instance, e.event, e.pid]);
    const restarted = entries.filter(([, event]) => event === 'restarted');
    assert.deepEqual(restarted, [[run.victim.instance, 'restarted', run.after.get(run.victim.instance)]]);
    assert.equal(entries.length, 3);
  });

  test("then the watchdog's fatal line is in that instance's PM2 log, and nowhere else", () => {
    const withLine = [...run.logFiles].filter(([, text]) => text.includes('"event":"event_loop_blocked"'));
    assert.deepEqual(
      withLine.map(([file]) => file),
      [`web-out-${run.victim.pmId}.log`],
    );
    const line = withLine[0]![1].split('\n').find((l) => l.includes('"event":"event_loop_blocked"'))!;
    const parsed = JSON.parse(line) as { level: number; pid: number; instance: number; stalledMs: number };
    assert.deepEqual([parsed.level, parsed.pid, parsed.instance], [60, run.victim.pid, run.victim.instance]);
    assert.ok(parsed.stalledMs >= WATCHDOG_BLOCKED_MS);
  });

  test('then no request of the load failed, and no write was stored twice', (t) => {
    const slow = run.samples.filter((s) => s.ms > 1_000).map((s) => Math.round(s.ms));
    t.diagnostic(
      `${run.samples.length} requests; p50 ${Math.round(percentile(run.samples.map((s) => s.ms), 50))} ms; ` +
        `over 1 s: ${slow.length} (${slow.sort((a, b) => b - a).join(', ')} ms)`,
    );
    const failed = run.samples.filter((s) => s.status !== 200 && s.status !== 201).map((s) => `${s.kind} ${s.status} ${s.code ?? ''}`);
    assert.deepEqual(failed, []);
    assert.equal(run.duplicates, 0);
  });
});

describe('when pm2 reload replaces every instance under load', { timeout: 180_000 }, () => {
  let postgres: TestPostgres;
  before(async () => {
    postgres = await startPostgres();
  });
  after(async () => {
    await postgres?.stop();
  });

  test('then each old process shuts down gracefully and no watchdog fires', async () => {
    const stack = await Stack.create({ instances: 2, proxy: true, databaseUrl: postgres.url('sitelog') });
    try {
      await stack.start();
      const before = await pids(stack);
      const traffic = startTraffic(stack.url(''), { connections: 8, maxMs: 60_000 });
      try {
        await waitFor('traffic flowing', () => traffic.samples.length >= 100);
        await stack.pm2('reload', 'ecosystem.config.js');
        await stack.waitReady(2);
      } finally {
        await traffic.stop();
      }
      const lines = stack.webLogLines();
      // the graceful shutdown's last line: every step ran, none was cut short
      const stopped = lines.filter((l) => l['msg'] === 'stopped').map((l) => l['pid']);
      assert.deepEqual(stopped.sort(), [...before.values()].sort());
      assert.deepEqual(lines.filter((l) => l['event'] === 'event_loop_blocked'), []);
    } finally {
      await stack.stop();
    }
  });
});
