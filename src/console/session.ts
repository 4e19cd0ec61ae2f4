import crypto from 'node:crypto';
import { parse as parseCookies } from 'cookie';
import type { Request, Response } from 'express';
import type { Sequelize } from 'sequelize';
import { secretEquals } from '../auth.js';
import { withConnection } from '../db/lean.js';
import * as queries from './queries.js';

export const SESSION_COOKIE = 'sitelog_session';
export const LOGIN_CSRF_COOKIE = 'sitelog_login_csrf';
/** A session's longest life, and how long it may stay unused (a page or a form, not the polling). */
const SESSION_HOURS = 12;
export const SESSION_IDLE_MINUTES = 30;

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
export const randomToken = () => crypto.randomBytes(32).toString('base64url');

/**
 * A session's tie to the admin password: HMAC-SHA256 of its token keyed by the password. A new
 * password ends every session; the table alone (id hashes and tags) gives no way to guess the
 * password, because the token is not in it.
 */
const passwordTag = (password: string, token: string) => crypto.createHmac('sha256', password).update(token).digest('hex');

export function cookies(req: Request): Record<string, string | undefined> {
  // cookie.parse keeps values with '=' in them, and takes a stray '%' as it is instead of throwing
  return parseCookies(req.get('cookie') ?? '');
}

/** HttpOnly, SameSite=Strict, and Secure when the browser reached nginx over HTTPS. */
export function setCookie(req: Request, res: Response, name: string, value: string, maxAgeSeconds: number): void {
  res.cookie(name, value, { path: '/', httpOnly: true, sameSite: 'strict', maxAge: maxAgeSeconds * 1000, secure: req.secure });
}

export type Session = { csrf: string };

export async function createSession(sequelize: Sequelize, password: string): Promise<{ token: string; maxAge: number }> {
  const token = randomToken();
  const session = { idHash: sha256(token), csrf: randomToken(), passwordTag: passwordTag(password, token), hours: SESSION_HOURS };
  await withConnection(sequelize, (run) => queries.createSession(run, session));
  return { token, maxAge: SESSION_HOURS * 3600 };
}

/** The request's session, if its cookie names one that lives; a console page or form counts as activity. */
export async function findSession(sequelize: Sequelize, req: Request, password: string): Promise<Session | undefined> {
  const token = cookies(req)[SESSION_COOKIE];
  if (!token || token.length > 100) return undefined;
  const touch = !/^\/api(\/|$)/i.test(req.originalUrl);
  const query = { idHash: sha256(token), passwordTag: passwordTag(password, token), idleMinutes: SESSION_IDLE_MINUTES, touch };
  return withConnection(sequelize, (run) => queries.findSession(run, query));
}

export async function endSession(sequelize: Sequelize, req: Request): Promise<void> {
  const token = cookies(req)[SESSION_COOKIE];
  if (token) await withConnection(sequelize, (run) => queries.endSession(run, sha256(token)));
}

export async function endAllSessions(sequelize: Sequelize): Promise<number> {
  return withConnection(sequelize, queries.endAllSessions);
}

export function tokensEqual(expected: string | undefined, given: string | undefined): boolean {
  return !!expected && !!given && secretEquals(expected, given);
}
