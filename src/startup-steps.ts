/**
 * The steps of a web process's startup (startWebProcess, src/startup.ts), in order: the one it is in
 * is what the startup deadline's fatal line names (src/watchdog.ts). Kept apart from startup.ts, which
 * loads the whole app: the configuration and the watchdog's thread need only the names.
 */
export const STARTUP_STEPS = ['starting', 'waiting for the database', 'pool budget', 'migrations', 'startup log', 'metrics', 'listening'] as const;
export type StartupStep = (typeof STARTUP_STEPS)[number];
