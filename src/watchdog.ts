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
//
// The same thread holds the startup to its deadline (STARTUP_DEADLINE_MS), rather than a timer on the
// main thread: a startup can hang awaiting (a query, a lock) or with its loop blocked, and only a
// thread of its own sees both; it already knows how to write its line where PM2 logs and to kill.
// The price: the process ends by SIGKILL, not exit 1 (a thread cannot exit its process, and a blocked
// loop would run no exit), which PM2 restarts all the same.

/** The fields every log line of the process carries (src/logger.ts). */
export type LogBase = { host: string; instance: number; pid: number };

/** The shared Int32Array's slots: the main thread's heartbeats, and its startup step (an index of `startup.steps`; -1: over). */
export const HEARTBEAT = 0;
export const STEP = 1;
export const STARTUP_OVER = -1;

/** What the watchdog thread is given: copied, except the shared buffer (slots above). */
export type WatchdogData = {
  shared: SharedArrayBuffer;
  blockedMs: number;
  checkMs: number;
  /** Where the fatal line goes: the instance's PM2 log file, or stderr outside PM2. */
  logFile: string | undefined;
  base: LogBase;
  /** This process's end of its IPC channel to the cluster master (PM2's daemon), when it has one. */
  ipcFd: number | undefined;
  /** The startup's steps and deadline; `processStart`: the main thread's performance.timeOrigin (a thread may have its own). */
  startup: { steps: readonly string[]; unbounded: readonly number[]; deadlineMs: number; processStart: number } | undefined;
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

/** Its line when the startup misses its deadline, naming the step it is stuck in. */
export function startupFatalLine(base: LogBase, step: string, startupMs: number, at: Date): string {
  const msg = `not ready after ${startupMs} ms, stuck in startup step "${step}": the watchdog kills this process (SIGKILL) so that PM2 restarts it`;
  return `${JSON.stringify({ level: 60, time: at.toISOString(), ...base, event: 'startup_deadline', step, startupMs, msg })}\n`;
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

/** The main thread's side of the startup deadline: the step it is in, and the end of it. */
export type StartupWatch<S extends string> = {
  step: (name: S) => void;
  /** Ready (or shutting down): the deadline no longer holds, the event loop is watched from now on. */
  over: () => void;
};

/**
 * Starts the watchdog thread. With `startup`, call it first thing: the process is held to the
 * startup deadline until `over()`, and only then is its event loop watched (the bound is chosen for
 * a serving process, not for module loading and migrations). Without, the loop is watched at once.
 * A debugger paused at a breakpoint is a blocked loop too, so with the inspector open there is no
 * watchdog, and no startup deadline.
 */
export function armWatchdog<S extends string>(
  logger: Logger,
  opts: { logFile: string | undefined; base: LogBase; startup?: { steps: readonly S[]; unbounded?: readonly S[]; deadlineMs: number } },
): StartupWatch<S> {
  const shared = new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
  const slots = new Int32Array(shared);
  Atomics.store(slots, STEP, opts.startup ? 0 : STARTUP_OVER);
  let over = !opts.startup;
  const watch: StartupWatch<S> = {
    // once over (ready, or a shutdown began while starting), a step still reached must not bring the deadline back
    step: (name) => void (opts.startup && !over && Atomics.store(slots, STEP, opts.startup.steps.indexOf(name))),
    over: () => {
      over = true;
      Atomics.store(slots, STEP, STARTUP_OVER);
    },
  };
  if (inspector.url()) {
    logger.warn('the inspector is open: no watchdog, a blocked event loop or a stuck startup is not killed');
    return watch;
  }
  // twice per check, so that a loop merely busy (a timer late by a few hundred ms) never misses one
  setInterval(() => Atomics.add(slots, HEARTBEAT, 1), WATCHDOG_CHECK_MS / 2).unref();
  const ipcFd = (process.channel as { fd?: number } | undefined)?.fd;
  const startup = opts.startup && {
    steps: opts.startup.steps,
    unbounded: (opts.startup.unbounded ?? []).map((name) => opts.startup!.steps.indexOf(name)),
    deadlineMs: opts.startup.deadlineMs,
    processStart: performance.timeOrigin,
  };
  const workerData: WatchdogData = { shared, blockedMs: WATCHDOG_BLOCKED_MS, checkMs: WATCHDOG_CHECK_MS, ipcFd, logFile: opts.logFile, base: opts.base, startup };
  const thread = new Worker(path.join(__dirname, 'watchdog-thread.js'), { ...THREAD_OPTIONS, workerData });
  // the process's life is the main thread's: exiting never waits for the watchdog
  thread.unref();
  thread.on('error', (err) => logger.error({ err }, 'the watchdog thread failed: a blocked event loop or a stuck startup will not be killed'));
  return watch;
}
