import path from 'node:path';
import express, { Router, type NextFunction, type Request, type Response } from 'express';
import { QueryTypes } from 'sequelize';
import { secretEquals } from '../auth.js';
import type { AppContext } from '../context.js';
import { ERRORS, forbidden, HttpError, notFound, tooManyRequests } from '../errors.js';
import { withConnection } from '../db/lean.js';
import { liveInstances, startHistory } from '../instances/queries.js';
import { STYPES } from '../logs/model.js';
import { getLog, listLogs } from '../logs/queries.js';
import { listLogsQuery, logId } from '../logs/schema.js';
import {
  cookies,
  createSession,
  endSession,
  LOGIN_CSRF_COOKIE,
  randomToken,
  SESSION_COOKIE,
  setCookie,
  tokensEqual,
} from './session.js';
import { escapeHtml, formatTime, instancesTable, layout } from './views.js';

// Same folder in src/ (tests) and for dist/ (PM2): assets are read from the sources.
const ASSETS = path.resolve(__dirname, '..', '..', 'src', 'console', 'assets');
const FAILED_LOGIN = 'failed console login';
const LOGIN_FAILURES_ALLOWED = 5;
const LOGIN_WINDOW_MINUTES = 15;

/** A datetime-local value ("2026-11-24T03:30") is taken as UTC; an ISO value passes as is. */
function isoOrUndefined(value: unknown): string | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(value) ? `${value}:00Z` : /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/.test(value) ? `${value}Z` : value;
}

function chartSvg(buckets: Array<{ t: number; stype: string; n: number }>, from: number, to: number, bucketSeconds: number): string {
  const width = 600;
  const height = 120;
  const slots = Math.max(1, Math.ceil((to - from) / 1000 / bucketSeconds));
  const totals = new Map<number, number>();
  for (const b of buckets) totals.set(b.t, (totals.get(b.t) ?? 0) + b.n);
  const max = Math.max(1, ...totals.values());
  const barWidth = width / slots;
  const stacked = new Map<number, number>();
  const rects = STYPES.flatMap((stype) =>
    buckets
      .filter((b) => b.stype === stype)
      .map((b) => {
        const slot = Math.floor((b.t * 1000 - from) / 1000 / bucketSeconds);
        const below = stacked.get(b.t) ?? 0;
        stacked.set(b.t, below + b.n);
        const h = (b.n / max) * (height - 10);
        const y = height - (below / max) * (height - 10) - h;
        return `<rect class="s-${stype}" x="${(slot * barWidth).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, barWidth - 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${escapeHtml(stype)}: ${b.n}</title></rect>`;
      }),
  );
  const legend = STYPES.map((s) => `<span><i class="s-${s}"></i>${s}</span>`).join('');
  const unit = bucketSeconds === 60 ? 'minute' : `${Math.round(bucketSeconds / 60)} minutes`;
  return `<figure><svg class="chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="Entries per ${unit} by type, peak ${max}">${rects.join('')}</svg>
<figcaption class="legend">Entries per ${unit} by type, ${escapeHtml(formatTime(new Date(from).toISOString()))} to ${escapeHtml(formatTime(new Date(to).toISOString()))} (peak ${max}). ${legend}</figcaption></figure>`;
}

export function consoleRouter(ctx: AppContext): Router {
  const router = Router();
  const form = express.urlencoded({ extended: false, limit: '8kb' });

  router.get('/console/assets/:file', (req, res, next) => {
    const file = req.params['file'];
    if (file !== 'console.css' && file !== 'console.js') return next(notFound());
    res.sendFile(path.join(ASSETS, file), { maxAge: '1h' });
  });

  router.get('/console/login', (req, res) => {
    const csrf = randomToken();
    setCookie(req, res, LOGIN_CSRF_COOKIE, csrf, 3600);
    res.type('html').send(loginPage(csrf));
  });

  router.post('/console/login', form, async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (!tokensEqual(cookies(req)[LOGIN_CSRF_COOKIE], typeof body['_csrf'] === 'string' ? body['_csrf'] : undefined)) {
      throw forbidden('the form has expired or was not sent by this site; reload the login page');
    }
    const ip = req.ip ?? null;
    const [recent] = await ctx.sequelize.query<{ n: string }>(
      `SELECT count(*) AS n FROM system_logs WHERE stype = 'security' AND ip = $1 AND description = $2
       AND "timestamp" > now() - make_interval(mins => $3)`,
      { bind: [ip, FAILED_LOGIN, LOGIN_WINDOW_MINUTES], type: QueryTypes.SELECT },
    );
    if (Number(recent?.n) >= LOGIN_FAILURES_ALLOWED) {
      throw tooManyRequests(`too many failed logins from this address; try again in ${LOGIN_WINDOW_MINUTES} minutes`, 60);
    }
    const password = typeof body['password'] === 'string' ? body['password'] : '';
    if (!secretEquals(ctx.config.ADMIN_PASSWORD, password)) {
      await ctx.addSystemLog({ stype: 'security', description: FAILED_LOGIN, ip, userAgent: req.get('user-agent')?.slice(0, 512) ?? null, requestId: req.id });
      const csrf = randomToken();
      setCookie(req, res, LOGIN_CSRF_COOKIE, csrf, 3600);
      res.status(401).type('html').send(loginPage(csrf, 'Wrong password.'));
      return;
    }
    const { token, maxAge } = await createSession(ctx.sequelize);
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

  const checkCsrf = (req: Request) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (!tokensEqual(req.session?.csrf, typeof body['_csrf'] === 'string' ? body['_csrf'] : undefined)) {
      throw forbidden('missing or wrong CSRF token');
    }
  };

  router.post('/console/logout', form, async (req, res) => {
    checkCsrf(req);
    await endSession(ctx.sequelize, req);
    setCookie(req, res, SESSION_COOKIE, '', 0);
    res.redirect(303, '/console/login');
  });

  router.get('/console', async (req, res) => {
    const rows = await withConnection(ctx.sequelize, liveInstances);
    res.type('html').send(
      layout({
        title: 'Instances',
        nav: 'instances',
        csrf: req.session!.csrf,
        script: true,
        body: `<h1>Instances</h1><p class="muted">Every live web process of every host sharing this database. A process that stops disappears at once.</p>${instancesTable(rows)}`,
      }),
    );
  });

  router.get('/console/starts', async (req, res) => {
    const starts = await withConnection(ctx.sequelize, (run) => startHistory(run, { limit: 50 }));
    const items = starts
      .map(
        (s) => `<section class="start"><h2>server started <time>${escapeHtml(formatTime(s.timestamp))}</time> on ${escapeHtml(s.host)}</h2>
<ul>${s.entries
          .map(
            (e) =>
              `<li class="event-${e.event}"><time>${escapeHtml(formatTime(e.timestamp))}</time> instance ${e.instance} <strong>${e.event}</strong> (pid ${e.pid})</li>`,
          )
          .join('')}</ul></section>`,
      )
      .join('\n');
    res.type('html').send(
      layout({
        title: 'Starts',
        nav: 'starts',
        csrf: req.session!.csrf,
        body: `<h1>Start history</h1><p class="muted">One "server started" per start of a host; under it each instance that came up, came back after dying, or was replaced by a reload.</p>${items || '<p>No start yet.</p>'}`,
      }),
    );
  });

  router.get('/console/logs', async (req, res) => {
    const raw = req.query as Record<string, unknown>;
    const params = {
      ...(typeof raw['stype'] === 'string' && raw['stype'] !== '' && { stype: raw['stype'] }),
      ...(typeof raw['q'] === 'string' && raw['q'] !== '' && { q: raw['q'] }),
      ...(isoOrUndefined(raw['since']) && { since: isoOrUndefined(raw['since']) }),
      ...(isoOrUndefined(raw['until']) && { until: isoOrUndefined(raw['until']) }),
      ...(typeof raw['before'] === 'string' && raw['before'] !== '' && { before: raw['before'] }),
      limit: '50',
    };
    const parsed = listLogsQuery.safeParse(params);
    let error = '';
    let page: Awaited<ReturnType<typeof listLogs>> = { items: [], next: null };
    if (!parsed.success) error = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    else {
      try {
        page = await listLogs(ctx.sequelize, parsed.data);
      } catch (err) {
        if (!(err instanceof HttpError) || err.status !== 400) throw err;
        error = err.message;
      }
    }
    const to = parsed.success && parsed.data.until ? parsed.data.until.getTime() : Date.now();
    const from = parsed.success && parsed.data.since ? parsed.data.since.getTime() : to - 3600_000;
    const bucketSeconds = Math.max(60, Math.ceil((to - from) / 1000 / 60 / 60) * 60);
    const buckets = parsed.success && to > from
      ? await ctx.sequelize.query<{ t: number; stype: string; n: number }>(
          `SELECT (floor(extract(epoch FROM "timestamp") / $3) * $3)::float8 AS t, stype, count(*)::int AS n
           FROM system_logs WHERE "timestamp" >= $1 AND "timestamp" < $2
           ${parsed.data.stype ? 'AND stype = $4' : ''} GROUP BY 1, 2 ORDER BY 1`,
          {
            bind: [new Date(from).toISOString(), new Date(to).toISOString(), bucketSeconds, ...(parsed.data.stype ? [parsed.data.stype] : [])],
            type: QueryTypes.SELECT,
          },
        )
      : [];
    const keep = new URLSearchParams(Object.entries(params).filter(([k]) => k !== 'before' && k !== 'limit'));
    const nextLink = page.next ? `/console/logs?${new URLSearchParams([...keep, ['before', page.next]]).toString()}` : undefined;
    const value = (k: string) => escapeHtml(typeof raw[k] === 'string' ? raw[k] : '');
    const rows = page.items
      .map(
        (e) => `<tr><td><a href="/console/logs/${e.id}">#${e.id}</a></td><td><time>${escapeHtml(formatTime(e.timestamp))}</time></td><td>${e.stype}</td>
<td class="description">${escapeHtml(e.description)}</td><td>${escapeHtml(e.host)}${e.instance === null ? '' : `/${e.instance}`}</td><td>${escapeHtml(e.ip)}</td></tr>`,
      )
      .join('\n');
    res.status(error ? 400 : 200).type('html').send(
      layout({
        title: 'Logs',
        nav: 'logs',
        csrf: req.session!.csrf,
        body: `<h1>Logs</h1>
<form class="filters" method="get" action="/console/logs" role="search">
<label for="f-stype">Type<select id="f-stype" name="stype"><option value="">all</option>${STYPES.map((s) => `<option${raw['stype'] === s ? ' selected' : ''}>${s}</option>`).join('')}</select></label>
<label for="f-q">Text<input id="f-q" name="q" type="search" value="${value('q')}" maxlength="200"></label>
<label for="f-since">Since (UTC)<input id="f-since" name="since" type="datetime-local" step="1" value="${value('since')}"></label>
<label for="f-until">Until (UTC)<input id="f-until" name="until" type="datetime-local" step="1" value="${value('until')}"></label>
<button type="submit">Filter</button> <a href="/console/logs">Clear</a></form>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
${chartSvg(buckets, from, to, bucketSeconds)}
<table id="logs"><caption>Newest first${parsed.success && parsed.data.before ? ' (older page)' : ''}</caption>
<thead><tr><th scope="col">Entry</th><th scope="col">Time (UTC)</th><th scope="col">Type</th><th scope="col">Description</th><th scope="col">Host/instance</th><th scope="col">IP</th></tr></thead>
<tbody>${rows || '<tr><td colspan="6">No entries.</td></tr>'}</tbody></table>
<p>${nextLink ? `<a id="older" rel="next" href="${escapeHtml(nextLink)}">Older entries →</a>` : '<span class="muted">End of the log.</span>'}</p>`,
      }),
    );
  });

  router.get('/console/logs/:id', async (req, res) => {
    const id = logId.safeParse(req.params['id']);
    const entry = id.success ? await getLog(ctx.sequelize, id.data) : undefined;
    if (!entry) throw notFound('no such log entry');
    const fields = Object.entries(entry)
      .map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td class="description">${escapeHtml(v)}</td></tr>`)
      .join('');
    res.type('html').send(
      layout({
        title: `Entry #${entry.id}`,
        nav: 'logs',
        csrf: req.session!.csrf,
        body: `<h1>Entry #${entry.id}</h1><table id="entry">${fields}</table><p><a href="/console/logs">← All logs</a> · JSON: <a href="/api/logs/${entry.id}">/api/logs/${entry.id}</a></p>`,
      }),
    );
  });

  return router;
}

function loginPage(csrf: string, error = ''): string {
  return layout({
    title: 'Log in',
    nav: 'login',
    body: `<h1>Log in</h1>
${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form class="login" method="post" action="/console/login">
<input type="hidden" name="_csrf" value="${escapeHtml(csrf)}">
<label for="password">Admin password<input id="password" name="password" type="password" autocomplete="current-password" required autofocus></label>
<button type="submit">Log in</button></form>
<p class="muted">The password is ADMIN_PASSWORD; on a local stack it was generated into DATA_DIR/secrets.env.</p>`,
  });
}
