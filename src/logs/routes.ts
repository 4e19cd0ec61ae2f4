import { Router } from 'express';
import type { AppContext } from '../context.js';
import { sendJson } from '../respond.js';
import { badRequest, ERRORS, notFound, unprocessableContent } from '../errors.js';
import { createLog, getLog, listLogs, pageJson } from './queries.js';
import { createLogBody, idempotencyKey, listLogsQuery, logId } from './schema.js';

export function logsRouter(ctx: AppContext): Router {
  const router = Router();

  router.get('/api/logs', ctx.auth.reader, async (req, res) => {
    sendJson(res, pageJson(await listLogs(ctx.sequelize, listLogsQuery.parse(req.query), req.inFlight)));
  });

  router.get('/api/logs/:id', ctx.auth.reader, async (req, res) => {
    const id = logId.safeParse(req.params['id']);
    const entry = id.success ? await getLog(ctx.sequelize, id.data, req.inFlight) : undefined;
    if (!entry) throw notFound(`no log entry ${JSON.stringify(String(req.params['id']).slice(0, 40))}`);
    sendJson(res, entry);
  });

  router.post('/api/logs', ctx.auth.token, async (req, res) => {
    const body = createLogBody.parse(req.body ?? {});
    const clientKey = req.get('idempotency-key');
    if (clientKey !== undefined && !idempotencyKey.safeParse(clientKey).success) throw badRequest(ERRORS.SITELOG_BAD_IDEMPOTENCY_KEY);
    const stored = await createLog(ctx.sequelize, {
      ...body,
      ip: req.ip ?? null,
      userAgent: req.get('user-agent')?.slice(0, 512) ?? null,
      host: ctx.config.SITELOG_HOST,
      instance: ctx.config.INSTANCE,
      requestId: clientKey ?? req.id,
    });
    if (!stored.created && (stored.stype !== body.stype || stored.description !== body.description)) {
      throw unprocessableContent(ERRORS.SITELOG_IDEMPOTENCY_KEY_REUSED);
    }
    res.setHeader('Location', `/api/logs/${stored.id}`);
    if (stored.created) ctx.metrics.instruments.entriesStored.inc();
    else {
      ctx.metrics.instruments.idempotentReplays.inc();
      res.setHeader('Idempotent-Replayed', 'true');
    }
    sendJson(res, stored.entry, 201);
  });

  return router;
}
