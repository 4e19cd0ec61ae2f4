import pino from 'pino';

export type Logger = pino.Logger;

/** Lines held while a write is under way; past it, lines are dropped and counted (a log flood must not take the heap). */
const QUEUE_MAX_LINES = 50_000;
/** A write PM2 never completes (its stream not open yet after a reopen) is given up on after this. */
const WRITE_STUCK_MS = 1_000;

/**
 * Where pino's lines go: stdout, one write at a time. Under PM2 a worker's stdout is PM2's hook,
 * which appends to the instance's log file through a fs.WriteStream. When PM2 reopens that file
 * (`pm2 reloadLogs`, after the logrotate app renamed it) it destroys the stream: the write being
 * performed still lands, but the writes queued behind it are dropped. Queued here instead, they go
 * to the reopened file, so rotation loses no line. What waits is written in one go, whole lines
 * only, so no line is split between two files. (Its callback then reports ERR_STREAM_DESTROYED for
 * a write that landed.)
 */
export class LineQueue {
  private lines: string[] = [];
  private writing = false;
  private dropped = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly writeOne: (text: string, done: () => void) => void;

  constructor(stream: NodeJS.WritableStream = process.stdout) {
    // bound now: captureStdout() replaces process.stdout.write afterwards
    const write = stream.write.bind(stream) as (text: string, done: () => void) => boolean;
    this.writeOne = (text, done) => void write(text, done);
  }

  /** pino's destination API: one whole line per call. */
  write(line: string): boolean {
    if (this.lines.length >= QUEUE_MAX_LINES) {
      this.dropped += 1;
      return true;
    }
    this.lines.push(line);
    if (!this.writing) this.next();
    return true;
  }

  /** pino's `logger.flush(cb)`: `done` runs once the queue is empty (every line queued so far written). */
  flush(done: () => void): void {
    if (this.writing) this.waiting.push(done);
    else done();
  }

  private next(): void {
    if (this.dropped > 0) {
      this.lines.push(`${JSON.stringify({ level: 40, time: new Date().toISOString(), pid: process.pid, msg: `log queue full: ${this.dropped} lines dropped` })}\n`);
      this.dropped = 0;
    }
    if (this.lines.length === 0) {
      this.writing = false;
      for (const done of this.waiting.splice(0)) done();
      return;
    }
    const text = this.lines.join('');
    this.lines = [];
    this.writing = true;
    let finished = false;
    // a microtask, not a nested call: a stream that completes at once (PM2's hook when the logs go
    // to /dev/null) would otherwise nest one call per write
    const done = () => {
      if (finished) return;
      finished = true;
      clearTimeout(stuck);
      queueMicrotask(() => this.next());
    };
    const stuck = setTimeout(done, WRITE_STUCK_MS);
    stuck.unref();
    this.writeOne(text, done);
  }
}

/**
 * Whether stdout is a hook (PM2's, in a cluster worker) rather than the stream itself, as pino judges
 * it. Elsewhere (a pipe or a file) pino writes to fd 1 itself and flushes it at exit.
 */
const stdoutIsHooked = (): boolean => process.stdout.write !== (Object.getPrototypeOf(process.stdout) as NodeJS.WriteStream).write;

/** One JSON line per event on stdout, which PM2 writes to its log files; every line names its process. */
export function createLogger(opts: { host: string; instance: number; level: string }): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level,
    base: { host: opts.host, instance: opts.instance, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.API_TOKEN', '*.ADMIN_PASSWORD'],
  };
  return stdoutIsHooked() ? pino(options, new LineQueue()) : pino(options);
}

/**
 * Anything else written to this process's stdout (a library writing to stdout itself, PM2's own "Reloading
 * log..." after a reopen) becomes a pino line too: the log file stays one JSON object per line, and
 * every write goes through the logger's one-at-a-time queue, behind no other writer's. Call it once,
 * after the process's one logger exists: a logger made later would queue into this capture.
 */
export function captureStdout(logger: Logger): void {
  const capture = (chunk: string | Uint8Array, encodingOrDone?: unknown, done?: unknown): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    for (const line of text.split('\n')) if (line.trim() !== '') logger.info({ stdout: true }, line);
    const callback = (typeof encodingOrDone === 'function' ? encodingOrDone : done) as (() => void) | undefined;
    if (typeof callback === 'function') logger.flush(() => callback());
    return true;
  };
  process.stdout.write = capture;
}

/** Resolves once every line logged so far has been written (or after `timeoutMs`): before an exit. */
export function logsWritten(logger: Logger, timeoutMs = 1_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    logger.flush(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Resolves once everything written to `stream` before it has reached its destination (or after
 * `timeoutMs`). Under PM2 a worker's stdout and stderr are PM2's hooks, which append to the log files
 * asynchronously: a process that exits right after its last line (a fatal one, say) would lose it.
 */
export function flushed(stream: NodeJS.WriteStream, timeoutMs = 1_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    stream.write('', 'utf8', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
