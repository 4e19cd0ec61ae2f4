import crypto from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { unauthorized } from './errors.js';

/**
 * Constant-time comparison with a secret. A guess of another length is compared with the secret
 * itself, so that the time says nothing about the secret's length either; without hashing both per
 * request, which cost an API read 7 µs.
 */
export function secretMatcher(expected: string): (given: string) => boolean {
  const want = Buffer.from(expected);
  return (given) => {
    const got = Buffer.from(given);
    const sameLength = got.length === want.length;
    return crypto.timingSafeEqual(want, sameLength ? got : want) && sameLength;
  };
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
