import path from 'node:path';
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import type { Sequelize } from 'sequelize';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { badRequest, databaseTrouble, ERRORS, forbidden, HttpError, notFound, tooManyRequests } from '../errors.js';
import { withConnection } from '../db/lean.js';
import { withReadConnection } from '../db/replicas.js';
import { liveInstances, startHistory } from '../instances/queries.js';
import { getLog, histogram, listLogs, parseEntry } from '../logs/queries.js';
import { DEFAULT_LIMIT, listLogsQuery, logId, userAgentOf } from '../logs/schema.js';
import { attemptLogin, LOGIN_WINDOW_MINUTES, securityFacts, unlockClient, type LoginOutcome, type Origin } from './login.js';
import {
  cookies,
  createSession,
  endAllSessions,
  endSession,
  LOGIN_CSRF_COOKIE,
  randomToken,
  SESSION_COOKIE,
  setCookie,
  tokensEqual,
} from './session.js';
import { entryPage, instancesPage, loginPage, logsPage, securityPage, startsPage, type LogsView } from './pages.js';
import type { Cancellation } from '../in-flight.js';

// Same folder in src/ (tests) and for dist/ (PM2): assets are read from the sources.
const ASSETS = path.resolve(__dirname, '..', '..', 'src', 'console', 'assets');
/** Entries per page of the log browser (the API allows up to MAX_LIMIT). */
const LOGS_PAGE = 50;

/** A form field: a non-empty string, or nothing (an empty input, a repeated parameter). */
const field = z.preprocess((v) => (typeof v === 'string' && v !== '' ? v : undefined), z.string().optional());
const logsForm = z.object({ stype: field, q: field, since: field, until: field, before: field });
type LogsForm = z.infer<typeof logsForm>;
const csrfForm = z.object({ _csrf: field, password: field });
/** The security view's unlock form: a client as the view lists it, an address or an IPv6 /64. */
const unlockForm = z.object({ address: z.union([z.ipv4(), z.ipv6(), z.cidrv6()]) });

/** A refused login attempt whose failure could not be recorded: refused, never checked uncounted. */
const loginUnrecorded = () => new HttpError(ERRORS.SITELOG_DB_UNAVAILABLE, 'the login attempt could not be recorded; try again', { 'Retry-After': '1' });

/** A datetime-local value ("2026-11-24T03:30", no zone) is taken as UTC; an ISO value passes as is. */
const asUtc = (v: string | undefined) => (v && /^\d{4}-\d\d-\d\dT\d\d(:\d\d){1,2}$/.test(v) ? `${v}${v.length === 16 ? ':00' : ''}Z` : v);

/** The log browser's data (from a read replica when there is one): a page of entries and the chart of its range, or why the filters are wrong. */
async function logsView(sequelize: Sequelize, form: LogsForm, signal: Cancellation): Promise<LogsView> {
  const filters = { stype: form.stype, q: form.q, since: asUtc(form.since), until: asUtc(form.until), before: form.before };
  const parsed = listLogsQuery.safeParse({ ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v !== undefined)), limit: String(LOGS_PAGE) });
  const to = parsed.data?.until?.getTime() ?? Date.now();
  const from = parsed.data?.since?.getTime() ?? to - 3600_000;
  const view: LogsView = { form, error: '', entries: [], olderPage: form.before !== undefined, nextLink: undefined, histogram: { buckets: [], from, to, bucketSeconds: 60 } };
  if (!parsed.success) return { ...view, error: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') };
  const page = await listLogs(sequelize, parsed.data, signal).catch((err: unknown) => {
    if (err instanceof HttpError && err.status === 400) return err;
    throw err;
  });
  if (page instanceof HttpError) return { ...view, error: page.message };
  const keep = Object.entries({ ...form, before: undefined }).filter((e): e is [string, string] => e[1] !== undefined);
  const nextLink = page.next ? `/console/logs?${new URLSearchParams([...keep, ['before', page.next]]).toString()}` : undefined;
  const chart = await withReadConnection(sequelize, (run) => histogram(run, { from, to, stype: parsed.data.stype }), signal);
  return { ...view, entries: page.items.map(parseEntry), nextLink, histogram: chart };
}

/** Who is asking: the security entries of a login, a logout everywhere or an unlock name it. */
const originOf = (ctx: AppContext, req: Request): Origin => ({
  ip: req.ip ?? null,
  userAgent: userAgentOf(req),
  requestId: req.id,
  host: ctx.config.SITELOG_HOST,
  instance: ctx.config.INSTANCE,
});

/** A form posted by a page of this session: its CSRF token is the session's. */
function checkCsrf(req: Request): void {
  if (!tokensEqual(req.session?.csrf, csrfForm.parse(req.body ?? {})._csrf)) throw forbidden('missing or wrong CSRF token');
}

/** A login form's CSRF token, also set as a cookie: the form posted back must carry both. */
function newLoginForm(req: Request, res: Response): string {
  const csrf = randomToken();
  setCookie(req, res, LOGIN_CSRF_COOKIE, csrf, 3600);
  return csrf;
}

/** The attempt, counted by the throttle: 429 while its address is locked out, refused when it could not be counted. */
async function countedAttempt(ctx: AppContext, req: Request, password: string): Promise<Exclude<LoginOutcome, 'locked'>> {
  const outcome = await attemptLogin(ctx.sequelize, password, ctx.config.ADMIN_PASSWORD, originOf(ctx, req)).catch((err: unknown) => {
    if (databaseTrouble(err)) throw err;
    req.log.error({ err }, 'a login attempt could not be recorded; refused');
    throw loginUnrecorded();
  });
  if (outcome === 'locked') throw tooManyRequests(`too many failed logins from this address; try again in ${LOGIN_WINDOW_MINUTES} minutes`, 60);
  return outcome;
}

type Handler = (req: Request, res: Response, next: NextFunction) => unknown;

function asset(req: Request, res: Response, next: NextFunction): void {
  const file = req.params['file'];
  if (file !== 'console.css' && file !== 'console.js') return next(notFound());
  res.sendFile(path.join(ASSETS, file), { maxAge: '1h' });
}

/** Every console page holds a CSRF token or private data: no cache keeps it, nor the back button. */
function noStore(_req: Request, res: Response, next: NextFunction): void {
  res.setHeader('Cache-Control', 'no-store');
  next();
}

function sessionRequired(req: Request, res: Response, next: NextFunction): void {
  if (req.session) return next();
  if (req.method === 'GET' || req.method === 'HEAD') return res.redirect(303, '/console/login');
  next(new HttpError(ERRORS.SITELOG_UNAUTHORIZED, 'log in first'));
}

function loginForm(req: Request, res: Response): void {
  res.type('html').send(loginPage(newLoginForm(req, res)));
}

const logIn = (ctx: AppContext): Handler => async (req, res) => {
  const body = csrfForm.parse(req.body ?? {});
  if (!tokensEqual(cookies(req)[LOGIN_CSRF_COOKIE], body._csrf)) {
    throw forbidden('the form has expired or was not sent by this site; reload the login page');
  }
  if ((await countedAttempt(ctx, req, body.password ?? '')) === 'wrong') {
    res.status(401).type('html').send(loginPage(newLoginForm(req, res), 'Wrong password.'));
    return;
  }
  const { token, maxAge } = await createSession(ctx.sequelize, ctx.config.ADMIN_PASSWORD);
  setCookie(req, res, SESSION_COOKIE, token, maxAge);
  setCookie(req, res, LOGIN_CSRF_COOKIE, '', 0);
  res.redirect(303, '/console');
};

const logOut = (ctx: AppContext): Handler => async (req, res) => {
  checkCsrf(req);
  await endSession(ctx.sequelize, req);
  setCookie(req, res, SESSION_COOKIE, '', 0);
  res.redirect(303, '/console/login');
};

const logOutEverywhere = (ctx: AppContext): Handler => async (req, res) => {
  checkCsrf(req);
  const ended = await endAllSessions(ctx.sequelize);
  const { ip, userAgent, requestId } = originOf(ctx, req);
  await ctx.addSystemLog({ stype: 'security', description: `console: logged out everywhere (${ended} sessions)`, ip, userAgent, requestId });
  setCookie(req, res, SESSION_COOKIE, '', 0);
  res.redirect(303, '/console/login');
};

const security = (ctx: AppContext): Handler => async (req, res) => {
  res.type('html').send(securityPage(req.session!.csrf, await securityFacts(ctx.sequelize)));
};

const unlock = (ctx: AppContext): Handler => async (req, res) => {
  checkCsrf(req);
  const parsed = unlockForm.safeParse(req.body ?? {});
  if (!parsed.success) throw badRequest(ERRORS.SITELOG_VALIDATION, 'address: must be an IP address or an IPv6 /64');
  await unlockClient(ctx.sequelize, parsed.data.address, originOf(ctx, req));
  res.redirect(303, '/console/security');
};

const instances = (ctx: AppContext): Handler => async (req, res) => {
  const rows = await withConnection(ctx.sequelize, liveInstances);
  res.type('html').send(instancesPage(req.session!.csrf, rows, ctx.config.SITELOG_HOST));
};

const starts = (ctx: AppContext): Handler => async (req, res) => {
  const history = await withConnection(ctx.sequelize, (run) => startHistory(run, { limit: DEFAULT_LIMIT }));
  res.type('html').send(startsPage(req.session!.csrf, history));
};

const logs = (ctx: AppContext): Handler => async (req, res) => {
  const view = await logsView(ctx.sequelize, logsForm.parse(req.query), req.inFlight);
  res.status(view.error ? 400 : 200).type('html').send(logsPage(req.session!.csrf, view));
};

const entry = (ctx: AppContext): Handler => async (req, res) => {
  const id = logId.safeParse(req.params['id']);
  const found = id.success ? await getLog(ctx.sequelize, id.data) : undefined;
  if (!found) throw notFound('no such log entry');
  res.type('html').send(entryPage(req.session!.csrf, parseEntry(found)));
};

export function consoleRouter(ctx: AppContext): Router {
  // One spelling per route: /CONSOLE/Login or /console/login/ reach no handler (nginx limits the
  // login form's own spelling; a lenient route would be a way around it).
  const router = Router({ caseSensitive: true, strict: true });
  const form = express.urlencoded({ extended: false, limit: '8kb' });
  router.get('/console/assets/:file', asset);
  // the one lenient spelling: a person typing the console's address with a slash
  router.get('/console/', (_req, res) => res.redirect(301, '/console'));
  router.use('/console', noStore);
  router.get('/console/login', loginForm);
  router.post('/console/login', form, logIn(ctx));
  // Everything below needs a session.
  router.use('/console', sessionRequired);
  router.post('/console/logout', form, logOut(ctx));
  router.post('/console/logout-everywhere', form, logOutEverywhere(ctx));
  router.get('/console/security', security(ctx));
  router.post('/console/security/unlock', form, unlock(ctx));
  router.get('/console', instances(ctx));
  router.get('/console/starts', starts(ctx));
  router.get('/console/logs', logs(ctx));
  router.get('/console/logs/:id', entry(ctx));
  return router;
}
