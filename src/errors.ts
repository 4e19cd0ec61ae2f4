import type { ErrorRequestHandler, Response } from 'express';
import { BaseError, ConnectionError, TimeoutError } from 'sequelize';
import { ZodError } from 'zod';
import type { Logger } from './logger.js';

/** The error vocabulary of the HTTP API: every failure a client sees is one of these. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (message: string, code = 'SITELOG_BAD_REQUEST') => new HttpError(400, code, message);
export const unauthorized = (message = 'missing or wrong credentials') =>
  new HttpError(401, 'SITELOG_UNAUTHORIZED', message, { 'WWW-Authenticate': 'Bearer realm="sitelog"' });
export const forbidden = (message: string) => new HttpError(403, 'SITELOG_FORBIDDEN', message);
export const notFound = (message = 'not found') => new HttpError(404, 'SITELOG_NOT_FOUND', message);
export const conflict = (message: string, code: string) => new HttpError(422, code, message);
export const tooManyRequests = (message: string, retryAfterSeconds: number) =>
  new HttpError(429, 'SITELOG_TOO_MANY_REQUESTS', message, { 'Retry-After': String(retryAfterSeconds) });
export const databaseUnavailable = () =>
  new HttpError(503, 'SITELOG_DB_UNAVAILABLE', 'database unavailable, retry shortly', { 'Retry-After': '1' });


// SQLSTATEs that mean "the database is not there right now", not "your request is wrong".
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '08000', '08003', '08006', '53300', '57014']);

const BODY_PARSER_ERRORS: Record<string, [number, string, string]> = {
  'entity.parse.failed': [400, 'SITELOG_MALFORMED_JSON', 'request body is not valid JSON'],
  'entity.verify.failed': [400, 'SITELOG_BAD_ENCODING', 'request body is not valid UTF-8'],
  'entity.too.large': [413, 'SITELOG_TOO_LARGE', 'request body too large'],
  'charset.unsupported': [415, 'SITELOG_UNSUPPORTED_CHARSET', 'request body must be UTF-8'],
  'encoding.unsupported': [415, 'SITELOG_UNSUPPORTED_ENCODING', 'unsupported Content-Encoding'],
  'request.aborted': [400, 'SITELOG_ABORTED', 'request aborted'],
};

const UNAVAILABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/** An error's code (SQLSTATE or socket) and text, its wrapped cause's first: Sequelize wraps pg's errors. */
function facts(err: unknown): { name?: string; code?: string; text: string } {
  const e = err as { name?: string; code?: string; message?: string; parent?: { code?: string; message?: string } };
  return { name: e.name, code: e.parent?.code ?? e.code, text: `${e.message ?? ''} ${e.parent?.message ?? ''}` };
}

/** Whether an error means "the database is not there right now" rather than "your request is wrong". */
function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof ConnectionError || err instanceof TimeoutError) return true;
  const { code, text } = facts(err);
  if (code !== undefined && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_SOCKET_CODES.has(code))) return true;
  // pg reports a dropped connection without a code; Sequelize may wrap it (e.g. a failed ROLLBACK)
  return (
    (err instanceof BaseError || err instanceof Error) &&
    /Connection terminated|not queryable|connection error|terminating connection|ECONNREFUSED/i.test(text)
  );
}

// A statement cancelled by its timeout, no connection slot left: a busy server, not a gone one.
const BUSY_SQLSTATES = new Set(['57014', '53300']);

/**
 * Whether the database itself is gone (refused, dropped, shutting down), as opposed to slow or
 * saturated: a pool that could not hand out a connection in time, a statement or a connection
 * attempt that timed out under load. Only the first closes the gate for every request.
 */
export function isDatabaseGone(err: unknown): boolean {
  if (!isDatabaseUnavailable(err) || err instanceof TimeoutError) return false;
  const { name, code, text } = facts(err);
  return !(name === 'SequelizeConnectionAcquireTimeoutError' || (code !== undefined && BUSY_SQLSTATES.has(code)) || /timeout/i.test(text));
}

export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof ZodError) {
    const message = err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
    return badRequest(message, 'SITELOG_VALIDATION');
  }
  const e = err as { type?: string; status?: number };
  const known = e.type ? BODY_PARSER_ERRORS[e.type] : undefined;
  if (known) return new HttpError(...known);
  if (isDatabaseUnavailable(err)) return databaseUnavailable();
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    return new HttpError(e.status, 'SITELOG_BAD_REQUEST', 'bad request');
  }
  return new HttpError(500, 'SITELOG_INTERNAL', 'internal error');
}

/** An error's JSON answer: its status, its headers (Retry-After, …), its code and message. */
export function sendHttpError(res: Response, http: HttpError): void {
  res.status(http.status).set(http.headers).json({ error: { code: http.code, message: http.message } });
}

/** The one error middleware: JSON for every failure, each logged once, no stack to the client. */
export function errorHandler(logger: Logger, onUnavailable: (reason: string) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    const http = toHttpError(err);
    if (http.code === 'SITELOG_DB_UNAVAILABLE' && isDatabaseGone(err)) onUnavailable((err as Error).message);
    const log = req.log ?? logger;
    if (http.status === 503) log.debug({ code: http.code, err: (err as Error).message, url: req.originalUrl }, http.message);
    else if (http.status >= 500) log.error({ err, method: req.method, url: req.originalUrl }, http.message);
    else log.debug({ code: http.code, method: req.method, url: req.originalUrl }, http.message);
    if (res.headersSent) {
      // answered already (the database gate closed while it waited), or cut mid-body: then the client must know
      if (!res.writableEnded) res.destroy();
      return;
    }
    sendHttpError(res, http);
  };
}
