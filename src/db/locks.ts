/**
 * Advisory lock keys. Single-bigint keys live apart from the (int4, int4) keys of the liveness locks
 * (pg_locks.objsubid 1 vs 2), so the two families never collide.
 */
export const LOCK_MIGRATIONS = 0x5173_6c67_0001n.toString();
export const LOCK_CREATE_DATABASE = 0x5173_6c67_0002n.toString();
/** Held by the one process (of every instance and host) running the log retention (src/logs/retention.ts). */
export const LOCK_RETENTION = 0x5173_6c67_0003n.toString();

/**
 * A process's liveness lock is (hashtext(LIVENESS_PREFIX || host), pid), held on a connection of its
 * own for its whole life; the view live_instances (migration 0001) joins pg_locks on the same key.
 */
export const LIVENESS_PREFIX = 'sitelog:live:';
/** A host's start lock, hashtext(START_PREFIX || host), taken per transaction while a process registers. */
export const START_PREFIX = 'sitelog:start:';
/**
 * A client's login lock, hashtext(LOGIN_PREFIX || sitelog_client_key(ip)) as a single bigint key
 * (int4 range: never one of the constants above), taken per transaction by a login attempt.
 */
export const LOGIN_PREFIX = 'sitelog:login:';
/** Taken per transaction while a process sets this role's defaults for pooled connections (src/db/pooler.ts). */
export const LOCK_ROLE_DEFAULTS = 0x5173_6c67_0004n.toString();
