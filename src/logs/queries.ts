import type { Sequelize } from 'sequelize';
import { inTransaction, withConnection, type Run, type Statement } from '../db/lean.js';
import type { CreateLogBody, ListLogsQuery } from './schema.js';
import { decodeCursor, encodeCursor } from './schema.js';
import { toLogEntry, type LogEntry, type LogRow as Row, type Stype } from './model.js';
import { badRequest, ERRORS } from '../errors.js';

// Every statement on system_logs, run by db/lean.ts's runner: on Sequelize's pool for requests, on
// a process's liveness connection for the startup log.
const COLUMNS = `id, stype, "timestamp", description, ip, user_agent, host, instance, request_id`;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The statement listLogs runs for a query (exported for the bench's EXPLAIN). */
export function listLogsStatement(query: ListLogsQuery): { statement: Statement; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown) => {
    values.push(value);
    return `$${values.length}`;
  };
  if (query.stype) where.push(`stype = ${param(query.stype)}`);
  if (query.q) where.push(`description ILIKE ${param(`%${escapeLike(query.q)}%`)}`);
  if (query.since) where.push(`"timestamp" >= ${param(query.since.toISOString())}`);
  if (query.until) where.push(`"timestamp" < ${param(query.until.toISOString())}`);
  if (query.before !== undefined) {
    const cursor = decodeCursor(query.before);
    if (!cursor) throw badRequest(ERRORS.SITELOG_BAD_CURSOR);
    where.push(`("timestamp", id) < (${param(cursor.timestamp.toISOString())}::timestamptz, ${param(cursor.id)}::bigint)`);
  }
  const text = `SELECT ${COLUMNS} FROM system_logs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY "timestamp" DESC, id DESC LIMIT ${param(query.limit + 1)}`;
  // One prepared statement per combination of filters, except text search: how selective a pattern
  // is decides between the trigram index and the timeline, so it is planned for each pattern.
  const filters = (['stype', 'since', 'until', 'before'] as const).filter((f) => query[f] !== undefined);
  return { statement: { name: query.q ? '' : ['sitelog-logs', ...filters].join('-'), text }, values };
}

export async function listLogs(
  sequelize: Sequelize,
  query: ListLogsQuery,
): Promise<{ items: LogEntry[]; next: string | null }> {
  const { statement, values } = listLogsStatement(query);
  const rows = await withConnection(sequelize, (run) => run<Row>(statement, values));
  const items = rows.slice(0, query.limit).map(toLogEntry);
  const last = items[items.length - 1];
  return { items, next: rows.length > query.limit && last ? encodeCursor(last.timestamp, last.id) : null };
}

const GET_LOG: Statement = { name: 'sitelog-log-by-id', text: `SELECT ${COLUMNS} FROM system_logs WHERE id = $1` };

export async function getLog(sequelize: Sequelize, id: string): Promise<LogEntry | undefined> {
  const [row] = await withConnection(sequelize, (run) => run<Row>(GET_LOG, [id]));
  return row && toLogEntry(row);
}

export type NewLog = CreateLogBody & {
  ip: string | null;
  userAgent: string | null;
  host: string;
  instance: number;
  requestId: string;
};

const INSERT_LOG: Statement = {
  name: 'sitelog-log-insert',
  text: `INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (request_id) DO NOTHING RETURNING ${COLUMNS}`,
};
const LOG_BY_REQUEST_ID: Statement = { name: 'sitelog-log-by-request-id', text: `SELECT ${COLUMNS} FROM system_logs WHERE request_id = $1` };

export type SystemEntry = {
  stype: Stype;
  description: string;
  host: string;
  instance: number | null;
  ip?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
};

/**
 * Stores an entry once per request id: the INSERT returns the new row, and a repeat of the same id
 * reads the stored entry (`created: false`) instead of writing a duplicate. In a transaction, READ
 * COMMITTED gives that second statement a snapshot where a concurrent first attempt, which the
 * INSERT waited for, is visible.
 */
async function store(run: Run, entry: SystemEntry): Promise<{ entry: LogEntry; created: boolean }> {
  const values = [entry.stype, entry.description, entry.ip ?? null, entry.userAgent ?? null, entry.host, entry.instance, entry.requestId ?? null];
  const [inserted] = await run<Row>(INSERT_LOG, values);
  if (inserted) return { entry: toLogEntry(inserted), created: true };
  const [stored] = await run<Row>(LOG_BY_REQUEST_ID, [entry.requestId]);
  return { entry: toLogEntry(stored!), created: false };
}

/** Writes an entry of the system's own (the startup log, a failed login) with the runner given. */
export async function insertEntry(run: Run, entry: SystemEntry): Promise<LogEntry> {
  return (await store(run, entry)).entry;
}

/** A client's entry (POST /api/logs), stored once per request id in a transaction of its own. */
export async function createLog(sequelize: Sequelize, entry: NewLog): Promise<{ entry: LogEntry; created: boolean }> {
  return inTransaction(sequelize, (run) => store(run, entry));
}

export type Histogram = { buckets: Array<{ t: number; stype: Stype; n: number }>; from: number; to: number; bucketSeconds: number };

const HISTOGRAM: Statement = {
  name: 'sitelog-logs-histogram',
  text: `SELECT (floor(extract(epoch FROM "timestamp") / $3) * $3)::float8 AS t, stype, count(*)::int AS n
         FROM system_logs WHERE "timestamp" >= $1 AND "timestamp" < $2 AND ($4::text IS NULL OR stype = $4)
         GROUP BY 1, 2 ORDER BY 1`,
};

/** Entries per bucket and type over [from, to): about 60 buckets, a minute at least. */
export async function histogram(run: Run, range: { from: number; to: number; stype?: Stype | undefined }): Promise<Histogram> {
  const bucketSeconds = Math.max(60, Math.ceil((range.to - range.from) / 1000 / 60 / 60) * 60);
  const bounds = [new Date(range.from).toISOString(), new Date(range.to).toISOString()];
  const buckets = range.to > range.from ? await run<Histogram['buckets'][number]>(HISTOGRAM, [...bounds, bucketSeconds, range.stype ?? null]) : [];
  return { buckets, from: range.from, to: range.to, bucketSeconds };
}

const RECENT_SECURITY: Statement = {
  name: 'sitelog-logs-recent-security',
  text: `SELECT count(*)::int AS n FROM system_logs WHERE stype = 'security' AND ip = $1 AND description = $2
         AND "timestamp" > now() - make_interval(mins => $3)`,
};

/** How many `security` entries with this description came from this address in the last minutes. */
export async function recentSecurityEntries(run: Run, query: { ip: string | null; description: string; minutes: number }): Promise<number> {
  const [row] = await run<{ n: number }>(RECENT_SECURITY, [query.ip, query.description, query.minutes]);
  return row?.n ?? 0;
}
