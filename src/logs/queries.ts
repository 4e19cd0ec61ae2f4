import type { Sequelize } from 'sequelize';
import { withConnection, withWriteConnection, type Run, type Statement } from '../db/lean.js';
import { LOCK_RETENTION } from '../db/locks.js';
import { withReadConnection } from '../db/replicas.js';
import type { CreateLogBody, ListLogsQuery } from './schema.js';
import { decodeCursor, encodeCursor } from './schema.js';
import type { LogEntry, Stype } from './model.js';
import { badRequest, ERRORS } from '../errors.js';
import type { Cancellation } from '../in-flight.js';

// Every statement on system_logs, run by db/lean.ts's runner: on Sequelize's pool for requests, on
// a process's liveness connection for the startup log; the list, which need not see a write of a
// moment ago, on a read replica when there is one (db/replicas.ts). An entry read by its id is read
// from the primary: a client reads what it has just written by the id it got.
//
// An entry leaves PostgreSQL as the JSON the API answers (SPEC "Log entry fields": the id a number,
// the time ISO 8601 in UTC with milliseconds, as JavaScript writes it), its fields named by the type
// log_entry (migration 0004). The hot endpoints send that text as it is: no row parsing, no Date,
// no JSON.stringify in the worker, which is most of what an API read costs it. `l` is system_logs in
// every statement below.
const ENTRY = `row_to_json(ROW(l.id, l.stype, to_char(l."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
  l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id)::log_entry)::text AS entry FROM system_logs l`;

/**
 * A page of GET /api/logs stops once its entries reach PAGE_BYTES of JSON, whatever its limit, and
 * `next` goes on from the last entry sent. The largest entry is about 63 KB of JSON (10,000 control
 * characters, 6 bytes each), so 200 of them would be a 12 MB answer, held several times over (the
 * rows, the page, its bytes) by the worker that sends it. Up to PAGE_BYTES_FREE_LIMIT entries cannot
 * reach it (20 × 63 KB), so those pages are read without the running sum, which costs PostgreSQL
 * about 3 µs an entry.
 */
export const PAGE_BYTES = 2 * 1024 * 1024;
const PAGE_BYTES_FREE_LIMIT = 20;

/** An entry's JSON text, as the queries below return it. */
export type EntryJson = string;

/** A page of entries as the API answers it. */
export type LogPage = { items: EntryJson[]; next: string | null };

/** The body of `GET /api/logs`, from the entries' own JSON. */
export const pageJson = (page: LogPage): string => `{"items":[${page.items.join(',')}],"next":${JSON.stringify(page.next)}}`;

/** An entry as an object, for the console's pages. */
export const parseEntry = (entry: EntryJson): LogEntry => JSON.parse(entry) as LogEntry;

const escapeLike = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The statement listLogs runs for a query (exported for the bench's EXPLAIN). */
export function listLogsStatement(query: ListLogsQuery): { statement: Statement; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  const param = (value: unknown) => {
    values.push(value);
    return `$${values.length}`;
  };
  if (query.stype) where.push(`l.stype = ${param(query.stype)}`);
  if (query.q) where.push(`l.description ILIKE ${param(`%${escapeLike(query.q)}%`)}`);
  if (query.since) where.push(`l."timestamp" >= ${param(query.since.toISOString())}`);
  if (query.until) where.push(`l."timestamp" < ${param(query.until.toISOString())}`);
  if (query.before !== undefined) {
    const cursor = decodeCursor(query.before);
    if (!cursor) throw badRequest(ERRORS.SITELOG_BAD_CURSOR);
    where.push(`(l."timestamp", l.id) < (${param(cursor.timestamp.toISOString())}::timestamptz, ${param(cursor.id)}::bigint)`);
  }
  // A row is its entry's JSON alone; the cursor is read back from the last entry of the page: one
  // parse a page costs the worker less than two more columns on every row cost both sides.
  const order = `l."timestamp" DESC, l.id DESC`;
  const page = `${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order} LIMIT ${param(query.limit + 1)}`;
  const capped = query.limit > PAGE_BYTES_FREE_LIMIT;
  // Capped: the JSON before each entry of the page, summed in page order; past PAGE_BYTES an entry
  // comes without its JSON, its row saying only that the page goes on. The sum runs over the page
  // once limited, so that a plan that sorts (a text search) keeps its top-N sort.
  const text = capped
    ? `SELECT CASE WHEN sum(octet_length(p.entry)) OVER w - octet_length(p.entry) < ${param(PAGE_BYTES)} THEN p.entry END AS entry
       FROM (SELECT l."timestamp" AS at, l.id, ${ENTRY} ${page}) p
       WINDOW w AS (ORDER BY p.at DESC, p.id DESC ROWS UNBOUNDED PRECEDING) ORDER BY p.at DESC, p.id DESC`
    : `SELECT ${ENTRY} ${page}`;
  // One prepared statement per combination of filters, except text search: how selective a pattern
  // is decides between the trigram index and the timeline, so it is planned for each pattern.
  const filters = (['stype', 'since', 'until', 'before'] as const).filter((f) => query[f] !== undefined);
  return { statement: { name: query.q ? '' : ['sitelog-logs', ...filters, ...(capped ? ['capped'] : [])].join('-'), text }, values };
}

type PageRow = { entry: EntryJson | null };

export async function listLogs(sequelize: Sequelize, query: ListLogsQuery, signal?: Cancellation): Promise<LogPage> {
  const { statement, values } = listLogsStatement(query);
  const rows = await withReadConnection(sequelize, (run) => run<PageRow>(statement, values), signal);
  // the page ends at the limit, or at the first entry past PAGE_BYTES; a row beyond it means more
  const cut = rows.findIndex((r, i) => i === query.limit || r.entry === null);
  const items = (cut === -1 ? rows : rows.slice(0, cut)).map((r) => r.entry!);
  const last = cut > 0 ? parseEntry(items[cut - 1]!) : undefined;
  return { items, next: last ? encodeCursor(last.timestamp, last.id) : null };
}

type EntryRow = { entry: EntryJson };

const GET_LOG: Statement = { name: 'sitelog-log-by-id', text: `SELECT ${ENTRY} WHERE l.id = $1` };

export async function getLog(sequelize: Sequelize, id: string, signal?: Cancellation): Promise<EntryJson | undefined> {
  const [row] = await withConnection(sequelize, (run) => run<EntryRow>(GET_LOG, [id]), signal);
  return row?.entry;
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
  text: `WITH l AS (INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (request_id) DO NOTHING RETURNING *)
         SELECT l.id, ${ENTRY.replace('system_logs l', 'l')}`,
};
const LOG_BY_REQUEST_ID: Statement = { name: 'sitelog-log-by-request-id', text: `SELECT l.id, l.stype, l.description, ${ENTRY} WHERE l.request_id = $1` };

export type SystemEntry = {
  stype: Stype;
  description: string;
  host: string;
  instance: number | null;
  ip?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
};

/** What a write answers: the stored entry, and whether this call stored it or an earlier one did. */
export type Stored = { id: number; entry: EntryJson; created: boolean; stype?: Stype; description?: string };

/**
 * Stores an entry once per request id. The INSERT is one statement, so it commits on its own: no
 * BEGIN or COMMIT round trips. A repeat of the same id does nothing and then reads the stored entry
 * (`created: false`, with its stype and description for the caller to compare). That read is a
 * statement of its own, so under READ COMMITTED its snapshot sees a concurrent first attempt that
 * the INSERT waited for; inside the INSERT's own statement it would not.
 */
async function store(run: Run, entry: SystemEntry): Promise<Stored> {
  const values = [entry.stype, entry.description, entry.ip ?? null, entry.userAgent ?? null, entry.host, entry.instance, entry.requestId ?? null];
  const [inserted] = await run<EntryRow & { id: string }>(INSERT_LOG, values);
  if (inserted) return { id: Number(inserted.id), entry: inserted.entry, created: true };
  const [stored] = await run<EntryRow & { id: string; stype: Stype; description: string }>(LOG_BY_REQUEST_ID, [entry.requestId]);
  return { id: Number(stored!.id), entry: stored!.entry, created: false, stype: stored!.stype, description: stored!.description };
}

/** Writes an entry of the system's own (the startup log, a failed login) with the runner given. */
export async function insertEntry(run: Run, entry: SystemEntry): Promise<void> {
  await store(run, entry);
}

/** A client's entry (POST /api/logs), stored once per request id. */
export async function createLog(sequelize: Sequelize, entry: NewLog): Promise<Stored> {
  return withWriteConnection(sequelize, (run) => store(run, entry));
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

// The login throttle and the console's security view. A client is its address, or its IPv6 /64:
// sitelog_client_key() (migration 0003), which nginx's own limit mirrors.

/** What the throttle counts: the entries of failed attempts in the last minutes, since the client's last unlock (login_unlocks). */
export type ThrottleEntries = { failure: string; minutes: number };

const CLIENT_FAILURES: Statement = {
  name: 'sitelog-logs-client-failures',
  text: `SELECT count(*)::int AS n FROM system_logs
         WHERE stype = 'security' AND sitelog_client_key(ip) = sitelog_client_key($1) AND description = $2
           AND "timestamp" > greatest(now() - make_interval(mins => $3), coalesce(
             (SELECT unlocked_at FROM login_unlocks WHERE client = sitelog_client_key($1)), '-infinity'))`,
};

/** A client's failures in the last minutes, since it was last unlocked. */
export async function clientFailures(run: Run, ip: string | null, entries: ThrottleEntries): Promise<number> {
  const [row] = await run<{ n: number }>(CLIENT_FAILURES, [ip, entries.failure, entries.minutes]);
  return row?.n ?? 0;
}

/** A client's failures; `until`, for a locked one, is when its lock lifts by itself. */
export type ClientFailures = { client: string; failures: number; last: Date; until?: Date };

const FAILURES_BY_CLIENT: Statement = {
  name: 'sitelog-logs-failures-by-client',
  text: `SELECT sitelog_client_key(ip) AS client, count(*)::int AS failures, max("timestamp") AS last
         FROM system_logs WHERE stype = 'security' AND description = $1 AND "timestamp" > now() - make_interval(hours => $2)
         GROUP BY 1 ORDER BY max("timestamp") DESC LIMIT 100`,
};

const LOCKED_CLIENTS: Statement = {
  name: 'sitelog-logs-locked-clients',
  text: `SELECT f.client, count(*)::int AS failures, max(f."timestamp") AS last, min(f."timestamp") + make_interval(mins => $2) AS until
         FROM (SELECT sitelog_client_key(ip) AS client, "timestamp" FROM system_logs
               WHERE stype = 'security' AND description = $1 AND "timestamp" > now() - make_interval(mins => $2)) f
         LEFT JOIN login_unlocks u USING (client)
         WHERE f."timestamp" > coalesce(u.unlocked_at, '-infinity')
         GROUP BY f.client HAVING count(*) >= $3 ORDER BY 3 DESC LIMIT 100`,
};

/** The security view: failures by client over the last hours, and the clients locked now. */
export async function securityOverview(run: Run, entries: ThrottleEntries & { hours: number; allowed: number }): Promise<{ recent: ClientFailures[]; locked: ClientFailures[] }> {
  const recent = await run<ClientFailures>(FAILURES_BY_CLIENT, [entries.failure, entries.hours]);
  const locked = await run<ClientFailures>(LOCKED_CLIENTS, [entries.failure, entries.minutes, entries.allowed]);
  return { recent, locked };
}

// Log retention (src/logs/retention.ts): one process at a time, under a session advisory lock held
// on its liveness connection, so PostgreSQL drops it if that process or connection dies.

const TRY_RETENTION_LOCK: Statement = { name: 'sitelog-logs-retention-try-lock', text: `SELECT pg_try_advisory_lock(${LOCK_RETENTION}) AS locked` };
const RETENTION_UNLOCK: Statement = { name: 'sitelog-logs-retention-unlock', text: `SELECT pg_advisory_unlock(${LOCK_RETENTION}) AS unlocked` };

/** Whether this session now holds the retention lock; false when another process holds it. */
export async function tryRetentionLock(session: Run): Promise<boolean> {
  const [row] = await session(TRY_RETENTION_LOCK, []);
  return row?.locked === true;
}

/**
 * Releases the retention lock. When the session broke meanwhile the lock went with it, and the
 * liveness connection is being replaced: nothing to release.
 */
export async function releaseRetentionLock(session: Run): Promise<void> {
  await session(RETENTION_UNLOCK, []).catch(() => undefined);
}

/**
 * One batch of expired entries of one type, the oldest first, chosen through the (stype, timestamp)
 * index: a range scan that reads only what it deletes. One type per statement, because a single scan
 * of the timeline for several types with cutoffs of their own would walk over every entry kept longer
 * again in each batch. `from` is where the previous batch stopped, so a batch does not walk the dead
 * index entries its predecessors left for VACUUM either. The cutoff is the database's clock, the one
 * that stamped the entries. One statement: it commits on its own and holds its row locks only while
 * it runs; writes insert at the other end of the timeline and never wait for it. `id = ANY(ARRAY(…))`,
 * not `id IN (…)`: the latter lets the planner hash-join the batch against a scan of the whole table.
 * (Exported for the bench's EXPLAIN.)
 */
export const DELETE_EXPIRED: Statement = {
  name: 'sitelog-logs-delete-expired',
  text: `WITH gone AS (
           DELETE FROM system_logs WHERE id = ANY(ARRAY(
             SELECT id FROM system_logs
             WHERE stype = $1 AND "timestamp" < now() - make_interval(days => $2) AND "timestamp" >= $3
             ORDER BY "timestamp", id LIMIT $4))
           RETURNING "timestamp")
         SELECT count(*)::int AS removed, max("timestamp") AS last FROM gone`,
};

export type ExpiredBatch = { removed: number; last: Date | null };

/** Removes up to `limit` entries of `stype` older than `days` days, from `from` on (oldest first). */
export async function deleteExpired(run: Run, batch: { stype: Stype; days: number; from: Date | null; limit: number }): Promise<ExpiredBatch> {
  const [row] = await run<ExpiredBatch>(DELETE_EXPIRED, [batch.stype, batch.days, batch.from ?? '-infinity', batch.limit]);
  return row ?? { removed: 0, last: null };
}
