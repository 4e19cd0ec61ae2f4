import pg from 'pg';
import type { Sequelize } from 'sequelize';
import type { Config } from '../config.js';
import { DROPPED_TEXT, GONE_CODES } from '../errors.js';
import type { Logger } from '../logger.js';
import { REPLICA_CONNECT_TIMEOUT_MS, REPLICA_MAX_LAG_MS, STATEMENT_TIMEOUT_MS } from '../timeouts.js';
import { clientFor, NoAnswer, within } from './database.js';
import { onLent, runOn, withConnection, WorkAbandoned, type Run, type Statement } from './lean.js';
import { Slots } from './slots.js';
import type { Cancellation } from '../in-flight.js';

// Reads that need not see their own writes (the log list, the log browser) on the streaming
// replicas of DATABASE_READ_URLS. Not Sequelize's `replication` option: its read pool neither retries
// another server nor falls back to the primary when a replica stops (docs/scaling-research.md §5).
// Here each replica has a pg.Pool of its own, direct to PostgreSQL (named prepared statements are
// fine), and a read that fails for a reason of the replica's (refused, dropped, shutting down, no
// connection in REPLICA_CONNECT_TIMEOUT_MS) marks that replica down and runs again on the primary:
// reads are idempotent, so a stopped replica costs no request an error. A replica that is down is
// probed every second, and comes back once it answers and is no further behind than
// REPLICA_MAX_LAG_MS. Its lag is read every 2 s on a connection of its own: a process holds up to
// DB_POOL_MAX + 1 connections on each replica, as it does on the primary.
//
// The replicas are registered for the Sequelize they stand beside (a WeakMap, as db/lean.ts keeps
// the write slots), not passed through AppContext: the features' queries take `sequelize` as "the
// database", and which servers that database reads from is its own business, not a parameter every
// query function down from the routes would have to carry.

/** Connections a process holds on each replica beside its pool: the one that reads the lag. */
export const CONNECTIONS_BESIDE_READ_POOL = 1;

/** A replica's health, as /metrics shows it. Lag is left out while it cannot be read. */
export type ReplicaState = { replica: string; up: boolean; lagSeconds?: number; lagBytes?: number };

/** How often a replica that is up has its lag read; how often one that is down is probed. */
const SAMPLE_EVERY_MS = 2_000;
const PROBE_EVERY_MS = 1_000;
/** A lag query (or the connection for it) that does not answer within this: a replica that does not answer. */
const LAG_ANSWER_MS = 1_000;
/**
 * How long a read waits for one of the replica's connections before it goes to the primary: a
 * saturated replica sheds reads to the primary rather than answer 503, but not at the first
 * moment all its connections are busy, which under load is most moments.
 */
const REPLICA_ACQUIRE_MS = 1_000;

/** What the lag rule needs, as the replica reports it (LAG below). */
export type LagFacts = {
  /** false: a server that replays nothing (a primary, or a promoted replica) */
  recovery: boolean;
  /** a WAL receiver runs: the replica streams from its primary */
  streaming: boolean;
  /** everything received is replayed (null: nothing received by streaming yet) */
  caught_up: boolean | null;
  /** bytes received and not yet replayed */
  bytes: number | null;
  /** seconds since the last replayed commit was committed on the primary (null: none replayed since the replica started) */
  since_replay: number | null;
};

/**
 * How far behind its primary a replica is. `now() − pg_last_xact_replay_timestamp()` grows while
 * the primary is idle, so a replica that streams and has replayed all it received is 0 behind; one
 * that does not stream (its primary unreachable, its receiver restarting) cannot know what it
 * missed: it is as old as its last replayed commit, unknown (`seconds` undefined) without one.
 */
export function replicaLag(facts: LagFacts): { seconds: number | undefined; bytes: number } {
  if (!facts.recovery) return { seconds: 0, bytes: 0 };
  const bytes = Math.max(0, facts.bytes ?? 0);
  if (facts.streaming && facts.caught_up === true) return { seconds: 0, bytes };
  return { seconds: facts.since_replay === null ? undefined : Math.max(0, facts.since_replay), bytes };
}

/** Whether a lag lets a replica serve reads: known, and within REPLICA_MAX_LAG_MS. */
export const lagAllowed = (lag: { seconds: number | undefined }, maxLagMs = REPLICA_MAX_LAG_MS): boolean => lag.seconds !== undefined && lag.seconds * 1000 <= maxLagMs;

/** No connection to the replica could be made (refused, timed out, too many clients, bad credentials). */
export class ReplicaUnreachable extends Error {}
/** Every connection of the replica's pool is lent out, and none came back within REPLICA_ACQUIRE_MS. */
export class ReplicaBusy extends Error {}

// A server going or gone (errors.ts's, for the whole app), and what else says so of a replica: its
// database dropped (57P04), its host unreachable or unknown. Any 08xxx too (below).
const REPLICA_GONE_CODES = new Set([...GONE_CODES, '57P04', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND']);
// A standby cancels a query that conflicts with the WAL it replays (40001; 40P01 for a buffer pin
// deadlock): the replica is fine, this read is better served by the primary.
const RECOVERY_CONFLICT_CODES = new Set(['40001', '40P01']);
// What the replica has not replayed yet, or is not: a table, column, function or type a migration
// just made on the primary (42P01, 42703, 42883, 42704), a statement that writes (25006, read-only).
// The same read on the primary succeeds.
const BEHIND_CODES = new Set(['42P01', '42703', '42883', '42704', '25006']);
// node-postgres reports a dropped connection (errors.ts's DROPPED_TEXT), or a query unanswered past
// its query_timeout, without a code. Unlike the app's rule (any timeout: busy), only node-pg's own
// connect and query timeouts say a replica is gone; another timeout is this read's.
const REPLICA_TIMEOUT_TEXT = /timeout expired|Query read timeout/i;

/**
 * What a read's failure on a replica says: `down` (the replica is unreachable or went away: mark it
 * down and read from the primary), `elsewhere` (this read only: read it from the primary: a
 * conflict with recovery, what a migration made not replayed yet, or no pooled connection free in
 * time), or
 * undefined (the read's own failure, such as 22P02 or its statement timeout 57014, or the request
 * abandoned: the primary would fail it the same way, so it fails).
 */
export function replicaFailure(err: unknown): 'down' | 'elsewhere' | undefined {
  if (err instanceof ReplicaUnreachable) return 'down';
  if (err instanceof ReplicaBusy) return 'elsewhere';
  if (err instanceof WorkAbandoned) return undefined;
  const { code, severity, message } = err as { code?: unknown; severity?: unknown; message?: unknown };
  if (typeof code === 'string') {
    if (REPLICA_GONE_CODES.has(code) || code.startsWith('08')) return 'down';
    if (RECOVERY_CONFLICT_CODES.has(code) || BEHIND_CODES.has(code)) return 'elsewhere';
  }
  // FATAL ends the session, whatever its code
  if (severity === 'FATAL' || severity === 'PANIC') return 'down';
  if (code === undefined && err instanceof Error && typeof message === 'string' && (DROPPED_TEXT.test(message) || REPLICA_TIMEOUT_TEXT.test(message))) return 'down';
  return undefined;
}

/** What a replica says of its replay (the lag rule's facts; npm run doctor asks the same). */
export const LAG: Statement = {
  name: 'sitelog-replica-lag',
  text: `SELECT pg_is_in_recovery() AS recovery,
           EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS streaming,
           pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS caught_up,
           pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS bytes,
           extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS since_replay`,
};

async function readLag(run: Run): Promise<{ seconds: number | undefined; bytes: number }> {
  const [facts] = await run<LagFacts>(LAG, []);
  if (!facts) throw new Error('the lag query answered no row');
  return replicaLag(facts);
}

/** `host:port` of a URL: how a replica is named in logs and labels, never with its password. */
export function replicaName(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '5432'}`;
}

type Lag = { seconds: number | undefined; bytes: number };

/** A connection's socket, which pg keeps to itself: destroyed, whatever waits on it fails at once. */
const socketOf = (client: pg.Client) => (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream;

class Replica {
  readonly name: string;
  private readonly pool: pg.Pool;
  /**
   * The pool's connections, lent in arrival order: pg.Pool's own queue would wait only
   * connectionTimeoutMillis. A read that gets none within REPLICA_ACQUIRE_MS goes to the primary.
   */
  private readonly slots: Slots;
  /** Connections lent to reads now: cut when the replica stops answering (see check). */
  private readonly lent = new Set<pg.Client>();
  /**
   * The connection the lag is read on while the replica is up: a connection of its own, so that
   * reads holding every pooled one never keep a hung replica from being found out.
   */
  private monitor: pg.Client | undefined;
  up = false;
  lag: Lag | undefined;
  private downSince = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private stopped = false;
  /** Whether this time down was logged already. */
  private said = false;

  constructor(
    private readonly url: string,
    private readonly instance: number,
    poolMax: number,
    private readonly logger: Logger,
  ) {
    this.name = replicaName(url);
    this.pool = new pg.Pool({
      connectionString: url,
      max: poolMax,
      idleTimeoutMillis: 10_000,
      connectionTimeoutMillis: REPLICA_CONNECT_TIMEOUT_MS,
      application_name: `sitelog-web-${instance}-read`,
      statement_timeout: STATEMENT_TIMEOUT_MS,
      // A replica that hangs never enforces statement_timeout: past it, the client gives up
      // ('Query read timeout') and the read goes to the primary within the request's deadline.
      query_timeout: STATEMENT_TIMEOUT_MS + 1_000,
      keepAlive: true,
    });
    // A connection dropped (the replica stopping) emits 'error': the pool's when it is idle (the pool
    // then removes it), its own when it is lent out, even while its query is failing with the same
    // news. Unheard, either would be an uncaught error that ends the process.
    this.pool.on('error', this.dropped);
    this.pool.on('connect', (client) => client.on('error', this.dropped));
    this.slots = new Slots(poolMax, REPLICA_ACQUIRE_MS, () => new ReplicaBusy(`no connection to replica ${this.name} free within ${REPLICA_ACQUIRE_MS} ms`));
  }

  private readonly dropped = (err: Error): void => {
    if (replicaFailure(err) === 'down') this.markDown(err.message);
  };

  /** `work` on a connection of this replica's pool. */
  async read<T>(work: (run: Run) => Promise<T>, signal: Cancellation | undefined): Promise<T> {
    await this.slots.take();
    try {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw new ReplicaUnreachable(`replica ${this.name}: ${(err as Error).message}`, { cause: err });
      }
      this.lent.add(client);
      return await onLent(client, work, signal, (reusable) => {
        this.lent.delete(client);
        client.release(!reusable);
      });
    } finally {
      this.slots.give();
    }
  }

  markDown(reason: string): void {
    if (!this.up) return;
    this.up = false;
    this.said = true;
    this.downSince = Date.now();
    this.logger.warn({ replica: this.name, reason }, 'read replica down; its reads go to the primary');
    // probed within PROBE_EVERY_MS; a check running now schedules the next itself
    if (!this.checking) this.schedule();
  }

  private markUp(): void {
    this.up = true;
    this.said = false;
    this.logger.info({ replica: this.name, downMs: Date.now() - this.downSince, lagSeconds: this.lag?.seconds }, 'read replica up; reads go to it');
  }

  /** The next check: a probe soon while down, a lag sample while up. */
  schedule(delayMs = this.up ? SAMPLE_EVERY_MS : PROBE_EVERY_MS): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.checking = true;
      void this.check().finally(() => {
        this.checking = false;
        this.schedule();
      });
    }, delayMs);
    this.timer.unref();
  }

  /**
   * Reads the lag: on the monitor connection while up; while down, on a new connection (what reads
   * need, and what a replica whose postmaster hangs cannot give), with a longer connect timeout than
   * the pool's, so a replica slow to accept under load is not kept from coming back.
   */
  private async check(): Promise<void> {
    let connecting = false;
    try {
      let monitor = this.monitor;
      if (!this.up || !monitor) {
        connecting = true;
        this.closeMonitor();
        monitor = clientFor(this.url, undefined, `sitelog-web-${this.instance}-read-monitor`, LAG_ANSWER_MS);
        this.monitor = monitor;
        monitor.on('error', this.dropped);
        await within(LAG_ANSWER_MS, monitor.connect(), `replica ${this.name}`);
        connecting = false;
      }
      this.lag = await within(LAG_ANSWER_MS, readLag(runOn(monitor)), `replica ${this.name}`);
    } catch (err) {
      this.closeMonitor();
      this.lag = undefined;
      if (!this.up) {
        // once per time down: a replica that never came up says so too
        if (!this.said) this.logger.warn({ replica: this.name, reason: (err as Error).message }, 'read replica unavailable; its reads go to the primary');
        this.said = true;
        return;
      }
      this.markDown((err as Error).message);
      // A connection that stops answering a query (a hung host or server): the reads waiting on the
      // replica's other connections would wait for their query_timeout; cut, they go to the primary now.
      if (err instanceof NoAnswer && !connecting) for (const client of this.lent) socketOf(client).destroy();
      return;
    }
    if (this.stopped) {
      this.closeMonitor();
      return;
    }
    const allowed = lagAllowed(this.lag);
    const tooFar = `lag ${this.lag.seconds ?? 'unknown'} s is over ${REPLICA_MAX_LAG_MS / 1000} s`;
    if (this.up && !allowed) this.markDown(tooFar);
    else if (!this.up && allowed) this.markUp();
    else if (!this.up && !this.said) {
      this.logger.warn({ replica: this.name, reason: tooFar }, 'read replica too far behind; its reads go to the primary');
      this.said = true;
    }
  }

  private closeMonitor(): void {
    const monitor = this.monitor;
    this.monitor = undefined;
    if (!monitor) return;
    // not end(): a server that does not answer would never close it
    socketOf(monitor).destroy();
    void monitor.end().catch(() => undefined);
  }

  state(): ReplicaState {
    return { replica: this.name, up: this.up, ...(this.lag?.seconds !== undefined ? { lagSeconds: this.lag.seconds } : {}), ...(this.lag ? { lagBytes: this.lag.bytes } : {}) };
  }

  /** Closes the pool; bounded, because a replica that does not answer never closes a connection. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closeMonitor();
    await within(LAG_ANSWER_MS, this.pool.end(), `replica ${this.name}: closing its pool`).catch(() => undefined);
  }
}

/** The replicas of one process, checked in the background; none when DATABASE_READ_URLS is unset. */
export class Replicas {
  private next = 0;

  constructor(
    private readonly members: readonly Replica[],
    private readonly unregister: () => void,
  ) {}

  /** The next replica that is up, round robin; none when all are down. */
  pick(): Replica | undefined {
    for (let i = 0; i < this.members.length; i++) {
      const replica = this.members[(this.next + i) % this.members.length]!;
      if (replica.up) {
        this.next = (this.next + i + 1) % this.members.length;
        return replica;
      }
    }
    return undefined;
  }

  states(): ReplicaState[] {
    return this.members.map((r) => r.state());
  }

  async stop(): Promise<void> {
    this.unregister();
    await Promise.all(this.members.map((r) => r.stop()));
  }
}

const replicasByPool = new WeakMap<Sequelize, Replicas>();

/**
 * The replicas of DATABASE_READ_URLS, registered for `sequelize` and probed at once (reads go to
 * the primary until a replica has answered). `stop()` unregisters them and closes their pools.
 */
export function startReplicas(sequelize: Sequelize, config: Pick<Config, 'DATABASE_READ_URLS' | 'DB_POOL_MAX' | 'INSTANCE'>, logger: Logger): Replicas {
  const members = config.DATABASE_READ_URLS.map((url) => new Replica(url, config.INSTANCE, config.DB_POOL_MAX, logger));
  const replicas = new Replicas(members, () => replicasByPool.delete(sequelize));
  if (members.length === 0) return replicas;
  replicasByPool.set(sequelize, replicas);
  for (const replica of members) replica.schedule(0);
  return replicas;
}

/**
 * `work`, a read that need not see this process's own writes, on a replica that is up; on the
 * primary (withConnection) when none is, or when the replica fails it for a reason of its own
 * (replicaFailure). Without replicas, exactly withConnection.
 */
export async function withReadConnection<T>(sequelize: Sequelize, work: (run: Run) => Promise<T>, signal?: Cancellation): Promise<T> {
  const replica = replicasByPool.get(sequelize)?.pick();
  if (!replica) return withConnection(sequelize, work, signal);
  try {
    return await replica.read(work, signal);
  } catch (err) {
    const failure = replicaFailure(err);
    if (!failure || signal?.aborted) throw err;
    if (failure === 'down') replica.markDown((err as Error).message);
    return withConnection(sequelize, work, signal);
  }
}
