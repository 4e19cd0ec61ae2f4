import { Router } from 'express';
import { z } from 'zod';
import type { AppContext } from '../context.js';

/** Several times the watchdog's bound (WATCHDOG_BLOCKED_MS), and short enough that a mistake ends by itself. */
const MAX_BLOCK_MS = 60_000;
const blockBody = z.strictObject({ ms: z.number().int().min(1).max(MAX_BLOCK_MS) });

/** A loop that never yields: timers, sockets and IPC all wait, as in a hung worker. */
function blockEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spinning is the point
  }
}

/**
 * Tests only (SITELOG_TEST_ROUTES=1, app.ts): `POST /_test/block {"ms": …}` answers 202 with this
 * process's pid and instance, then blocks its event loop for `ms`. It answers first: a request left
 * unanswered in the blocked worker would be sent again by nginx (proxy_next_upstream), to another
 * worker, which would block too. Behind the API token as well, should the flag ever leak.
 */
export function blockRouter(ctx: AppContext): Router {
  const router = Router();
  router.post('/_test/block', ctx.auth.token, (req, res) => {
    const { ms } = blockBody.parse(req.body ?? {});
    // 'finish': the response is with the OS; the block starts on the next turn of the loop
    res.on('finish', () => setImmediate(blockEventLoop, ms));
    res.status(202).json({ pid: process.pid, instance: ctx.config.INSTANCE, blockMs: ms });
  });
  return router;
}
