import { Router } from 'express';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { InstanceEvent, LiveInstance, ServerStart } from './model.js';

const startsQuery = z.strictObject({
  host: z.string().max(255).optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

export async function liveInstances() {
  const rows = await LiveInstance.findAll({ order: [['host', 'ASC'], ['instance', 'ASC']] });
  return rows.map((r) => ({
    host: r.host,
    instance: r.instance,
    pid: r.pid,
    started_at: r.started_at.toISOString(),
    last_seen: r.last_seen.toISOString(),
    restarts: r.restarts,
    rss: Number(r.rss),
  }));
}

export async function startHistory(query: z.infer<typeof startsQuery>) {
  const starts = await ServerStart.findAll({
    where: query.host ? { host: query.host } : {},
    order: [['id', 'DESC']],
    limit: query.limit,
  });
  const events = await InstanceEvent.findAll({
    where: { start_id: starts.map((s) => s.id) },
    order: [['id', 'ASC']],
  });
  return starts.map((s) => ({
    host: s.host,
    timestamp: s.timestamp.toISOString(),
    entries: events
      .filter((e) => e.start_id === s.id)
      .map((e) => ({ instance: e.instance, pid: e.pid, event: e.event, timestamp: e.timestamp.toISOString() })),
  }));
}

export function instancesRouter(ctx: AppContext): Router {
  const router = Router();
  router.get('/instances', ctx.auth.reader, async (_req, res) => {
    res.json({ items: await liveInstances() });
  });
  router.get('/starts', ctx.auth.reader, async (req, res) => {
    res.json({ items: await startHistory(startsQuery.parse(req.query)) });
  });
  return router;
}
