import { Router } from 'express';
import { escapeHtml } from './console/views.js';
import type { AppContext } from './context.js';

/** Which process served a request: what the home page shows. */
export type Served = { instance: number; pid: number; host: string };

/** The home page: a pure function of who served it. */
export function homePage({ instance, pid, host }: Served): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sitelog</title></head>
<body>
<main>
<h1>sitelog</h1>
<p>This page was served by <strong>instance <span id="instance">${instance}</span></strong>
(pid <span id="pid">${pid}</span>) on host <span id="host">${escapeHtml(host)}</span>.</p>
<ul>
<li><a href="/console">Console</a>: instances, start history, log browser</li>
<li><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></li>
</ul>
</main>
</body></html>`;
}

export function homeRouter(ctx: AppContext): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    res.type('html').send(homePage({ instance: ctx.config.INSTANCE, pid: process.pid, host: ctx.config.SITELOG_HOST }));
  });
  return router;
}
