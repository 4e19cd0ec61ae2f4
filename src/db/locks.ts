/**
 * Advisory lock keys. Single-bigint keys live apart from the (int4, int4) keys of the liveness locks
 * (pg_locks.objsubid 1 vs 2), so the two families never collide.
 */
export const LOCK_MIGRATIONS = 0x5173_6c67_0001n.toString();
export const LOCK_CREATE_DATABASE = 0x5173_6c67_0002n.toString();
