import { Router } from 'express';
import type { AppContext } from './context.js';

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
    const database = ctx.gate.open && (await ctx.sequelize.query('SELECT 1').then(() => true, () => false));
    const ready = database;
    if (!ready) res.set('Retry-After', '1');
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', database, instance: ctx.config.INSTANCE, pid: process.pid });
  });
  return router;
}
