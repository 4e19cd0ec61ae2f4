/**
 * The steps of a web process's startup (startWebProcess, src/startup.ts), in order: the one it is in
 * is what the startup deadline's fatal line names (src/watchdog.ts). Kept apart from startup.ts, which
 * loads the whole app: the configuration and the watchdog's thread need only the names.
 */
export const STARTUP_STEPS = ['starting', 'waiting for the database', 'pool budget', 'migrations', 'applying migrations', 'startup log', 'metrics', 'listening'] as const;
export type StartupStep = (typeof STARTUP_STEPS)[number];

/**
 * The steps whose time does not count toward the startup deadline: a migration on a big table may
 * rightly run for minutes, here or in the instance it waits for; killed at the deadline it would be
 * rolled back and run again at every restart, and never end. Only reached when a migration is pending.
 */
export const UNBOUNDED_STEPS: readonly StartupStep[] = ['applying migrations'];
