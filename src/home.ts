import { Router } from 'express';
import { escapeHtml } from './console/views.js';
import type { AppContext } from './context.js';

export function homeRouter(ctx: AppContext): Router {
  const router = Router();
  router.get('/', (_req, res) => {
    const { INSTANCE, SITELOG_HOST } = ctx.config;
    res.type('html').send(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sitelog</title></head>
<body>
<main>
<h1>sitelog</h1>
<p>This page was served by <strong>instance <span id="instance">${INSTANCE}</span></strong>
(pid <span id="pid">${process.pid}</span>) on host <span id="host">${escapeHtml(SITELOG_HOST)}</span>.</p>
<ul>
<li><a href="/console">Console</a>: instances, start history, log browser</li>
<li><a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></li>
</ul>
</main>
</body></html>`);
  });
  return router;
}
