import { Router } from 'express';
import type { AppContext } from './context.js';
import { ping } from './db/database.js';
import { withConnection } from './db/lean.js';

/**
 * Liveness without the database (PM2 and nginx ask it), readiness with it. A process listens only
 * after its migrations ran (startup.ts), so ready means: the database answers.
 */
export function healthRouter(ctx: AppContext): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', instance: ctx.config.INSTANCE, pid: process.pid });
  });
  router.get('/readyz', async (_req, res) => {
    const database = ctx.gate.open && (await withConnection(ctx.sequelize, ping).then(() => true, () => false));
    if (!database) res.set('Retry-After', '1');
    res.status(database ? 200 : 503).json({ status: database ? 'ready' : 'unavailable', database, instance: ctx.config.INSTANCE, pid: process.pid });
  });
  return router;
}
