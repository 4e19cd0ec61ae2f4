import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { LineQueue } from '../src/logger.js';
import { logFiles, parseSize, rotationRenames } from '../src/ops/log-rotation.js';
import type { Pm2Process } from '../src/ops/pm2.js';

// The pure parts of log rotation (src/ops/log-rotation.ts) and the web's one-write-at-a-time queue
// (src/logger.ts); test/log-rotation.test.ts runs them for real under PM2.

describe('rotationRenames', () => {
  test('when 3 files are kept, then the oldest moves first and the current file becomes .1', () => {
    assert.deepEqual(rotationRenames('/l/web-out-0.log', 3), [
      ['/l/web-out-0.log.2', '/l/web-out-0.log.3'],
      ['/l/web-out-0.log.1', '/l/web-out-0.log.2'],
      ['/l/web-out-0.log', '/l/web-out-0.log.1'],
    ]);
  });
  test('when 1 file is kept, then the current file replaces .1', () => {
    assert.deepEqual(rotationRenames('/l/db-out.log', 1), [['/l/db-out.log', '/l/db-out.log.1']]);
  });
});

describe('parseSize', () => {
  for (const [text, bytes] of [['500K', 512_000], ['10M', 10_485_760], ['1.5G', 1_610_612_736], ['4096', 4096], ['64kb', 65_536]] as const) {
    test(`when the size is ${text}, then it is ${bytes} bytes`, () => assert.equal(parseSize(text), bytes));
  }
  test('when the size is not one, then it says so', () => assert.throws(() => parseSize('ten megs'), /not a size/));
});

describe('logFiles', () => {
  const proc = (out: string, err: string) => ({ pm2_env: { pm_out_log_path: out, pm_err_log_path: err } }) as unknown as Pm2Process;
  test('when processes share a file or log to /dev/null, then each real file is listed once', () => {
    assert.deepEqual(logFiles([proc('/l/web-out-0.log', '/l/web-error-0.log'), proc('/l/merged.log', '/l/merged.log'), proc('/dev/null', '/dev/null')]), [
      '/l/web-out-0.log',
      '/l/web-error-0.log',
      '/l/merged.log',
    ]);
  });
});

describe('LineQueue', () => {
  /** A stream whose writes complete only when the test says so, like a file PM2 appends to. */
  function slowStream() {
    const written: string[] = [];
    const pending: Array<() => void> = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        written.push(chunk.toString());
        pending.push(done);
      },
    });
    return { stream, written, completeOne: () => pending.shift()?.() };
  }

  test('when lines come faster than the stream takes them, then one write is under way at a time, and what waited goes next in one write, in order', async () => {
    const { stream, written, completeOne } = slowStream();
    const queue = new LineQueue(stream);
    for (const n of [1, 2, 3]) queue.write(`line ${n}\n`);
    assert.deepEqual(written, ['line 1\n'], 'the others wait for the first');
    completeOne();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(written, ['line 1\n', 'line 2\nline 3\n'], 'whole lines, together');
  });

  test('when a write is never completed, then the queue moves on after a second', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    // a hook that takes the text and never calls back (PM2's, while its file is not open yet)
    const written: string[] = [];
    const queue = new LineQueue({ write: (text: string) => written.push(text) > 0 } as unknown as NodeJS.WritableStream);
    queue.write('a\n');
    queue.write('b\n');
    t.mock.timers.tick(1_000);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(written, ['a\n', 'b\n']);
  });

  test('when flushed, then the callback runs once every queued line is written', async () => {
    const { stream, completeOne } = slowStream();
    const queue = new LineQueue(stream);
    queue.write('a\n');
    queue.write('b\n');
    let flushed = false;
    queue.flush(() => (flushed = true));
    completeOne();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flushed, false, 'b is still being written');
    completeOne();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(flushed, true);
  });
});
