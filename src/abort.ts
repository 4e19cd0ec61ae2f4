import type { Response } from 'express';

/** Aborts when the client goes away before its response is finished (a closed tab, a timeout). */
export function whileClientWaits(res: Response): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}
