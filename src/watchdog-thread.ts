import fs from 'node:fs';
import { isMainThread, workerData } from 'node:worker_threads';
import { fatalLine, HEARTBEAT, STARTUP_OVER, startupFatalLine, stalledAfterCheck, STEP, type WatchdogData } from './watchdog.js';

// The watchdog's thread, started by armWatchdog (src/watchdog.ts). Its event loop is its own, so it
// keeps time while the main thread's loop is blocked. For the same reason it cannot log through the
// main thread (a worker's stdout is relayed by the main loop, and PM2's log hooks live there): it
// writes its line itself, synchronously, then kills the process. Until the process is ready it holds
// the startup to its deadline instead.

if (isMainThread) throw new Error('watchdog-thread.js runs as the watchdog thread only: armWatchdog (src/watchdog.ts) starts it');
const data = workerData as WatchdogData;
const slots = new Int32Array(data.shared);

/**
 * Appends the line to the instance's log file (opened now, in append mode: PM2's own stream appends
 * to the same file, and a rotation may have replaced it since startup), or writes it to stderr.
 */
function writeFatalLine(line: string): void {
  try {
    if (data.logFile) fs.appendFileSync(data.logFile, line);
    else fs.writeSync(2, line);
  } catch {
    // the kill matters more than the line
  }
}

/**
 * Leaves the cluster: closing this end of the IPC channel is a disconnect to the master, which stops
 * handing this process new connections (Node's RoundRobinHandle). Killed without it, the process
 * could still be handed one in the moment before the master saw it exit, and nobody would ever
 * read that connection: nginx would wait its read timeout (15 s) before sending the request elsewhere.
 */
function leaveCluster(): void {
  if (data.ipcFd === undefined) return;
  try {
    fs.closeSync(data.ipcFd);
  } catch {
    // already gone: nothing to leave
  }
}

/** Time for the master to read the disconnect before the kill resets nginx's connections, whose retries it must not hand here. */
const LEAVE_MS = 250;

let lastBeats = Atomics.load(slots, HEARTBEAT);
let lastCheck = performance.now();
let stalledMs = 0;
/** Startup time spent in steps the deadline does not bound (UNBOUNDED_STEPS, src/startup-steps.ts). */
let unboundedMs = 0;

/** The line, then out of the cluster, then SIGKILL. */
function kill(line: string): void {
  clearInterval(checks);
  writeFatalLine(line);
  leaveCluster();
  // SIGKILL, not SIGINT: a blocked loop would never run the graceful shutdown. PM2 restarts the
  // instance, and its startup log entry says "restarted" (src/instances/startup-rule.ts).
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), LEAVE_MS);
}

const checks = setInterval(() => {
  const now = performance.now();
  const current = Atomics.load(slots, HEARTBEAT);
  const step = Atomics.load(slots, STEP);
  if (step !== STARTUP_OVER && data.startup) {
    // starting: the loop may pause (module loading, migrations); only the deadline counts
    if (data.startup.unbounded.includes(step)) unboundedMs += now - lastCheck;
    lastBeats = current;
    lastCheck = now;
    const startupMs = Math.round(performance.timeOrigin + now - data.startup.processStart);
    if (startupMs - unboundedMs < data.startup.deadlineMs) return;
    kill(startupFatalLine(data.base, data.startup.steps[step] ?? String(step), startupMs, new Date()));
    return;
  }
  stalledMs = stalledAfterCheck(stalledMs, current !== lastBeats, now - lastCheck, data.checkMs);
  lastBeats = current;
  lastCheck = now;
  if (stalledMs < data.blockedMs) return;
  kill(fatalLine(data.base, Math.round(stalledMs), new Date()));
}, data.checkMs);
