import type { RequestHandler } from 'express';
import { ERRORS, HttpError, sendHttpError } from './errors.js';

/**
 * Every request is answered within `ms` (REQUEST_DEADLINE_MS): past it, a 503 if nothing was sent
 * yet. `req.signal` aborts then, or when the client goes away first; the request's database work
 * listens to it and is cancelled (db/lean.ts), so nobody's abandoned read keeps PostgreSQL busy.
 */
export function requestDeadline(ms: number): RequestHandler {
  return (req, res, next) => {
    const controller = new AbortController();
    req.signal = controller.signal;
    const timer = setTimeout(() => {
      controller.abort();
      if (!res.headersSent) sendHttpError(res, new HttpError(ERRORS.SITELOG_DEADLINE, undefined, { 'Retry-After': '1' }));
    }, ms);
    res.once('close', () => {
      clearTimeout(timer);
      if (!res.writableFinished) controller.abort();
    });
    next();
  };
}
