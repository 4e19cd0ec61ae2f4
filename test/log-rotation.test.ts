import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { Pm2Process } from '../src/ops/pm2.js';
import { authHeaders, Stack, uncleanLines } from './support/stack.js';
import { waitFor } from './support/wait.js';

// Issue #13, "Log files rotate": the logrotate app renames a PM2 log file past its size and has PM2
// reopen it (src/ops/log-rotation.ts). Four web instances log numbered lines in bursts, as fast as
// they can, against a tiny max size; then every instance's file has rotated, every line of every
// file (rotated or current) is whole pino JSON, and each instance's numbers run 1..N across its
// files, in order, none missing and none twice.

const INSTANCES = 4;
const ROTATIONS = 3;
const MAX_BYTES = 64 * 1024;

/** An instance's log files, oldest first: web-out-K.log.N … web-out-K.log.1, web-out-K.log. */
function filesOldestFirst(current: string): string[] {
  const rotated: string[] = [];
  for (let n = 1; fs.existsSync(`${current}.${n}`); n += 1) rotated.unshift(`${current}.${n}`);
  return [...rotated, current];
}

/** Every line of `file` parsed; a line that is cut or not JSON fails with its file and number. */
function jsonLines(file: string): Array<Record<string, unknown>> {
  const text = fs.readFileSync(file, 'utf8');
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), `${file} ends in the middle of a line`);
  return text
    .slice(0, -1)
    .split('\n')
    .map((line, i) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        assert.fail(`${file}:${i + 1} is not a whole JSON line: ${line.slice(0, 120)}`);
      }
    });
}

const numbersIn = (lines: Array<Record<string, unknown>>): number[] => lines.flatMap((l) => (typeof l['logSeq'] === 'number' ? [l['logSeq']] : []));

/** Where `numbers` departs from 1..last: each number out of place, with the one expected there. */
function sequenceGaps(numbers: number[], last: number): string[] {
  const gaps: string[] = [];
  let expected = 1;
  for (const n of numbers) {
    if (n !== expected) gaps.push(`${n} where ${expected} was expected`);
    expected = n + 1;
  }
  if (expected !== last + 1) gaps.push(`ends at ${expected - 1}, not ${last}`);
  return gaps.slice(0, 10);
}

const outFile = (p: Pm2Process): string => p.pm2_env.pm_out_log_path!;

describe('log rotation', () => {
  let stack: Stack;
  // the last number each process said it logged
  const lastSeq = new Map<number, number>();
  /** One burst of numbered lines, logged by whichever instance PM2's cluster master hands it to. */
  const burst = async () => {
    const res = await fetch(stack.url('/_test/log-lines'), {
      method: 'POST',
      headers: authHeaders({ 'content-type': 'application/json' }),
      body: JSON.stringify({ count: 300, pad: 200 }),
    });
    assert.equal(res.status, 200);
    const { pid, lastSeq: seq } = (await res.json()) as { pid: number; lastSeq: number };
    lastSeq.set(pid, Math.max(seq, lastSeq.get(pid) ?? 0));
  };

  before(async () => {
    stack = await Stack.create({
      instances: INSTANCES,
      env: { SITELOG_TEST_ROUTES: '1', LOG_ROTATE_MAX_SIZE: String(MAX_BYTES), LOG_ROTATE_KEEP: '1000', LOG_ROTATE_CHECK_SECONDS: '0.2' },
    });
    await stack.start();
  });
  after(() => stack.stop());

  test('when the stack starts, then the logrotate app is online and says nothing on stderr', async () => {
    const [logrotate] = await waitFor('logrotate online', async () => {
      const found = await stack.processes('logrotate');
      return found[0]?.pm2_env.status === 'online' ? found : undefined;
    });
    assert.ok(logrotate);
    assert.equal(fs.readFileSync(logrotate.pm2_env.pm_err_log_path!, 'utf8'), '');
    assert.deepEqual(uncleanLines(stack.logText()), []);
  });

  test(`when ${INSTANCES} instances log fast past a tiny max size, then every file rotates, every line stays whole JSON and none is lost`, async () => {
    const web = [...(await stack.web()).values()];
    assert.equal(web.length, INSTANCES);
    let bursts = 0;
    await waitFor(
      `every instance's file rotated ${ROTATIONS} times`,
      async () => {
        await Promise.all(Array.from({ length: 2 * INSTANCES }, burst));
        bursts += 2 * INSTANCES;
        return web.every((p) => fs.existsSync(`${outFile(p)}.${ROTATIONS}`));
      },
      { timeoutMs: 60_000, everyMs: 50 },
    );
    // The files are read once they are still: the last lines of each process have reached them (PM2
    // appends asynchronously), and no current file is due for a rotation that would move it mid-read
    // (a renamed one that PM2 has not reopened yet does not exist).
    const settled = (p: Pm2Process) =>
      fs.existsSync(outFile(p)) &&
      fs.statSync(outFile(p)).size < MAX_BYTES &&
      numbersIn(filesOldestFirst(outFile(p)).flatMap(jsonLines)).includes(lastSeq.get(p.pid)!);
    await waitFor('the last numbers in the files, and no file due for rotation', () => web.every(settled));

    for (const p of web) {
      const files = filesOldestFirst(outFile(p));
      const lines = files.flatMap(jsonLines);
      assert.ok(files.length > ROTATIONS, `${outFile(p)} rotated ${files.length - 1} times`);
      assert.ok(lines.every((l) => l['pid'] === p.pid), `${outFile(p)}: every line is its process's`);
      assert.deepEqual(sequenceGaps(numbersIn(lines), lastSeq.get(p.pid)!), [], `${outFile(p)}: 1..${lastSeq.get(p.pid)} in order across ${files.length} files`);
    }
    assert.equal((await stack.processes('web')).filter((p) => p.pm2_env.restart_time > 0).length, 0, 'no instance restarted');
    const lines = [...lastSeq.values()].reduce((a, b) => a + b, 0);
    const rotated = web.map((p) => filesOldestFirst(outFile(p)).length - 1);
    process.stdout.write(`# ${bursts} bursts, ${lines} lines; rotations per instance: ${rotated.join(', ')}\n`);
  });

  test('when web is reloaded (pm2 reload ecosystem.config.js), then logrotate runs on, untouched, and rotates the new instances\' files', async () => {
    const [before] = await stack.processes('logrotate');
    await stack.pm2('reload', 'ecosystem.config.js');
    await stack.waitReady(INSTANCES);
    const web = [...(await stack.web()).values()];
    const filesBefore = new Map(web.map((p) => [p.pid, filesOldestFirst(outFile(p)).length]));
    await waitFor(
      'a rotation of every instance\'s file after the reload',
      async () => {
        await Promise.all(Array.from({ length: 2 * INSTANCES }, burst));
        return web.every((p) => filesOldestFirst(outFile(p)).length > filesBefore.get(p.pid)!);
      },
      { timeoutMs: 60_000, everyMs: 50 },
    );
    const [after] = await stack.processes('logrotate');
    assert.ok(before && after);
    assert.equal(after.pid, before.pid, 'the same logrotate process');
    assert.equal(after.pm2_env.restart_time, 0);
    assert.equal(fs.readFileSync(after.pm2_env.pm_err_log_path!, 'utf8'), '', 'logrotate said nothing on stderr');
  });
});
