import { Router, type Request, type Response } from 'express';
import type { AppContext } from '../context.js';
import { sendJson } from '../respond.js';
import { badRequest, ERRORS, notFound, unprocessableContent } from '../errors.js';
import { createLog, getLog, listLogs, pageJson, type Stored } from './queries.js';
import { createLogBody, idempotencyKey, listLogsQuery, logId, userAgentOf, type CreateLogBody } from './schema.js';

/** The client's Idempotency-Key, when it sent one (400 when it is not one). */
function idempotencyKeyOf(req: Request): string | undefined {
  const key = req.get('idempotency-key');
  if (key !== undefined && !idempotencyKey.safeParse(key).success) throw badRequest(ERRORS.SITELOG_BAD_IDEMPOTENCY_KEY);
  return key;
}

/** An entry found under the key must be this one again: a key sent with another entry is a mistake (422), not a replay. */
function checkReplay(stored: Stored, body: CreateLogBody): void {
  if (!stored.created && (stored.stype !== body.stype || stored.description !== body.description)) {
    throw unprocessableContent(ERRORS.SITELOG_IDEMPOTENCY_KEY_REUSED);
  }
}

/** Counts an entry stored, or a replay, which its answer names. */
function countStored(instruments: AppContext['metrics']['instruments'], res: Response, stored: Stored): void {
  if (stored.created) instruments.entriesStored.inc();
  else {
    instruments.idempotentReplays.inc();
    res.setHeader('Idempotent-Replayed', 'true');
  }
}

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
    const clientKey = idempotencyKeyOf(req);
    const stored = await createLog(ctx.sequelize, {
      ...body,
      ip: req.ip ?? null,
      userAgent: userAgentOf(req),
      host: ctx.config.SITELOG_HOST,
      instance: ctx.config.INSTANCE,
      requestId: clientKey ?? req.id,
    });
    checkReplay(stored, body);
    res.setHeader('Location', `/api/logs/${stored.id}`);
    countStored(ctx.metrics.instruments, res, stored);
    sendJson(res, stored.entry, 201);
  });

  return router;
}
