import pino from 'pino';

export type Logger = pino.Logger;

/** One JSON line per event on stdout, which PM2 writes to its log files; every line names its process. */
export function createLogger(opts: { host: string; instance: number; level: string }): Logger {
  return pino({
    level: opts.level,
    base: { host: opts.host, instance: opts.instance, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.API_TOKEN', '*.ADMIN_PASSWORD'],
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
