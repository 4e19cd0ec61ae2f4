import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls until `check` returns `true` or an object (what was waited for), or fails at the deadline.
 * `undefined` and `false` mean "not yet"; a number or a string cannot be returned, so that 0, ''
 * or null can never pass for success.
 */
export async function waitFor<T extends object | true>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 30_000, everyMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`);
    }
    await sleep(everyMs);
  }
}
