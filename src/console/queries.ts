import type { Run, Statement } from '../db/lean.js';

// Every statement on console_sessions and login_unlocks, run by db/lean.ts's runner. The login throttle's and the
// security view's statements are on system_logs, so they live in src/logs/queries.ts.

/** A session as the console needs it: the CSRF token of its forms. */
export type SessionRow = { csrf: string };

const DELETE_EXPIRED: Statement = { name: 'sitelog-sessions-expire', text: 'DELETE FROM console_sessions WHERE expires_at < now()' };

const CREATE: Statement = {
  name: 'sitelog-session-create',
  text: `INSERT INTO console_sessions (id_hash, csrf, password_tag, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(hours => $4))`,
};

/** Creates a session (and removes expired ones). */
export async function createSession(run: Run, session: { idHash: string; csrf: string; passwordTag: string; hours: number }): Promise<void> {
  await run(DELETE_EXPIRED, []);
  await run(CREATE, [session.idHash, session.csrf, session.passwordTag, session.hours]);
}

const LIVE = `id_hash = $1 AND password_tag = $2 AND expires_at > now() AND last_seen > now() - make_interval(mins => $3)`;
const FIND: Statement = { name: 'sitelog-session-find', text: `SELECT csrf FROM console_sessions WHERE ${LIVE}` };
const TOUCH: Statement = { name: 'sitelog-session-touch', text: `UPDATE console_sessions SET last_seen = now() WHERE ${LIVE} RETURNING csrf` };

/**
 * The session of a token's hash, if it lives: made with the current admin password, not expired,
 * used within the idle timeout. `touch` counts this request as the person's activity.
 */
export async function findSession(run: Run, query: { idHash: string; passwordTag: string; idleMinutes: number; touch: boolean }): Promise<SessionRow | undefined> {
  const [row] = await run<SessionRow>(query.touch ? TOUCH : FIND, [query.idHash, query.passwordTag, query.idleMinutes]);
  return row;
}

const END: Statement = { name: 'sitelog-session-end', text: 'DELETE FROM console_sessions WHERE id_hash = $1' };
const END_ALL: Statement = { name: 'sitelog-sessions-end-all', text: 'DELETE FROM console_sessions RETURNING 1' };

export async function endSession(run: Run, idHash: string): Promise<void> {
  await run(END, [idHash]);
}

/** Ends every session, on every instance and host: "log out everywhere". How many there were. */
export async function endAllSessions(run: Run): Promise<number> {
  return (await run(END_ALL, [])).length;
}

const LOCK_CLIENT: Statement = {
  name: 'sitelog-login-lock-client',
  text: `SELECT pg_advisory_xact_lock(hashtext($1 || coalesce(sitelog_client_key($2), '')))::text AS locked`,
};

/**
 * Takes the login lock of a client (its address, or its IPv6 /64) until the transaction ends: one
 * attempt per client at a time, across instances and hosts, so the throttle's count, the password
 * check and the failure's record happen as one.
 */
export async function lockClient(run: Run, prefix: string, ip: string | null): Promise<void> {
  await run(LOCK_CLIENT, [prefix, ip]);
}

const UNLOCK: Statement = {
  name: 'sitelog-login-unlock',
  text: `INSERT INTO login_unlocks (client) VALUES (sitelog_client_key($1))
         ON CONFLICT (client) DO UPDATE SET unlocked_at = now() RETURNING client`,
};

/** Lifts a client's login lock: its failures before now no longer count. The client's key. */
export async function unlockClient(run: Run, address: string): Promise<string> {
  const [row] = await run<{ client: string }>(UNLOCK, [address]);
  return row!.client;
}
