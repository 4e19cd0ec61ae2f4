import type { Request } from 'express';
import { z } from 'zod';
import { STYPES } from './model.js';

export const MAX_DESCRIPTION = 10_000;
/** A page of the API (the log list, the start history): `limit` up to MAX_LIMIT, DEFAULT_LIMIT when not given. */
export const MAX_LIMIT = 200;
export const DEFAULT_LIMIT = 50;
export const pageLimit = z.coerce.number().int().min(1).max(MAX_LIMIT).default(DEFAULT_LIMIT);
/** The User-Agent an entry keeps: a header may run to kilobytes; its first 512 characters name the client. */
export const MAX_USER_AGENT = 512;

// PostgreSQL text cannot hold NUL; refusing it here keeps it a 400 instead of a database error.
const text = (max: number) =>
  z
    .string()
    .max(max * 2)
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters')
    .refine((s) => [...s].length <= max, `must be at most ${max} characters`);

export const createLogBody = z.strictObject({
  stype: z.enum(STYPES),
  description: text(MAX_DESCRIPTION).refine((s) => s.trim().length > 0, 'must not be empty'),
});
export type CreateLogBody = z.infer<typeof createLogBody>;

/**
 * A time PostgreSQL can hold: ISO 8601, in year 1 or later once in UTC (PostgreSQL has no year 0,
 * and '0001-01-01T00:00:00+01:00' is still in year 0 in UTC), up to year 9999.
 */
const storableTime = (value: Date) => value.getUTCFullYear() >= 1 && value.getUTCFullYear() <= 9999;
const STORABLE = 'must be between year 1 and year 9999 in UTC';
const time = z.iso.datetime({ offset: true }).pipe(z.coerce.date()).refine(storableTime, STORABLE);

export const listLogsQuery = z.strictObject({
  stype: z.enum(STYPES).optional(),
  q: text(200).optional(),
  since: time.optional(),
  until: time.optional(),
  before: z.string().max(200).optional(),
  limit: pageLimit,
});
export type ListLogsQuery = z.infer<typeof listLogsQuery>;

export const userAgentOf = (req: Request): string | null => req.get('user-agent')?.slice(0, MAX_USER_AGENT) ?? null;

export const logId = z.string().regex(/^[1-9][0-9]{0,15}$/, 'must be a positive integer');

/** A client's Idempotency-Key, or the X-Request-Id nginx sets (kept across its own retries). */
export const idempotencyKey = z.string().regex(/^[A-Za-z0-9._:-]{8,128}$/, 'must be 8-128 characters of [A-Za-z0-9._:-]');

/** The keyset position (timestamp, id) of the last item of a page, opaque to clients. */
const cursor = z.tuple([z.iso.datetime(), z.number().int().positive()]);

export function encodeCursor(timestamp: string, id: number): string {
  return Buffer.from(JSON.stringify([timestamp, id])).toString('base64url');
}

export function decodeCursor(value: string): { timestamp: Date; id: number } | undefined {
  try {
    const parsed = cursor.safeParse(JSON.parse(Buffer.from(value, 'base64url').toString('utf8')));
    const timestamp = parsed.success ? new Date(parsed.data[0]) : undefined;
    return parsed.success && timestamp && storableTime(timestamp) ? { timestamp, id: parsed.data[1] } : undefined;
  } catch {
    return undefined;
  }
}
