import type { StartupStep } from '../startup-steps.js';

/** Tests only (SITELOG_TEST_STARTUP_HANG, honoured with SITELOG_TEST_ROUTES=1: config.ts): where and how startup hangs. */
export type StartupHang = { how: 'await' | 'block'; step: StartupStep };

/**
 * Never returns, as the startup in one CI run of test/resurrect.test.ts never did: awaiting what
 * never comes (a timer keeps the process alive, as the pending socket of a stuck query would), or
 * with the event loop blocked.
 */
export async function hangAt(hang: StartupHang): Promise<never> {
  if (hang.how === 'block') {
    for (;;) {
      // spinning is the point
    }
  }
  return new Promise<never>(() => setInterval(() => undefined, 60_000));
}
