import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectWithRetry } from '../db/database.js';
import type { Logger } from '../logger.js';
import type { InstanceEventKind } from './model.js';

type Identity = { host: string; instance: number; pid: number; pm2Restarts: number };

export type Announcement = { serverStarted: boolean; event: InstanceEventKind; startId: string };

// The liveness lock of a process: (hashtext('sitelog:live:' || host), pid), held for its whole life on
// a connection of its own. The view live_instances joins the same expression.
const TAKE_LIVENESS = `SELECT pg_advisory_lock(hashtext('sitelog:live:' || $1::text), $2::int)`;

const INSERT_LOG = `INSERT INTO system_logs (stype, description, host, instance) VALUES ('system', $1, $2, $3)`;

/**
 * This process's presence in the database: its liveness lock, its row in `instances`, and the
 * startup log. A start of the server is decided under a per-host transaction lock, while the deciding
 * process already holds its own liveness lock, so instances starting in parallel see each other and
 * exactly one of them writes "server started". Crashes, `pm2 kill` and reboots need no timer: the
 * server drops the locks of dead connections.
 */
export class Presence {
  private client: pg.Client | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;
  private reconnecting: Promise<void> | undefined;

  constructor(
    private readonly id: Identity,
    private readonly url: string,
    private readonly logger: Logger,
  ) {}

  /** Registers this process and writes its startup log entries; `client` becomes its liveness connection. */
  async announce(client: pg.Client): Promise<Announcement> {
    this.adopt(client);
    const { host, instance, pid, pm2Restarts } = this.id;
    await client.query('BEGIN');
    try {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext('sitelog:start:' || $1::text))`, [host]);
      const alive = await client.query<{ instance: number }>(
        'SELECT instance FROM live_instances WHERE host = $1 AND pid <> $2',
        [host, pid],
      );
      await client.query(TAKE_LIVENESS, [host, pid]);
      const serverStarted = alive.rowCount === 0;
      let startId: string;
      let event: InstanceEventKind;
      if (serverStarted) {
        const started = await client.query<{ id: string }>(
          'INSERT INTO server_starts (host) VALUES ($1) RETURNING id',
          [host],
        );
        startId = started.rows[0]!.id;
        event = 'started';
        await client.query(INSERT_LOG, ['server started', host, instance]);
        // Rows of processes that are gone: kept until now so a crash could be told from a new start.
        await client.query(
          'DELETE FROM instances i WHERE host = $1 AND NOT EXISTS (SELECT 1 FROM live_instances l WHERE l.host = i.host AND l.pid = i.pid)',
          [host],
        );
      } else {
        const current = await client.query<{ id: string }>(
          'SELECT id FROM server_starts WHERE host = $1 ORDER BY id DESC LIMIT 1',
          [host],
        );
        startId = current.rows[0]!.id;
        const seen = await client.query('SELECT 1 FROM instance_events WHERE start_id = $1 AND instance = $2 LIMIT 1', [
          startId,
          instance,
        ]);
        // pm2 reload starts the replacement while the old process of that id still runs. A restart
        // is an id that already came up in this start and that PM2 restarted; anything else (an id
        // new to this start, or a scale-up's fresh PM2 process) started.
        event = alive.rows.some((r) => r.instance === instance)
          ? 'reloaded'
          : pm2Restarts > 0 && seen.rowCount !== 0
            ? 'restarted'
            : 'started';
      }
      await client.query(
        `INSERT INTO instances (host, pid, instance, backend_pid, start_id, restarts, rss)
         VALUES ($1, $2, $3, pg_backend_pid(), $4, $5, $6)
         ON CONFLICT (host, pid) DO UPDATE SET instance = EXCLUDED.instance, backend_pid = EXCLUDED.backend_pid,
           start_id = EXCLUDED.start_id, started_at = now(), last_seen = now(),
           restarts = EXCLUDED.restarts, rss = EXCLUDED.rss`,
        [host, pid, instance, startId, pm2Restarts, process.memoryUsage.rss()],
      );
      await client.query('INSERT INTO instance_events (start_id, instance, pid, event) VALUES ($1, $2, $3, $4)', [
        startId,
        instance,
        pid,
        event,
      ]);
      await client.query(INSERT_LOG, [`instance ${instance} ${event} (pid ${pid})`, host, instance]);
      await client.query('COMMIT');
      if (serverStarted) this.logger.info({ event: 'server_started', startId }, 'server started');
      this.logger.info({ event: `instance_${event}`, startId }, `instance ${instance} ${event} (pid ${pid})`);
      return { serverStarted, event, startId };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  startHeartbeat(everyMs = 5_000): void {
    this.heartbeat = setInterval(() => void this.beat(), everyMs);
    this.heartbeat.unref();
  }

  private async beat(): Promise<void> {
    const client = this.client;
    if (!client || this.reconnecting) return;
    await client
      .query('UPDATE instances SET last_seen = now(), rss = $3 WHERE host = $1 AND pid = $2', [
        this.id.host,
        this.id.pid,
        process.memoryUsage.rss(),
      ])
      .catch((err: Error) => this.logger.debug({ err }, 'heartbeat failed'));
  }

  private adopt(client: pg.Client): void {
    this.client = client;
    client.on('end', () => {
      if (this.closed || this.client !== client) return;
      this.logger.warn('liveness connection lost; reconnecting');
      this.reconnecting ??= this.reconnect().finally(() => (this.reconnecting = undefined));
    });
  }

  /**
   * After a database restart our locks are gone. Take them back without writing any startup entry:
   * this process did not start, the database did.
   */
  private async reconnect(): Promise<void> {
    while (!this.closed) {
      try {
        const client = await connectWithRetry(this.url, 'sitelog-liveness', this.logger, { timeoutMs: 60_000 });
        if (this.closed) {
          await client.end();
          return;
        }
        await client.query(TAKE_LIVENESS, [this.id.host, this.id.pid]);
        await client.query(
          'UPDATE instances SET backend_pid = pg_backend_pid(), last_seen = now() WHERE host = $1 AND pid = $2',
          [this.id.host, this.id.pid],
        );
        this.adopt(client);
        this.logger.info('liveness connection restored');
        return;
      } catch (err) {
        this.logger.warn({ err }, 'liveness reconnect failed; retrying');
        await sleep(1_000);
      }
    }
  }

  /** Leaves: the row goes, and closing the connection releases the liveness lock. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await client
      .query('DELETE FROM instances WHERE host = $1 AND pid = $2', [this.id.host, this.id.pid])
      .catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}
