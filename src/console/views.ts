// Server-rendered HTML of the console: no framework, no CDN, every value escaped.

export const escapeHtml = (value: string | number | null | undefined): string =>
  String(value ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

export type Nav = 'instances' | 'starts' | 'logs' | 'security' | 'login';

export function layout(opts: { title: string; nav: Nav; csrf?: string; body: string; script?: boolean }): string {
  const link = (href: string, label: string, key: Nav) =>
    `<a href="${href}"${opts.nav === key ? ' aria-current="page"' : ''}>${label}</a>`;
  const menu =
    opts.csrf === undefined
      ? ''
      : `<nav aria-label="Console">${link('/console', 'Instances', 'instances')}${link('/console/starts', 'Starts', 'starts')}${link('/console/logs', 'Logs', 'logs')}${link('/console/security', 'Security', 'security')}
<form method="post" action="/console/logout" class="logout"><input type="hidden" name="_csrf" value="${escapeHtml(opts.csrf)}"><button type="submit">Log out</button></form></nav>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(opts.title)} · sitelog</title><link rel="stylesheet" href="/console/assets/console.css">
${opts.script ? '<script src="/console/assets/console.js" defer></script>' : ''}</head>
<body><header><a class="brand" href="/console">sitelog</a>${menu}</header>
<main id="main">${opts.body}</main></body></html>`;
}

export const formatBytes = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
export const formatTime = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

export type InstanceRow = {
  host: string;
  instance: number;
  pid: number;
  started_at: string;
  last_seen: string;
  restarts: number;
  rss: number;
};

/** The live table of this host's instances: filled, and refreshed every 2 s, by console.js. */
export function liveTable(host: string): string {
  const columns = ['Instance', 'PID', 'CPU', 'Memory (RSS)', 'Requests/s', 'p99', 'Errors/min', 'Event-loop lag', 'Pool in use'];
  return `<table id="live" class="live"><caption>${escapeHtml(host)}, live: each instance over the last 10 minutes (refreshes every 2 s)</caption>
<thead><tr>${columns.map((c) => `<th scope="col">${c}</th>`).join('')}</tr></thead>
<tbody><tr><td colspan="${columns.length}">Loading…<noscript> (the live view needs JavaScript; GET /metrics has the same figures)</noscript></td></tr></tbody>
<tfoot></tfoot></table>`;
}

export function instancesTable(rows: InstanceRow[]): string {
  const body = rows
    .map(
      (r) => `<tr><td>${escapeHtml(r.host)}</td><td>${r.instance}</td><td>${r.pid}</td><td><time>${formatTime(r.started_at)}</time></td>
<td><time>${formatTime(r.last_seen)}</time></td><td>${r.restarts}</td><td>${formatBytes(r.rss)}</td></tr>`,
    )
    .join('\n');
  return `<table id="instances"><caption>Live instances (refreshes every 2 s)</caption>
<thead><tr><th scope="col">Host</th><th scope="col">Instance</th><th scope="col">PID</th><th scope="col">Started</th><th scope="col">Last seen</th><th scope="col">Restarts</th><th scope="col">Memory</th></tr></thead>
<tbody>${body || '<tr><td colspan="7">No instance is alive.</td></tr>'}</tbody></table>`;
}
