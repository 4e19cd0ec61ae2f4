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
