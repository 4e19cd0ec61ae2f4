import type { ErrorRequestHandler, Response } from 'express';
import { ConnectionError, TimeoutError } from 'sequelize';
import { ZodError } from 'zod';
import type { Logger } from './logger.js';
import { sendJson } from './respond.js';

type Registry<T> = { readonly [C in keyof T & string]: T[C] & { readonly code: C } };

/** Each registry entry carries its own code, so callers pass `ERRORS.X` and never spell one. */
function registry<const T extends Record<string, { status: number; message: string }>>(entries: T): Registry<T> {
  return Object.freeze(Object.fromEntries(Object.entries(entries).map(([code, e]) => [code, Object.freeze({ ...e, code })]))) as Registry<T>;
}

/**
 * Every code a client can get, from the app or from nginx's own answers (nginx/sitelog-site.conf),
 * with its one status and default message. test/errors.test.ts fails on a code used but not here.
 */
export const ERRORS = registry({
  SITELOG_BAD_REQUEST: { status: 400, message: 'bad request' },
  SITELOG_MALFORMED_JSON: { status: 400, message: 'request body is not valid JSON' },
  SITELOG_BAD_ENCODING: { status: 400, message: 'request body is not valid UTF-8' },
  SITELOG_ABORTED: { status: 400, message: 'request aborted' },
  SITELOG_VALIDATION: { status: 400, message: 'invalid request' },
  SITELOG_BAD_CURSOR: { status: 400, message: 'before: not a cursor this API returned' },
  SITELOG_BAD_IDEMPOTENCY_KEY: { status: 400, message: 'Idempotency-Key: must be 8-128 characters of [A-Za-z0-9._:-]' },
  SITELOG_UNAUTHORIZED: { status: 401, message: 'missing or wrong credentials' },
  SITELOG_FORBIDDEN: { status: 403, message: 'forbidden' },
  SITELOG_NOT_FOUND: { status: 404, message: 'not found' },
  SITELOG_PRECONDITION_FAILED: { status: 412, message: 'precondition failed' },
  SITELOG_TOO_LARGE: { status: 413, message: 'request body too large' },
  SITELOG_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'request body must be application/json' },
  SITELOG_UNSUPPORTED_CHARSET: { status: 415, message: 'request body must be UTF-8' },
  SITELOG_UNSUPPORTED_ENCODING: { status: 415, message: 'unsupported Content-Encoding' },
  // A key reused with another body: the request is well-formed but cannot be processed (the IETF
  // Idempotency-Key draft's 422), not a conflict with a request still in progress (409).
  SITELOG_IDEMPOTENCY_KEY_REUSED: { status: 422, message: 'Idempotency-Key was already used for a different entry' },
  SITELOG_RANGE_NOT_SATISFIABLE: { status: 416, message: 'range not satisfiable' },
  SITELOG_TOO_MANY_REQUESTS: { status: 429, message: 'too many requests, retry later' },
  SITELOG_INTERNAL: { status: 500, message: 'internal error' },
  SITELOG_DB_UNAVAILABLE: { status: 503, message: 'database unavailable, retry shortly' },
  // the database is there but cannot take this now: a table locked by someone else, no connection
  // or statement in time; never closes the database gate
  SITELOG_DB_BUSY: { status: 503, message: 'database busy, retry shortly' },
  // nginx's own answer when no worker answers (502-504)
  SITELOG_UNAVAILABLE: { status: 503, message: 'service unavailable, retry shortly' },
  // the app's answer at its request deadline (REQUEST_DEADLINE_MS), the request's database work cancelled
  SITELOG_DEADLINE: { status: 503, message: 'the request took too long, retry shortly' },
});

export type ErrorCode = keyof typeof ERRORS;
/** The first entry of each status: the code a library's own error of that status is answered with. */
const BY_STATUS = new Map<number, ErrorEntry>([...Object.values(ERRORS)].reverse().map((e) => [e.status, e]));
export type ErrorEntry = (typeof ERRORS)[ErrorCode];
type EntryWithStatus<S extends number> = Extract<ErrorEntry, { status: S }>;

/** The error vocabulary of the HTTP API: every failure a client sees is one of these. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: ErrorCode;

  constructor(error: ErrorEntry, message: string = error.message, readonly headers: Record<string, string> = {}) {
    super(message);
    this.status = error.status;
    this.code = error.code;
  }
}

export const badRequest = (error: EntryWithStatus<400> = ERRORS.SITELOG_BAD_REQUEST, message?: string) => new HttpError(error, message);
export const unauthorized = (message?: string) =>
  new HttpError(ERRORS.SITELOG_UNAUTHORIZED, message, { 'WWW-Authenticate': 'Bearer realm="sitelog"' });
export const forbidden = (message: string) => new HttpError(ERRORS.SITELOG_FORBIDDEN, message);
export const notFound = (message?: string) => new HttpError(ERRORS.SITELOG_NOT_FOUND, message);
export const unprocessableContent = (error: EntryWithStatus<422>, message?: string) => new HttpError(error, message);
export const tooManyRequests = (message: string, retryAfterSeconds: number) =>
  new HttpError(ERRORS.SITELOG_TOO_MANY_REQUESTS, message, { 'Retry-After': String(retryAfterSeconds) });
export const databaseUnavailable = () => new HttpError(ERRORS.SITELOG_DB_UNAVAILABLE, undefined, { 'Retry-After': '1' });
export const databaseBusy = () => new HttpError(ERRORS.SITELOG_DB_BUSY, undefined, { 'Retry-After': '1' });

const BODY_PARSER_ERRORS: Record<string, ErrorEntry> = {
  'entity.parse.failed': ERRORS.SITELOG_MALFORMED_JSON,
  'entity.verify.failed': ERRORS.SITELOG_BAD_ENCODING,
  'entity.too.large': ERRORS.SITELOG_TOO_LARGE,
  'charset.unsupported': ERRORS.SITELOG_UNSUPPORTED_CHARSET,
  'encoding.unsupported': ERRORS.SITELOG_UNSUPPORTED_ENCODING,
  'request.aborted': ERRORS.SITELOG_ABORTED,
  // urlencoded console forms: more fields than its parameterLimit
  'parameters.too.many': ERRORS.SITELOG_TOO_LARGE,
};

// SQLSTATEs and socket codes of a database that is not there right now: shutting down, starting
// up (57P03), refused, dropped, or its host not resolvable for the moment.
export const GONE_CODES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03', '08000', '08003', '08006', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN']);
// No connection slot left, a statement cancelled by its timeout (57014) or its lock timeout (55P03,
// a table somebody else holds): a busy server, not a gone one.
const BUSY_CODES = new Set(['53300', '57014', '55P03']);
// node-pg reports a dropped connection without a code; Sequelize may wrap it (e.g. a failed ROLLBACK).
// The one rule for a connection gone by its text: db/replicas.ts reads it too.
export const DROPPED_TEXT = /terminated|terminating connection|not queryable|connection error|ECONNREFUSED/i;
// A timed-out connection, statement or acquire has no code either: for the app, any timeout is busy.
const TIMEOUT_TEXT = /timeout/i;

// PgBouncer answers its own troubles as 08P01 (protocol violation), told apart by their text: a
// PostgreSQL it cannot reach is gone; a full pool (a client waited query_wait_timeout) or no client
// slot left is busy. Any other 08P01 (an unsupported startup parameter) is a configuration mistake.
const POOLER_GONE = /server login has been failing|cannot connect to server|server conn crashed|shutting down|database .* (?:removed|disabled)/i;
const POOLER_BUSY = /query_wait_timeout|no more connections allowed/i;

/** An error's code (SQLSTATE or socket) and text, its wrapped cause's first: Sequelize wraps pg's errors. */
function facts(err: unknown): { name?: string; code?: string; text: string } {
  const e = err as { name?: string; code?: string; message?: string; parent?: { code?: string; message?: string } };
  return { name: e.name, code: e.parent?.code ?? e.code, text: `${e.message ?? ''} ${e.parent?.message ?? ''}` };
}

/**
 * What a failure says about the database: `gone` (refused, dropped, shutting down or starting up),
 * `busy` (saturated or slow: no pool connection in time, a statement or a connection attempt that
 * timed out under load), or undefined (the request's own fault, or a bug). Startup retries both;
 * a request answers 503 on both; only `gone` closes the gate for every request.
 */
export function databaseTrouble(err: unknown): 'gone' | 'busy' | undefined {
  const { name, code, text } = facts(err);
  if (code === '08P01') return POOLER_BUSY.test(text) ? 'busy' : POOLER_GONE.test(text) ? 'gone' : undefined;
  const busy =
    err instanceof TimeoutError ||
    name === 'SequelizeConnectionAcquireTimeoutError' ||
    (code !== undefined && BUSY_CODES.has(code));
  const trouble =
    busy ||
    err instanceof ConnectionError ||
    (code !== undefined && GONE_CODES.has(code)) ||
    (err instanceof Error && (DROPPED_TEXT.test(text) || TIMEOUT_TEXT.test(text)));
  if (!trouble) return undefined;
  return busy || TIMEOUT_TEXT.test(text) ? 'busy' : 'gone';
}

export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof ZodError) {
    const message = err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
    return badRequest(ERRORS.SITELOG_VALIDATION, message);
  }
  const e = err as { type?: string; status?: number };
  const known = e.type ? BODY_PARSER_ERRORS[e.type] : undefined;
  if (known) return new HttpError(known);
  // SQLSTATE class 22, data exception: a value PostgreSQL cannot hold (a date out of its range, a
  // number too large). Validation should have caught it; it is still the request's fault, not a 5xx.
  if (/^22/.test(facts(err).code ?? '')) return badRequest(ERRORS.SITELOG_VALIDATION, 'a value is out of the range the database can store');
  const trouble = databaseTrouble(err);
  if (trouble) return trouble === 'busy' ? databaseBusy() : databaseUnavailable();
  // Express's and its libraries' own client errors (a bad percent-encoding, a missing file, a range
  // sendFile cannot serve) keep their status, under the registry's code for it
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    return new HttpError(BY_STATUS.get(e.status) ?? ERRORS.SITELOG_BAD_REQUEST);
  }
  return new HttpError(ERRORS.SITELOG_INTERNAL);
}

/** An error's JSON answer: its status, its headers (Retry-After, …), its code and message. */
export function sendHttpError(res: Response, http: HttpError): void {
  if (http.headers) res.set(http.headers);
  sendJson(res, JSON.stringify({ error: { code: http.code, message: http.message } }), http.status);
}

/** The one error middleware: JSON for every failure, each logged once, no stack to the client. */
export function errorHandler(logger: Logger, onUnavailable: (reason: string) => void): ErrorRequestHandler {
  return (err, req, res, _next) => {
    if (res.headersSent && (err as { code?: string }).code === 'ERR_HTTP_HEADERS_SENT') {
      // a handler finishing after its request was answered already (its deadline, the database
      // gate): nothing failed that the client did not already hear about
      (req.log ?? logger).debug({ url: req.originalUrl }, 'answered already');
      return;
    }
    const http = toHttpError(err);
    // only a database that is gone closes the gate: a busy one still serves what is not waiting
    if (http.code === ERRORS.SITELOG_DB_UNAVAILABLE.code && databaseTrouble(err) === 'gone') onUnavailable((err as Error).message);
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
