import { transaction, type Run, type Statement } from '../db/lean.js';
import { LIVENESS_PREFIX, START_PREFIX } from '../db/locks.js';
import { insertEntry } from '../logs/queries.js';
import type { InstanceEventKind, InstanceEventRow, LiveInstanceRow, ServerStartRow } from './model.js';
import { startEvent } from './startup-rule.js';

// Every statement on server_starts, instance_events, instances and live_instances, run by db/lean.ts's
// runner: on a process's liveness connection (presence.ts) or on Sequelize's pool (routes.ts).

export type Identity = { host: string; instance: number; pid: number; pm2Restarts: number };
export type Announcement = { serverStarted: boolean; event: InstanceEventKind; startId: string };

const sql = (name: string, text: string): Statement => ({ name: `sitelog-instances-${name}`, text });

const LOCK_HOST_START = sql('lock-start', `SELECT pg_advisory_xact_lock(hashtext('${START_PREFIX}' || $1::text))`);
const TAKE_LIVENESS = sql('take-liveness', `SELECT pg_advisory_lock(hashtext('${LIVENESS_PREFIX}' || $1::text), $2::int)`);
const OTHERS_ALIVE = sql('others-alive', 'SELECT instance FROM live_instances WHERE host = $1 AND pid <> $2');
const NEW_START = sql('new-start', 'INSERT INTO server_starts (host) VALUES ($1) RETURNING id');
const CURRENT_START = sql('current-start', 'SELECT id FROM server_starts WHERE host = $1 ORDER BY id DESC LIMIT 1');
const CAME_UP = sql('came-up', 'SELECT 1 FROM instance_events WHERE start_id = $1 AND instance = $2 LIMIT 1');
// Rows of processes that are gone are kept until the next start, so a crash can be told from a start.
const FORGET_GONE = sql(
  'forget-gone',
  'DELETE FROM instances i WHERE host = $1 AND NOT EXISTS (SELECT 1 FROM live_instances l WHERE l.host = i.host AND l.pid = i.pid)',
);
const UPSERT_INSTANCE = sql(
  'upsert',
  `INSERT INTO instances (host, pid, instance, backend_pid, start_id, restarts, rss)
   VALUES ($1, $2, $3, pg_backend_pid(), $4, $5, $6)
   ON CONFLICT (host, pid) DO UPDATE SET instance = EXCLUDED.instance, backend_pid = EXCLUDED.backend_pid,
     start_id = EXCLUDED.start_id, started_at = now(), last_seen = now(), restarts = EXCLUDED.restarts, rss = EXCLUDED.rss`,
);
const INSERT_EVENT = sql('event', 'INSERT INTO instance_events (start_id, instance, pid, event) VALUES ($1, $2, $3, $4)');
const HEARTBEAT = sql('heartbeat', 'UPDATE instances SET last_seen = now(), rss = $3 WHERE host = $1 AND pid = $2');
const REBIND = sql('rebind', 'UPDATE instances SET backend_pid = pg_backend_pid(), last_seen = now() WHERE host = $1 AND pid = $2');
const LEAVE = sql('leave', 'DELETE FROM instances WHERE host = $1 AND pid = $2');
const LIVE = sql(
  'live',
  'SELECT host, pid, instance, started_at, last_seen, restarts, rss FROM live_instances ORDER BY host, instance',
);
// the host filter is optional: one statement, NULL meaning every host
const STARTS = sql('starts', 'SELECT id, host, "timestamp" FROM server_starts WHERE $1::text IS NULL OR host = $1 ORDER BY id DESC LIMIT $2');
const EVENTS_OF = sql(
  'events-of',
  'SELECT start_id, instance, pid, event, "timestamp" FROM instance_events WHERE start_id = ANY($1::bigint[]) ORDER BY id',
);

/**
 * Registers a process and writes its startup log, in one transaction under the host's start lock:
 * the live instances are read, then this process takes its own liveness lock. Instances starting in
 * parallel see each other, and exactly one finds nobody alive and writes "server started".
 */
export function register(run: Run, id: Identity): Promise<Announcement> {
  return transaction(run, async () => {
    await run(LOCK_HOST_START, [id.host]);
    const alive = (await run<{ instance: number }>(OTHERS_ALIVE, [id.host, id.pid])).map((r) => r.instance);
    await run(TAKE_LIVENESS, [id.host, id.pid]);
    const current = alive.length > 0 ? (await run<{ id: string }>(CURRENT_START, [id.host]))[0]?.id : undefined;
    const cameUpInThisStart = current !== undefined && (await run(CAME_UP, [current, id.instance])).length > 0;
    const { serverStarted, event } = startEvent({ alive, instance: id.instance, pm2Restarts: id.pm2Restarts, cameUpInThisStart });
    if (!serverStarted && current === undefined) throw new Error(`live instances of ${id.host} but no start of it recorded`);
    const startId = serverStarted ? await recordStart(run, id) : current!;
    await run(UPSERT_INSTANCE, [id.host, id.pid, id.instance, startId, id.pm2Restarts, process.memoryUsage.rss()]);
    await run(INSERT_EVENT, [startId, id.instance, id.pid, event]);
    await insertEntry(run, { stype: 'system', description: `instance ${id.instance} ${event} (pid ${id.pid})`, host: id.host, instance: id.instance });
    return { serverStarted, event, startId };
  });
}

async function recordStart(run: Run, id: Identity): Promise<string> {
  const [start] = await run<{ id: string }>(NEW_START, [id.host]);
  await insertEntry(run, { stype: 'system', description: 'server started', host: id.host, instance: id.instance });
  await run(FORGET_GONE, [id.host]);
  return start!.id;
}

/** After a database restart the locks are gone: take ours back, and point our row at the new session. */
export async function retakeLiveness(run: Run, id: Identity): Promise<void> {
  await run(TAKE_LIVENESS, [id.host, id.pid]);
  await run(REBIND, [id.host, id.pid]);
}

export const heartbeat = (run: Run, id: Identity) => run(HEARTBEAT, [id.host, id.pid, process.memoryUsage.rss()]);
export const leave = (run: Run, id: Identity) => run(LEAVE, [id.host, id.pid]);

// unnamed: the doctor may ask them through PgBouncer in transaction mode, where names do not carry over
const LIVE_VIEW_MADE: Statement = { name: '', text: `SELECT to_regclass('live_instances') IS NOT NULL AS present` };
const LIVE_COUNT: Statement = { name: '', text: 'SELECT count(*)::int AS n FROM live_instances' };
/**
 * Live instances of every host, each holding one liveness connection: the doctor's connection budget
 * counts them. None before the migration that makes live_instances.
 */
export async function liveCount(run: Run): Promise<number> {
  const [view] = await run<{ present: boolean }>(LIVE_VIEW_MADE, []);
  return view?.present ? ((await run<{ n: number }>(LIVE_COUNT, []))[0]?.n ?? 0) : 0;
}

/** Live instances of every host, for /api/instances and the console. */
export async function liveInstances(run: Run) {
  return (await run<LiveInstanceRow>(LIVE, [])).map((r) => ({
    host: r.host,
    instance: r.instance,
    pid: r.pid,
    started_at: r.started_at.toISOString(),
    last_seen: r.last_seen.toISOString(),
    restarts: r.restarts,
    rss: Number(r.rss),
  }));
}

/** The start history, newest first, each start with the instance events under it. */
export async function startHistory(run: Run, query: { host?: string | undefined; limit: number }) {
  const starts = await run<ServerStartRow>(STARTS, [query.host ?? null, query.limit]);
  const events = await run<InstanceEventRow>(EVENTS_OF, [starts.map((s) => s.id)]);
  return starts.map((s) => ({
    host: s.host,
    timestamp: s.timestamp.toISOString(),
    entries: events
      .filter((e) => e.start_id === s.id)
      .map((e) => ({ instance: e.instance, pid: e.pid, event: e.event, timestamp: e.timestamp.toISOString() })),
  }));
}
