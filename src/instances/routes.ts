import { Router } from 'express';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { withConnection } from '../db/lean.js';
import { pageLimit } from '../logs/schema.js';
import { liveView } from '../metrics/live.js';
import { liveInstances, startHistory } from './queries.js';

const startsQuery = z.strictObject({
  host: z.string().max(255).optional(),
  limit: pageLimit,
});

export function instancesRouter(ctx: AppContext): Router {
  const router = Router();
  router.get('/api/instances', ctx.auth.reader, async (_req, res) => {
    res.json({ items: await withConnection(ctx.sequelize, liveInstances) });
  });
  // this host's instances as they run: the live console's charts (no database: a socket per process)
  router.get('/api/instances/live', ctx.auth.reader, async (_req, res) => {
    res.json(liveView(ctx.config.SITELOG_HOST, await ctx.metrics.host.liveSamples()));
  });
  router.get('/api/starts', ctx.auth.reader, async (req, res) => {
    const query = startsQuery.parse(req.query);
    res.json({ items: await withConnection(ctx.sequelize, (run) => startHistory(run, query)) });
  });
  return router;
}
