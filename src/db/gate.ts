import { databaseUnavailable, sendHttpError, type HttpError } from '../errors.js';
import type { InFlight, InFlightRequest } from '../in-flight.js';
import type { Logger } from '../logger.js';
import { clientFor } from './database.js';

/** How long requests already in flight may wait for the database after the gate closed. */
const PENDING_GRACE_MS = 300;

/**
 * Closes when the database has gone away, so requests answer 503 at once instead of each trying a
 * connection of its own: hundreds of attempts a second would starve a restarting PostgreSQL of the
 * CPU it needs to come back. One probe per process reopens it as soon as a query succeeds.
 */
export class DatabaseGate {
  private closedSince: number | undefined;
  private probing: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly logger: Logger,
    /** The requests this process is answering: those it let in are answered when it closes. */
    private readonly inFlight: InFlight,
    /** Called for each request the closed gate answers 503 (a metric counts them). */
    private readonly onRefusal: () => void = () => undefined,
    private readonly probeEveryMs = 100,
  ) {}

  get open(): boolean {
    return this.closedSince === undefined;
  }

  close(reason: string): void {
    if (!this.open || this.stopped) return;
    this.closedSince = Date.now();
    this.logger.warn({ reason, inFlight: this.inFlight.size }, 'database unavailable; answering 503 until it is back');
    this.schedule();
    // Still closed a moment later (the probe did not reopen it): the requests already waiting on a
    // connection that will not come are answered now, not when their pool gives up.
    setTimeout(() => {
      if (!this.open) this.answerPending();
    }, PENDING_GRACE_MS).unref();
  }

  private answerPending(): void {
    const err = databaseUnavailable();
    for (const res of [...this.inFlight.waitingOnDatabase()]) {
      this.onRefusal();
      sendHttpError(res, err);
    }
  }

  private schedule(): void {
    this.probing = setTimeout(() => void this.probe(), this.probeEveryMs);
    this.probing.unref();
  }

  private async probe(): Promise<void> {
    const client = clientFor(this.url, undefined, 'sitelog-gate-probe', 1_000);
    try {
      await client.connect();
      await client.query('SELECT 1');
      this.logger.info({ downMs: Date.now() - this.closedSince! }, 'database is back');
      this.closedSince = undefined;
    } catch {
      if (!this.stopped) this.schedule();
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /**
   * Lets a request that needs the database in, or refuses it (the error to answer) while the gate
   * is closed. A request already let in when the gate closes (waiting on a connection that will not
   * come) is answered 503 shortly after, unless the gate reopened meanwhile; writes are idempotent
   * by key, so a client's retry never doubles one that did commit.
   */
  admit(request: InFlightRequest): HttpError | undefined {
    if (!this.open) {
      this.onRefusal();
      return databaseUnavailable();
    }
    request.needsDatabase = true;
    return undefined;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.probing);
  }
}
