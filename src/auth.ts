import crypto from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { unauthorized } from './errors.js';

const digest = (s: string) => crypto.createHash('sha256').update(s).digest();

/** Constant-time comparison with a secret, whose digest is computed once. */
export function secretMatcher(expected: string): (given: string) => boolean {
  const want = digest(expected);
  return (given) => crypto.timingSafeEqual(want, digest(given));
}

export function secretEquals(expected: string, given: string): boolean {
  return secretMatcher(expected)(given);
}

export function bearerToken(req: Request): string | undefined {
  const header = req.get('authorization');
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1];
}

/** Hooks the console adds: a valid session cookie also lets a person read the API. */
export type SessionCheck = (req: Request) => boolean;

export function authenticate(apiToken: string, hasSession: SessionCheck = () => false) {
  const matches = secretMatcher(apiToken);
  const tokenOk = (req: Request) => {
    const token = bearerToken(req);
    return token !== undefined && matches(token);
  };
  return {
    /** Bearer token only: writes come from programs, not from a browser session. */
    token: (req: Request, _res: Response, next: NextFunction) => {
      next(tokenOk(req) ? undefined : unauthorized());
    },
    /** Bearer token or console session. */
    reader: (req: Request, _res: Response, next: NextFunction) => {
      next(tokenOk(req) || hasSession(req) ? undefined : unauthorized());
    },
  };
}
export type Auth = ReturnType<typeof authenticate>;
