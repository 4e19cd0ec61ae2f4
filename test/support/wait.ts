import { setTimeout as sleep } from 'node:timers/promises';

/** What `check` may answer: what was waited for (`true` or an object), or "not yet". */
type NotYet = undefined | null | false;

/** Whether `value` is what was waited for: exactly `true`, or an object (never null). */
function arrived<T extends object | true>(value: unknown): value is T {
  return value === true || (typeof value === 'object' && value !== null);
}

/**
 * Polls until `check` returns exactly `true` or a non-null object (what was waited for), or fails at
 * the deadline. `undefined`, `null` and `false` mean "not yet"; so does any other value that slips
 * past the types (`0`, `''`, a number): only `true` or an object can pass for success.
 */
export async function waitFor<T extends object | true>(
  what: string,
  check: () => Promise<T | NotYet> | T | NotYet,
  { timeoutMs = 30_000, everyMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value: unknown = await check();
      if (arrived<T>(value)) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`);
    }
    await sleep(everyMs);
  }
}
