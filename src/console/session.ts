import crypto from 'node:crypto';
import { parse as parseCookies } from 'cookie';
import type { Request, Response } from 'express';
import { QueryTypes, type Sequelize } from 'sequelize';
import { secretEquals } from '../auth.js';

export const SESSION_COOKIE = 'sitelog_session';
export const LOGIN_CSRF_COOKIE = 'sitelog_login_csrf';
const SESSION_HOURS = 12;

const sha256 = (s: string) => crypto.createHash('sha256').update(s).digest('hex');
export const randomToken = () => crypto.randomBytes(32).toString('base64url');

export function cookies(req: Request): Record<string, string | undefined> {
  // cookie.parse keeps values with '=' in them, and takes a stray '%' as it is instead of throwing
  return parseCookies(req.get('cookie') ?? '');
}

/** HttpOnly, SameSite=Strict, and Secure when the browser reached nginx over HTTPS. */
export function setCookie(req: Request, res: Response, name: string, value: string, maxAgeSeconds: number): void {
  res.cookie(name, value, { path: '/', httpOnly: true, sameSite: 'strict', maxAge: maxAgeSeconds * 1000, secure: req.secure });
}

export type Session = { csrf: string };

export async function createSession(sequelize: Sequelize): Promise<{ token: string; maxAge: number }> {
  const token = randomToken();
  await sequelize.query('DELETE FROM console_sessions WHERE expires_at < now()');
  await sequelize.query(
    'INSERT INTO console_sessions (id_hash, csrf, expires_at) VALUES ($1, $2, now() + make_interval(hours => $3))',
    { bind: [sha256(token), randomToken(), SESSION_HOURS] },
  );
  return { token, maxAge: SESSION_HOURS * 3600 };
}

export async function findSession(sequelize: Sequelize, req: Request): Promise<Session | undefined> {
  const token = cookies(req)[SESSION_COOKIE];
  if (!token || token.length > 100) return undefined;
  const rows = await sequelize.query<Session>(
    'SELECT csrf FROM console_sessions WHERE id_hash = $1 AND expires_at > now()',
    { bind: [sha256(token)], type: QueryTypes.SELECT },
  );
  return rows[0];
}

export async function endSession(sequelize: Sequelize, req: Request): Promise<void> {
  const token = cookies(req)[SESSION_COOKIE];
  if (token) await sequelize.query('DELETE FROM console_sessions WHERE id_hash = $1', { bind: [sha256(token)] });
}

export function tokensEqual(expected: string | undefined, given: string | undefined): boolean {
  return !!expected && !!given && secretEquals(expected, given);
}
