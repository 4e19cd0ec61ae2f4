import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectWithRetry } from '../db/database.js';
import { runOn, type Run } from '../db/lean.js';
import type { Logger } from '../logger.js';
import { DATABASE_WAIT_MS } from '../timeouts.js';
import { heartbeat, leave, register, retakeLiveness, type Announcement, type Identity } from './queries.js';

/**
 * This process's presence in the database: its liveness lock, held on a connection of its own for
 * its whole life, its row in `instances`, and its startup log entries (the rule: startup-rule.ts;
 * the statements: queries.ts). Crashes, `pm2 kill` and reboots need no timer: the server drops the
 * locks of dead connections.
 */
export class Presence {
  private client: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
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
    const announcement = await register(runOn(client), this.id);
    const { serverStarted, event, startId } = announcement;
    if (serverStarted) this.logger.info({ event: 'server_started', startId }, 'server started');
    this.logger.info({ event: `instance_${event}`, startId }, `instance ${this.id.instance} ${event} (pid ${this.id.pid})`);
    return announcement;
  }

  /**
   * A runner on the liveness connection, for another session lock that must go when this process
   * does (the log retention's); undefined while it reconnects or after close.
   */
  session(): Run | undefined {
    return this.client && !this.reconnecting && !this.closed ? runOn(this.client) : undefined;
  }

  startHeartbeat(everyMs = 5_000): void {
    this.timer = setInterval(() => void this.beat(), everyMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    const client = this.client;
    if (!client || this.reconnecting) return;
    await heartbeat(runOn(client), this.id).catch((err: Error) => this.logger.debug({ err }, 'heartbeat failed'));
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
        const client = await connectWithRetry(this.url, 'sitelog-liveness', this.logger, { timeoutMs: DATABASE_WAIT_MS });
        if (this.closed) {
          await client.end();
          return;
        }
        await retakeLiveness(runOn(client), this.id);
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
    clearInterval(this.timer);
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    await leave(runOn(client), this.id).catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}
