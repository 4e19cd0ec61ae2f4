import { Router } from 'express';
import { z } from 'zod';
import type { AppContext } from '../context.js';

// Tests only (mounted when SITELOG_TEST_ROUTES=1): a burst of log lines, numbered per process, for
// test/log-rotation.test.ts to check that rotating the log files loses, splits and doubles none.

const burstSchema = z.strictObject({
  count: z.number().int().min(1).max(10_000),
  /** Characters of padding per line: bigger lines fill the files (and PM2's write queue) sooner. */
  pad: z.number().int().min(0).max(4_000).default(200),
});

export function logLinesRouter(ctx: AppContext): Router {
  let seq = 0;
  const router = Router();
  // the API token even here, as the block route asks, should the flag ever be set where it must not
  router.post('/_test/log-lines', ctx.auth.token, (req, res) => {
    const { count, pad } = burstSchema.parse(req.body);
    const padding = 'x'.repeat(pad);
    // in one go, as fast as the process can: lines queue faster than the file takes them
    for (let i = 0; i < count; i += 1) ctx.logger.info({ logSeq: (seq += 1), padding }, 'numbered line');
    res.json({ instance: ctx.config.INSTANCE, pid: process.pid, lastSeq: seq });
  });
  return router;
}
