import inspector from 'node:inspector';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from './logger.js';
import { WATCHDOG_BLOCKED_MS, WATCHDOG_CHECK_MS } from './timeouts.js';

// A blocked event loop cannot watch itself: a thread of its own does. The main thread counts
// heartbeats into shared memory; the watchdog thread (watchdog-thread.ts) checks that they move, and
// when they have not moved for WATCHDOG_BLOCKED_MS it writes one fatal line, takes the process off the
// cluster master's round robin, and kills it with SIGKILL; PM2 restarts it. docs/watchdog.md: the
// numbers, and what clients see meanwhile.

/** The fields every log line of the process carries (src/logger.ts). */
export type LogBase = { host: string; instance: number; pid: number };

/** What the watchdog thread is given: copied, except the heartbeat buffer, which is shared. */
export type WatchdogData = {
  heartbeat: SharedArrayBuffer;
  blockedMs: number;
  checkMs: number;
  /** Where the fatal line goes: the instance's PM2 log file, or stderr outside PM2. */
  logFile: string | undefined;
  base: LogBase;
  /** This process's end of its IPC channel to the cluster master (PM2's daemon), when it has one. */
  ipcFd: number | undefined;
};

/**
 * How long the main thread has stood still after one more check. A check that saw no new heartbeat
 * adds the time since the previous check, but at most two checks' worth: when the whole process was
 * suspended (SIGSTOP, a paused VM), the watchdog stood still too, and on resume the main thread must
 * get its chance to beat before it is judged.
 */
export function stalledAfterCheck(stalledMs: number, beatSeen: boolean, sinceLastCheckMs: number, checkMs: number): number {
  return beatSeen ? 0 : stalledMs + Math.min(sinceLastCheckMs, 2 * checkMs);
}

/** The watchdog's one line, shaped like pino's (src/logger.ts): `pm2 logs` and `npm run logs` show it like the others. */
export function fatalLine(base: LogBase, stalledMs: number, at: Date): string {
  const msg = `event loop blocked for ${stalledMs} ms: the watchdog kills this process (SIGKILL) so that PM2 restarts it`;
  return `${JSON.stringify({ level: 60, time: at.toISOString(), ...base, event: 'event_loop_blocked', stalledMs, msg })}\n`;
}

/**
 * The thread holds a few numbers, but a V8 heap of its own: about 4 MB once Node has booted it, 8 MB
 * of the process's RSS (docs/watchdog.md). The limit only stops a leak; at 4 MB the thread could not
 * even boot. No execArgv: the process's --max-old-space-size is for the app's heap.
 */
const THREAD_OPTIONS = {
  name: 'sitelog-watchdog',
  execArgv: [],
  env: {},
  resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 1, codeRangeSizeMb: 2, stackSizeMb: 1 },
};

/**
 * Starts watching this process's event loop. Call it when the process is ready: the bound is chosen
 * for a serving process, not for module loading and migrations. A debugger paused at a breakpoint is
 * a blocked loop too, so with the inspector open there is no watchdog.
 */
export function armWatchdog(logger: Logger, opts: { logFile: string | undefined; base: LogBase }): void {
  if (inspector.url()) {
    logger.warn('the inspector is open: no watchdog, a blocked event loop is not killed');
    return;
  }
  const heartbeat = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  const beats = new Int32Array(heartbeat);
  // twice per check, so that a loop merely busy (a timer late by a few hundred ms) never misses one
  setInterval(() => Atomics.add(beats, 0, 1), WATCHDOG_CHECK_MS / 2).unref();
  const ipcFd = (process.channel as { fd?: number } | undefined)?.fd;
  const workerData: WatchdogData = { heartbeat, blockedMs: WATCHDOG_BLOCKED_MS, checkMs: WATCHDOG_CHECK_MS, ipcFd, ...opts };
  const thread = new Worker(path.join(__dirname, 'watchdog-thread.js'), { ...THREAD_OPTIONS, workerData });
  // the process's life is the main thread's: exiting never waits for the watchdog
  thread.unref();
  thread.on('error', (err) => logger.error({ err }, 'the watchdog thread failed: a blocked event loop will not be killed'));
}
