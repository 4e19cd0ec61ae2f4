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
import { listLogsQuery, logId } from '../logs/schema.js';
import { attemptLogin, LOGIN_WINDOW_MINUTES, securityFacts, unlockClient, type Origin } from './login.js';
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

export function consoleRouter(ctx: AppContext): Router {
  // One spelling per route: /CONSOLE/Login or /console/login/ reach no handler (nginx limits the
  // login form's own spelling; a lenient route would be a way around it).
  const router = Router({ caseSensitive: true, strict: true });
  const form = express.urlencoded({ extended: false, limit: '8kb' });
  const origin = (req: Request): Origin => ({
    ip: req.ip ?? null,
    userAgent: req.get('user-agent')?.slice(0, 512) ?? null,
    requestId: req.id,
    host: ctx.config.SITELOG_HOST,
    instance: ctx.config.INSTANCE,
  });
  const checkCsrf = (req: Request, given: string | undefined) => {
    if (!tokensEqual(req.session?.csrf, given)) throw forbidden('missing or wrong CSRF token');
  };
  const newLoginForm = (req: Request, res: Response) => {
    const csrf = randomToken();
    setCookie(req, res, LOGIN_CSRF_COOKIE, csrf, 3600);
    return csrf;
  };

  router.get('/console/assets/:file', (req, res, next) => {
    const file = req.params['file'];
    if (file !== 'console.css' && file !== 'console.js') return next(notFound());
    res.sendFile(path.join(ASSETS, file), { maxAge: '1h' });
  });

  // the one lenient spelling: a person typing the console's address with a slash
  router.get('/console/', (_req, res) => res.redirect(301, '/console'));

  // Every console page holds a CSRF token or private data: no cache keeps it, nor the back button.
  router.use('/console', (_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });

  router.get('/console/login', (req, res) => {
    res.type('html').send(loginPage(newLoginForm(req, res)));
  });

  router.post('/console/login', form, async (req, res) => {
    const body = csrfForm.parse(req.body ?? {});
    if (!tokensEqual(cookies(req)[LOGIN_CSRF_COOKIE], body._csrf)) {
      throw forbidden('the form has expired or was not sent by this site; reload the login page');
    }
    const outcome = await attemptLogin(ctx.sequelize, body.password ?? '', ctx.config.ADMIN_PASSWORD, origin(req)).catch((err: unknown) => {
      if (databaseTrouble(err)) throw err;
      req.log.error({ err }, 'a login attempt could not be recorded; refused');
      throw loginUnrecorded();
    });
    if (outcome === 'locked') {
      throw tooManyRequests(`too many failed logins from this address; try again in ${LOGIN_WINDOW_MINUTES} minutes`, 60);
    }
    if (outcome === 'wrong') {
      res.status(401).type('html').send(loginPage(newLoginForm(req, res), 'Wrong password.'));
      return;
    }
    const { token, maxAge } = await createSession(ctx.sequelize, ctx.config.ADMIN_PASSWORD);
    setCookie(req, res, SESSION_COOKIE, token, maxAge);
    setCookie(req, res, LOGIN_CSRF_COOKIE, '', 0);
    res.redirect(303, '/console');
  });

  // Everything below needs a session.
  router.use('/console', (req: Request, res: Response, next: NextFunction) => {
    if (req.session) return next();
    if (req.method === 'GET' || req.method === 'HEAD') return res.redirect(303, '/console/login');
    next(new HttpError(ERRORS.SITELOG_UNAUTHORIZED, 'log in first'));
  });

  router.post('/console/logout', form, async (req, res) => {
    checkCsrf(req, csrfForm.parse(req.body ?? {})._csrf);
    await endSession(ctx.sequelize, req);
    setCookie(req, res, SESSION_COOKIE, '', 0);
    res.redirect(303, '/console/login');
  });

  router.post('/console/logout-everywhere', form, async (req, res) => {
    checkCsrf(req, csrfForm.parse(req.body ?? {})._csrf);
    const ended = await endAllSessions(ctx.sequelize);
    const { ip, userAgent, requestId } = origin(req);
    await ctx.addSystemLog({ stype: 'security', description: `console: logged out everywhere (${ended} sessions)`, ip, userAgent, requestId });
    setCookie(req, res, SESSION_COOKIE, '', 0);
    res.redirect(303, '/console/login');
  });

  router.get('/console/security', async (req, res) => {
    res.type('html').send(securityPage(req.session!.csrf, await securityFacts(ctx.sequelize)));
  });

  router.post('/console/security/unlock', form, async (req, res) => {
    checkCsrf(req, csrfForm.parse(req.body ?? {})._csrf);
    const parsed = unlockForm.safeParse(req.body ?? {});
    if (!parsed.success) throw badRequest(ERRORS.SITELOG_VALIDATION, 'address: must be an IP address or an IPv6 /64');
    await unlockClient(ctx.sequelize, parsed.data.address, origin(req));
    res.redirect(303, '/console/security');
  });

  router.get('/console', async (req, res) => {
    const rows = await withConnection(ctx.sequelize, liveInstances);
    res.type('html').send(instancesPage(req.session!.csrf, rows, ctx.config.SITELOG_HOST));
  });

  router.get('/console/starts', async (req, res) => {
    const starts = await withConnection(ctx.sequelize, (run) => startHistory(run, { limit: 50 }));
    res.type('html').send(startsPage(req.session!.csrf, starts));
  });

  router.get('/console/logs', async (req, res) => {
    const view = await logsView(ctx.sequelize, logsForm.parse(req.query), req.inFlight);
    res.status(view.error ? 400 : 200).type('html').send(logsPage(req.session!.csrf, view));
  });

  router.get('/console/logs/:id', async (req, res) => {
    const id = logId.safeParse(req.params['id']);
    const entry = id.success ? await getLog(ctx.sequelize, id.data) : undefined;
    if (!entry) throw notFound('no such log entry');
    res.type('html').send(entryPage(req.session!.csrf, parseEntry(entry)));
  });

  return router;
}
