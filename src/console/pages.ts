import type { startHistory } from '../instances/queries.js';
import { STYPES } from '../logs/model.js';
import type { LogEntry } from '../logs/model.js';
import type { Histogram } from '../logs/queries.js';
import { LOGIN_FAILURES_ALLOWED, LOGIN_WINDOW_MINUTES, type SecurityFacts } from './login.js';
import { SESSION_IDLE_MINUTES } from './session.js';
import { escapeHtml, formatTime, instancesTable, layout, liveTable, type InstanceRow } from './views.js';

// The console's pages: pure functions of plain data (a handler fetches, then renders one of these).

type Starts = Awaited<ReturnType<typeof startHistory>>;

export function loginPage(csrf: string, error = ''): string {
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

export function instancesPage(csrf: string, rows: InstanceRow[], host: string): string {
  return layout({
    title: 'Instances',
    nav: 'instances',
    csrf,
    script: true,
    body: `<h1>Instances</h1>${liveTable(host)}
<p class="muted">Every live web process of every host sharing this database. A process that stops disappears at once.</p>${instancesTable(rows)}`,
  });
}

export function startsPage(csrf: string, starts: Starts): string {
  const event = (e: Starts[number]['entries'][number]) =>
    `<li class="event-${e.event}"><time>${escapeHtml(formatTime(e.timestamp))}</time> instance ${e.instance} <strong>${e.event}</strong> (pid ${e.pid})</li>`;
  const items = starts
    .map((s) => `<section class="start"><h2>server started <time>${escapeHtml(formatTime(s.timestamp))}</time> on ${escapeHtml(s.host)}</h2>
<ul>${s.entries.map(event).join('')}</ul></section>`)
    .join('\n');
  return layout({
    title: 'Starts',
    nav: 'starts',
    csrf,
    body: `<h1>Start history</h1><p class="muted">One "server started" per start of a host; under it each instance that came up, came back after dying, or was replaced by a reload.</p>${items || '<p>No start yet.</p>'}`,
  });
}

/** A round step for about `count` ticks of a count up to `max`: 1, 2 or 5 times a power of ten, at least 1. */
export function niceStep(max: number, count: number): number {
  const raw = Math.max(max, 1) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return Math.max(1, [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw)!);
}

/** Time ticks for a range: whole minutes, hours or days, about six of them, labelled in UTC. */
export function timeTicks(from: number, to: number): Array<{ at: number; label: string }> {
  const MINUTE = 60_000;
  const steps = [1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080].map((m) => m * MINUTE);
  const step = steps.find((s) => (to - from) / s <= 6) ?? steps[steps.length - 1]!;
  const days = to - from > 2 * 1440 * MINUTE;
  const ticks: Array<{ at: number; label: string }> = [];
  for (let at = Math.ceil(from / step) * step; at <= to; at += step) {
    const iso = new Date(at).toISOString();
    ticks.push({ at, label: days ? iso.slice(5, 10) : iso.slice(11, 16) });
  }
  return ticks;
}

/** Entries per bucket by type, stacked, with a count axis and a time axis (UTC); each bar's title has its count. */
export function chartSvg(histogram: Histogram): string {
  const { buckets, from, to, bucketSeconds } = histogram;
  const [width, height, left, bottom, top] = [640, 150, 44, 22, 8];
  const plot = { w: width - left - 8, h: height - bottom - top };
  const totals = new Map<number, number>();
  for (const b of buckets) totals.set(b.t, (totals.get(b.t) ?? 0) + b.n);
  const peak = Math.max(0, ...totals.values());
  const step = niceStep(peak, 4);
  const max = Math.max(step, Math.ceil(peak / step) * step);
  const x = (ms: number) => left + ((ms - from) / Math.max(1, to - from)) * plot.w;
  const y = (n: number) => top + plot.h - (n / max) * plot.h;
  const barWidth = Math.max(1, (bucketSeconds * 1000 * plot.w) / Math.max(1, to - from) - 1);
  const stacked = new Map<number, number>();
  const rects = STYPES.flatMap((stype) =>
    buckets
      .filter((b) => b.stype === stype)
      .map((b) => {
        const below = stacked.get(b.t) ?? 0;
        stacked.set(b.t, below + b.n);
        return `<rect class="s-${stype}" x="${x(b.t * 1000).toFixed(1)}" y="${y(below + b.n).toFixed(1)}" width="${barWidth.toFixed(1)}" height="${(y(below) - y(below + b.n)).toFixed(1)}"><title>${escapeHtml(stype)}: ${b.n}</title></rect>`;
      }),
  );
  const yTicks = Array.from({ length: Math.round(max / step) + 1 }, (_, k) => k * step).map(
    (n) => `<line class="grid" x1="${left}" x2="${left + plot.w}" y1="${y(n).toFixed(1)}" y2="${y(n).toFixed(1)}"/><text class="tick" x="${left - 6}" y="${(y(n) + 4).toFixed(1)}" text-anchor="end">${n}</text>`,
  );
  const xTicks = timeTicks(from, to).map(
    (t) => `<line class="axis" x1="${x(t.at).toFixed(1)}" x2="${x(t.at).toFixed(1)}" y1="${top + plot.h}" y2="${top + plot.h + 4}"/><text class="tick" x="${x(t.at).toFixed(1)}" y="${height - 6}" text-anchor="middle">${t.label}</text>`,
  );
  const axes = `<line class="axis" x1="${left}" x2="${left + plot.w}" y1="${top + plot.h}" y2="${top + plot.h}"/><line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${top + plot.h}"/>`;
  const legend = STYPES.map((s) => `<span><i class="s-${s}"></i>${s}</span>`).join('');
  const unit = bucketSeconds === 60 ? 'minute' : `${Math.round(bucketSeconds / 60)} minutes`;
  const range = `${escapeHtml(formatTime(new Date(from).toISOString()))} to ${escapeHtml(formatTime(new Date(to).toISOString()))}`;
  return `<figure><svg class="chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="Entries per ${unit} by type, peak ${peak}">${yTicks.join('')}${rects.join('')}${axes}${xTicks.join('')}</svg>
<figcaption class="legend">Entries per ${unit} by type, ${range} UTC (peak ${peak}). ${legend}</figcaption></figure>`;
}

export type LogsView = {
  /** The filters as the form sent them, to show them again. */
  form: Partial<Record<'stype' | 'q' | 'since' | 'until', string>>;
  error: string;
  entries: LogEntry[];
  olderPage: boolean;
  nextLink: string | undefined;
  histogram: Histogram;
};

function logRow(e: LogEntry): string {
  return `<tr><td><a href="/console/logs/${e.id}">#${e.id}</a></td><td><time>${escapeHtml(formatTime(e.timestamp))}</time></td><td>${e.stype}</td>
<td class="description">${escapeHtml(e.description)}</td><td>${escapeHtml(e.host)}${e.instance === null ? '' : `/${e.instance}`}</td><td>${escapeHtml(e.ip)}</td></tr>`;
}

export function logsPage(csrf: string, view: LogsView): string {
  const value = (k: keyof LogsView['form']) => escapeHtml(view.form[k] ?? '');
  const rows = view.entries.map(logRow).join('\n');
  const options = STYPES.map((s) => `<option${view.form.stype === s ? ' selected' : ''}>${s}</option>`).join('');
  return layout({
    title: 'Logs',
    nav: 'logs',
    csrf,
    body: `<h1>Logs</h1>
<form class="filters" method="get" action="/console/logs" role="search">
<label for="f-stype">Type<select id="f-stype" name="stype"><option value="">all</option>${options}</select></label>
<label for="f-q">Text<input id="f-q" name="q" type="search" value="${value('q')}" maxlength="200"></label>
<label for="f-since">Since (UTC)<input id="f-since" name="since" type="datetime-local" step="1" value="${value('since')}"></label>
<label for="f-until">Until (UTC)<input id="f-until" name="until" type="datetime-local" step="1" value="${value('until')}"></label>
<button type="submit">Filter</button> <a href="/console/logs">Clear</a></form>
${view.error ? `<p class="error" role="alert">${escapeHtml(view.error)}</p>` : ''}
${chartSvg(view.histogram)}
<table id="logs"><caption>Newest first${view.olderPage ? ' (older page)' : ''}</caption>
<thead><tr><th scope="col">Entry</th><th scope="col">Time (UTC)</th><th scope="col">Type</th><th scope="col">Description</th><th scope="col">Host/instance</th><th scope="col">IP</th></tr></thead>
<tbody>${rows || '<tr><td colspan="6">No entries.</td></tr>'}</tbody></table>
<p>${view.nextLink ? `<a id="older" rel="next" href="${escapeHtml(view.nextLink)}">Older entries →</a>` : '<span class="muted">End of the log.</span>'}</p>`,
  });
}

export function entryPage(csrf: string, entry: LogEntry): string {
  const fields = Object.entries(entry)
    .map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td class="description">${escapeHtml(v)}</td></tr>`)
    .join('');
  return layout({
    title: `Entry #${entry.id}`,
    nav: 'logs',
    csrf,
    body: `<h1>Entry #${entry.id}</h1><table id="entry">${fields}</table><p><a href="/console/logs">← All logs</a> · JSON: <a href="/api/logs/${entry.id}">/api/logs/${entry.id}</a></p>`,
  });
}

/** A form of the console: a POST with the session's CSRF token and one button. */
const postForm = (action: string, csrf: string, button: string, fields: Record<string, string> = {}) =>
  `<form method="post" action="${action}"><input type="hidden" name="_csrf" value="${escapeHtml(csrf)}">${Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`)
    .join('')}<button type="submit">${button}</button></form>`;

export function securityPage(csrf: string, facts: SecurityFacts): string {
  const time = (d: Date | undefined) => `<time>${escapeHtml(d ? formatTime(d.toISOString()) : '')}</time>`;
  const locked = facts.locked
    .map((c) => `<tr><td>${escapeHtml(c.client)}</td><td>${c.failures}</td><td>${time(c.until)}</td><td>${postForm('/console/security/unlock', csrf, 'Unlock', { address: c.client })}</td></tr>`)
    .join('\n');
  const recent = facts.recent.map((c) => `<tr><td>${escapeHtml(c.client)}</td><td>${c.failures}</td><td>${time(c.last)}</td></tr>`).join('\n');
  return layout({
    title: 'Security',
    nav: 'security',
    csrf,
    body: `<h1>Security</h1>
<p class="muted">An address (an IPv6 client by its /64) may fail ${LOGIN_FAILURES_ALLOWED} logins in ${LOGIN_WINDOW_MINUTES} minutes; then it waits, or is unlocked here. Every unlock is a <code>security</code> entry.</p>
<table id="locked"><caption>Locked now</caption>
<thead><tr><th scope="col">Address</th><th scope="col">Failures</th><th scope="col">Lifts by itself at</th><th scope="col"></th></tr></thead>
<tbody>${locked || '<tr><td colspan="4">No address is locked.</td></tr>'}</tbody></table>
<table id="failures"><caption>Failed logins, last 24 hours</caption>
<thead><tr><th scope="col">Address</th><th scope="col">Failures</th><th scope="col">Last</th></tr></thead>
<tbody>${recent || '<tr><td colspan="3">No failed login.</td></tr>'}</tbody></table>
<h2>Sessions</h2><p class="muted">Ends every console session, on every instance and host (sessions also end after ${SESSION_IDLE_MINUTES} minutes unused, and when ADMIN_PASSWORD changes).</p>
${postForm('/console/logout-everywhere', csrf, 'Log out everywhere')}`,
  });
}
