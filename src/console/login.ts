import crypto from 'node:crypto';
import type { Sequelize } from 'sequelize';
import { secretEquals } from '../auth.js';
import { transaction, withConnection, withWriteConnection } from '../db/lean.js';
import { LOGIN_PREFIX } from '../db/locks.js';
import { clientFailures, insertEntry, securityOverview, type ThrottleEntries } from '../logs/queries.js';
import * as queries from './queries.js';

// The console's login throttle. A client (an address, or an IPv6 /64) has LOGIN_FAILURES_ALLOWED
// wrong passwords per LOGIN_WINDOW_MINUTES, counted in system_logs across every instance and host,
// until the window passes or someone unlocks it from the security view. nginx limits the login form
// per client too (nginx/sitelog.conf); this is the limit that holds when the app is reached directly.

export const FAILED_LOGIN = 'failed console login';
export const LOGIN_FAILURES_ALLOWED = 5;
export const LOGIN_WINDOW_MINUTES = 15;
const THROTTLE: ThrottleEntries = { failure: FAILED_LOGIN, minutes: LOGIN_WINDOW_MINUTES };

/** Where an attempt came from, and the instance that writes its entry. */
export type Origin = { ip: string | null; userAgent: string | null; requestId: string; host: string; instance: number };

export type LoginOutcome = 'accepted' | 'wrong' | 'locked';

/**
 * One login attempt, exact under concurrency: under the client's lock, its failures are counted,
 * the password is checked and a wrong one is recorded, in one transaction. N parallel guesses from
 * one client therefore get exactly LOGIN_FAILURES_ALLOWED checks. A failure that cannot be recorded
 * fails the whole attempt (the caller refuses it): no guess is checked without being counted.
 */
export async function attemptLogin(sequelize: Sequelize, password: string, adminPassword: string, origin: Origin): Promise<LoginOutcome> {
  return withWriteConnection(sequelize, (run) =>
    transaction(run, async (): Promise<LoginOutcome> => {
      await queries.lockClient(run, LOGIN_PREFIX, origin.ip);
      if ((await clientFailures(run, origin.ip, THROTTLE)) >= LOGIN_FAILURES_ALLOWED) return 'locked';
      if (secretEquals(adminPassword, password)) return 'accepted';
      // an id of its own: a repeated request id (a trusted peer's) must not make failures collide
      await insertEntry(run, { stype: 'security', description: FAILED_LOGIN, ...origin, requestId: crypto.randomUUID() });
      return 'wrong';
    }),
  );
}

/**
 * Lifts a client's lock now (login_unlocks, which only the console writes), and records it as a
 * `security` entry naming the client and where the unlock came from.
 */
export async function unlockClient(sequelize: Sequelize, address: string, origin: Origin): Promise<void> {
  await withWriteConnection(sequelize, (run) =>
    transaction(run, async () => {
      const client = await queries.unlockClient(run, address);
      await insertEntry(run, { ...origin, stype: 'security', description: `console: unlocked ${client} (from ${origin.ip ?? 'unknown'})` });
    }),
  );
}

/** The security view's data: failed logins by client over the last day, and the clients locked now. */
export function securityFacts(sequelize: Sequelize) {
  return withConnection(sequelize, (run) => securityOverview(run, { ...THROTTLE, hours: 24, allowed: LOGIN_FAILURES_ALLOWED }));
}
export type SecurityFacts = Awaited<ReturnType<typeof securityFacts>>;
