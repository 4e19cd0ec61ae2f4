import { setTimeout as sleep } from 'node:timers/promises';
import type { Sequelize } from 'sequelize';
import type { Config } from '../config.js';
import { withConnection, type Run } from '../db/lean.js';
import type { Logger } from '../logger.js';
import { STYPES, type Stype } from './model.js';
import { deleteExpired, releaseRetentionLock, tryRetentionLock } from './queries.js';

// LOG_RETENTION_DAYS: expired entries leave system_logs in small batches (docs/retention.md). Every
// web process offers a pass on a timer; the one that takes the retention lock does the work, the
// others skip until their next offer.

/**
 * The start history (`system`) and the audit trail of the console (`security`) are kept at least a
 * year: they are few (a handful per start, a few per failed login, which the login throttle bounds),
 * and a year is what an incident review or an audit looks back over.
 */
export const KEPT_AT_LEAST_DAYS: Partial<Record<Stype, number>> = { system: 365, security: 365 };

/** How many days each type of entry is kept, given LOG_RETENTION_DAYS: the rule, as a pure function. */
export function retentionDays(days: number): Record<Stype, number> {
  return Object.fromEntries(STYPES.map((stype) => [stype, Math.max(days, KEPT_AT_LEAST_DAYS[stype] ?? 0)])) as Record<Stype, number>;
}

/**
 * Rows per DELETE: a statement of a few tens of milliseconds, far inside the 5 s statement_timeout
 * even on a busy database, whose row locks nobody else wants (writes insert new rows).
 */
export const BATCH_ROWS = 5_000;
/**
 * Between two batches the job waits as long as the last batch took, and at least this: it uses at
 * most half of one database backend, and leaves the WAL writer and autovacuum room to keep up.
 */
const MIN_PAUSE_MS = 100;
/** The first offer after a process starts: late enough not to compete with its start or a reload. */
export const FIRST_OFFER_MS = 30_000;

/** What one pass removed, and when (startedAt + ms lies inside the time it held the lock). */
export type RetentionReport = {
  rows: number;
  batches: number;
  ms: number;
  byType: Partial<Record<Stype, number>>;
  startedAt: string;
  stopped: boolean;
};

/**
 * Removes every expired entry, type by type and batch by batch, each batch a statement of its own on
 * a pooled connection (through PgBouncer too). The retention lock is held on `session`, the process's
 * liveness connection: a session to PostgreSQL itself that lives as long as the process, so the lock
 * goes when the process does, and taking it costs no connection of its own. Undefined when another
 * process holds it. Stops between batches once `signal` aborts.
 */
export async function removeExpired(sequelize: Sequelize, session: Run, days: number, signal: AbortSignal): Promise<RetentionReport | undefined> {
  if (!(await tryRetentionLock(session))) return undefined;
  try {
    return await removeUnderLock(sequelize, retentionDays(days), signal);
  } finally {
    await releaseRetentionLock(session);
  }
}

async function removeUnderLock(sequelize: Sequelize, keep: Record<Stype, number>, signal: AbortSignal): Promise<RetentionReport> {
  const started = performance.now();
  const report: RetentionReport = { rows: 0, batches: 0, ms: 0, byType: {}, startedAt: new Date().toISOString(), stopped: false };
  for (const stype of STYPES) {
    if (!(await removeType(sequelize, stype, keep[stype], signal, report))) {
      report.stopped = true;
      break;
    }
  }
  report.ms = Math.round(performance.now() - started);
  return report;
}

/** Removes the expired entries of one type, counting them in `report`; false when stopped before the last batch. */
async function removeType(sequelize: Sequelize, stype: Stype, days: number, signal: AbortSignal, report: RetentionReport): Promise<boolean> {
  let from: Date | null = null;
  for (;;) {
    if (signal.aborted) return false;
    const batchStarted = performance.now();
    const batch = await withConnection(sequelize, (run) => deleteExpired(run, { stype, days, from, limit: BATCH_ROWS }));
    if (batch.removed > 0) {
      report.rows += batch.removed;
      report.batches += 1;
      report.byType[stype] = (report.byType[stype] ?? 0) + batch.removed;
    }
    if (batch.removed < BATCH_ROWS) return true;
    from = batch.last;
    // aborted at shutdown: the check at the top of the loop ends the pass
    await sleep(Math.max(MIN_PAUSE_MS, performance.now() - batchStarted), undefined, { signal }).catch(() => undefined);
  }
}

/**
 * The timer of one process: offers a pass soon after start, then every `everyMs` after the previous
 * one ended (passes of one process never overlap). A failed pass is a warning and is tried again at
 * the next offer; nothing here can throw into the process.
 */
export class RetentionJob {
  private timer: NodeJS.Timeout | undefined;
  private offering: Promise<void> | undefined;
  private readonly stopping = new AbortController();

  constructor(
    private readonly sequelize: Sequelize,
    /** The liveness connection's runner, when it is there (not while it reconnects). */
    private readonly session: () => Run | undefined,
    private readonly policy: { days: number; everyMs: number },
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.logger.info({ event: 'log_retention_on', days: retentionDays(this.policy.days), everyMs: this.policy.everyMs }, `log retention: entries older than ${this.policy.days} days are removed`);
    this.schedule(Math.min(FIRST_OFFER_MS, this.policy.everyMs));
  }

  private schedule(ms: number): void {
    if (this.stopping.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.offering = this.offer().finally(() => {
        this.offering = undefined;
        this.schedule(this.policy.everyMs);
      });
    }, ms);
    // a pending offer never keeps a stopping process alive
    this.timer.unref();
  }

  private async offer(): Promise<void> {
    const session = this.session();
    if (!session) return this.logger.debug({ event: 'log_retention_later' }, 'log retention: the liveness connection is reconnecting; next offer');
    try {
      const report = await removeExpired(this.sequelize, session, this.policy.days, this.stopping.signal);
      if (!report) this.logger.debug({ event: 'log_retention_busy' }, 'log retention: another process is running it');
      else if (report.rows > 0 || report.stopped) this.logger.info({ event: 'log_retention', ...report }, `log retention: removed ${report.rows} entries in ${report.batches} batches (${report.ms} ms)${report.stopped ? ', stopped at shutdown' : ''}`);
    } catch (err) {
      this.logger.warn({ err, retryInMs: this.policy.everyMs }, 'log retention pass failed; another pass at the next offer');
    }
  }

  /** Stops the timer and waits for the batch in progress, if any (the pass stops after it). */
  async stop(): Promise<void> {
    this.stopping.abort();
    clearTimeout(this.timer);
    await this.offering;
  }
}

/** The job, started, when LOG_RETENTION_DAYS is set; unset, nothing is ever removed. */
export function startRetention(
  sequelize: Sequelize,
  session: () => Run | undefined,
  config: Pick<Config, 'LOG_RETENTION_DAYS' | 'LOG_RETENTION_INTERVAL_MS'>,
  logger: Logger,
): RetentionJob | undefined {
  if (config.LOG_RETENTION_DAYS === undefined) {
    logger.info({ event: 'log_retention_off' }, 'log retention off (LOG_RETENTION_DAYS unset): entries are kept forever');
    return undefined;
  }
  const job = new RetentionJob(sequelize, session, { days: config.LOG_RETENTION_DAYS, everyMs: config.LOG_RETENTION_INTERVAL_MS }, logger);
  job.start();
  return job;
}
