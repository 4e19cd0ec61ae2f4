import { QueryTypes, type Sequelize, type Transaction } from 'sequelize';
import type { CreateLogBody, ListLogsQuery } from './schema.js';
import { decodeCursor, encodeCursor } from './schema.js';
import { toLogEntry, type LogEntry, type SystemLog } from './model.js';
import type { InferAttributes } from 'sequelize';
import { badRequest } from '../errors.js';

// Hot paths run plain SQL through Sequelize's pool; the models stay the description of the tables.
const COLUMNS = `id, stype, "timestamp", description, ip, user_agent, host, instance, request_id`;

type Row = InferAttributes<SystemLog>;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

export async function listLogs(
  sequelize: Sequelize,
  query: ListLogsQuery,
): Promise<{ items: LogEntry[]; next: string | null }> {
  const where: string[] = [];
  const bind: unknown[] = [];
  const param = (value: unknown) => {
    bind.push(value);
    return `$${bind.length}`;
  };
  if (query.stype) where.push(`stype = ${param(query.stype)}`);
  if (query.q) where.push(`description ILIKE ${param(`%${escapeLike(query.q)}%`)}`);
  if (query.since) where.push(`"timestamp" >= ${param(query.since.toISOString())}`);
  if (query.until) where.push(`"timestamp" < ${param(query.until.toISOString())}`);
  if (query.before !== undefined) {
    const cursor = decodeCursor(query.before);
    if (!cursor) throw badRequest('before: not a cursor this API returned', 'SITELOG_BAD_CURSOR');
    where.push(`("timestamp", id) < (${param(cursor.timestamp.toISOString())}::timestamptz, ${param(cursor.id)}::bigint)`);
  }
  const rows = await sequelize.query<Row>(
    `SELECT ${COLUMNS} FROM system_logs ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY "timestamp" DESC, id DESC LIMIT ${param(query.limit + 1)}`,
    { bind, type: QueryTypes.SELECT },
  );
  const items = rows.slice(0, query.limit).map(toLogEntry);
  const last = items[items.length - 1];
  return { items, next: rows.length > query.limit && last ? encodeCursor(last.timestamp, last.id) : null };
}

export async function getLog(sequelize: Sequelize, id: string): Promise<LogEntry | undefined> {
  const rows = await sequelize.query<Row>(`SELECT ${COLUMNS} FROM system_logs WHERE id = $1`, {
    bind: [id],
    type: QueryTypes.SELECT,
  });
  return rows[0] && toLogEntry(rows[0]);
}

export type NewLog = CreateLogBody & {
  ip: string | null;
  userAgent: string | null;
  host: string;
  instance: number;
  requestId: string;
};

/**
 * Stores an entry once per request id, in a transaction of its own that writes the row and reads it
 * back. A repeat of the same id returns the stored entry (`created: false`) instead of a duplicate.
 */
export async function createLog(sequelize: Sequelize, entry: NewLog): Promise<{ entry: LogEntry; created: boolean }> {
  return sequelize.transaction(async (transaction: Transaction) => {
    const inserted = await sequelize.query<{ id: string }>(
      `INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (request_id) DO NOTHING RETURNING id`,
      {
        bind: [entry.stype, entry.description, entry.ip, entry.userAgent, entry.host, entry.instance, entry.requestId],
        type: QueryTypes.SELECT,
        transaction,
      },
    );
    const created = inserted.length === 1;
    const rows = await sequelize.query<Row>(
      `SELECT ${COLUMNS} FROM system_logs WHERE ${created ? 'id' : 'request_id'} = $1`,
      { bind: [created ? inserted[0]!.id : entry.requestId], type: QueryTypes.SELECT, transaction },
    );
    return { entry: toLogEntry(rows[0]!), created };
  });
}
