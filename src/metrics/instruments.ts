import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Request } from 'express';
import client from 'prom-client';
import type { ReplicaState } from '../db/replicas.js';
import type { PoolState } from '../db/sequelize.js';

// One process's instruments: the Prometheus series it counts, and the samples the live console
// draws. The host's view (every instance summed) is made in host.ts from these.


/** One point of the live console's charts: the last interval of one process. */
export type Sample = {
  /** epoch ms at the end of the interval */
  t: number;
  /** share of one core, 0..1 and more */
  cpu: number;
  rss: number;
  rps: number;
  /** ms; null when the interval had no request */
  p99: number | null;
  /** server errors (5xx) in the interval */
  errors: number;
  /** server errors (5xx) in the last minute */
  errorsPerMin: number;
  /** ms, the event loop's 99th percentile delay over the interval */
  loopLag: number;
  poolInUse: number;
};

/** How often a sample is taken, and how many are kept: the console's 10 minutes. */
export const SAMPLE_EVERY_MS = 2_000;
const SAMPLES_KEPT = (10 * 60_000) / SAMPLE_EVERY_MS;
/** Durations kept per interval for its p99 (reservoir sampling past that). */
const RESERVOIR = 2_048;

/** One method, route and status: its counter and its histogram, labels bound. */
type Series = { count: { inc(): void }; duration: { observe(seconds: number): void } };

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The route a request matched, as declared (`/api/logs/:id`: every router declares its routes' whole
 * paths, app.ts), which Express leaves on the request once it dispatched to it; a request that
 * matched no route: 404s by name, the rest (static files, early refusals) together.
 */
const routeOf = (req: Request, status: number) => (req.route as { path?: string } | undefined)?.path ?? (status === 404 ? 'unmatched' : 'other');

export class Instruments {
  readonly registry = new client.Registry();
  private readonly requests = new client.Counter({
    name: 'sitelog_http_requests_total',
    help: 'HTTP requests answered, by method, declared route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  private readonly durations = new client.Histogram({
    name: 'sitelog_http_request_duration_seconds',
    help: 'Time from the request to its response head, by method and declared route',
    labelNames: ['method', 'route'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  readonly entriesStored = new client.Counter({
    name: 'sitelog_log_entries_stored_total',
    help: 'Log entries written by POST /api/logs',
    registers: [this.registry],
  });
  readonly idempotentReplays = new client.Counter({
    name: 'sitelog_idempotent_replays_total',
    help: 'POST /api/logs retries answered with the entry already stored under their key',
    registers: [this.registry],
  });
  readonly gateRefusals = new client.Counter({
    name: 'sitelog_db_gate_refusals_total',
    help: 'Requests answered 503 because the database was unavailable (the gate was closed)',
    registers: [this.registry],
  });

  private readonly children = new Map<string, Series>();
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private readonly samples: Sample[] = [];
  private interval = new IntervalStats();
  private lastCpu = process.cpuUsage();
  private lastTick = performance.now();
  private lastLoopLagMs = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: () => PoolState,
    private readonly replicas: () => readonly ReplicaState[] = () => [],
  ) {
    this.loopDelay.enable();
    const gauge = (name: string, help: string, value: () => number, aggregator: 'sum' | 'max' = 'sum') =>
      new client.Gauge({
        name,
        help,
        aggregator,
        registers: [this.registry],
        collect(this: client.Gauge) {
          this.set(value());
        },
      });
    gauge('sitelog_db_pool_size', 'Database connections open in the pool', () => this.pool().size);
    gauge('sitelog_db_pool_in_use', 'Database connections lent to requests now', () => this.pool().using);
    gauge('sitelog_db_pool_waiting', 'Requests waiting for a database connection now', () => this.pool().waiting);
    gauge('sitelog_event_loop_lag_seconds', "The event loop's 99th percentile delay over the last 2 s (the host's: the worst instance)", () => this.lastLoopLagMs / 1000, 'max');
    gauge('sitelog_heap_used_bytes', 'V8 heap in use', () => process.memoryUsage().heapUsed);
    gauge('sitelog_rss_bytes', 'Resident set size', () => process.memoryUsage.rss());
    // Each process reads its replicas' lag itself (every 2 s, db/replicas.ts): the host shows the
    // worst of its processes' readings, and a replica as up only when every process finds it up.
    const states = this.replicas;
    const perReplica = (name: string, help: string, value: (r: ReplicaState) => number | undefined, aggregator: 'max' | 'min') =>
      new client.Gauge({
        name,
        help,
        labelNames: ['replica'] as const,
        aggregator,
        registers: [this.registry],
        collect(this: client.Gauge<'replica'>) {
          this.reset();
          for (const r of states()) {
            const v = value(r);
            if (v !== undefined) this.set({ replica: r.replica }, v);
          }
        },
      });
    perReplica('sitelog_replica_lag_seconds', 'How far a read replica is behind the primary in time (0 when it has replayed all it received)', (r) => r.lagSeconds, 'max');
    perReplica('sitelog_replica_lag_bytes', 'WAL a read replica has received and not replayed yet', (r) => r.lagBytes, 'max');
    perReplica('sitelog_replica_up', 'Whether reads go to a read replica (1) or, down or too far behind, to the primary (0)', (r) => (r.up ? 1 : 0), 'min');
  }

  /** Counts a response when its head is written, so a client that saw it finds it counted. */
  observe(req: Request, status: number, seconds: number): void {
    const route = routeOf(req, status);
    const { count, duration } = this.series(req.method, route, status);
    count.inc();
    duration.observe(seconds);
    this.interval.add(status, seconds * 1000);
  }

  /**
   * The counter and histogram children of one method, route and status, made once: prom-client
   * hashes the labels on every inc() given as an object, a cost each request would pay. Bounded:
   * methods × declared routes × statuses.
   */
  private series(method: string, route: string, status: number): Series {
    const key = `${method} ${route} ${status}`;
    let series = this.children.get(key);
    if (!series) {
      series = { count: this.requests.labels(method, route, String(status)), duration: this.durations.labels(method, route) };
      this.children.set(key, series);
    }
    return series;
  }

  /** Starts the samples of the live console (one every SAMPLE_EVERY_MS). */
  startSampling(): void {
    this.timer = setInterval(() => this.sample(), SAMPLE_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.loopDelay.disable();
  }

  /** The last 10 minutes of samples, oldest first. */
  recentSamples(): Sample[] {
    return this.samples.slice();
  }

  private sample(): void {
    const now = performance.now();
    const seconds = (now - this.lastTick) / 1000;
    const cpu = process.cpuUsage(this.lastCpu);
    this.lastCpu = process.cpuUsage();
    this.lastTick = now;
    this.lastLoopLagMs = this.loopDelay.percentile(99) / 1e6;
    this.loopDelay.reset();
    const finished = this.interval;
    this.interval = new IntervalStats();
    const restOfMinute = this.samples.slice(-(60_000 / SAMPLE_EVERY_MS - 1));
    this.samples.push({
      t: Date.now(),
      cpu: (cpu.user + cpu.system) / 1e6 / seconds,
      rss: process.memoryUsage.rss(),
      rps: finished.count / seconds,
      p99: finished.p99(),
      errors: finished.errors,
      errorsPerMin: restOfMinute.reduce((sum, s) => sum + s.errors, finished.errors),
      loopLag: this.lastLoopLagMs,
      poolInUse: this.pool().using,
    });
    if (this.samples.length > SAMPLES_KEPT) this.samples.shift();
  }
}

/** Counts and a reservoir of durations over one sampling interval. */
class IntervalStats {
  count = 0;
  errors = 0;
  private readonly kept = new Float64Array(RESERVOIR);

  add(status: number, ms: number): void {
    if (status >= 500) this.errors++;
    const slot = this.count < RESERVOIR ? this.count : Math.floor(Math.random() * (this.count + 1));
    if (slot < RESERVOIR) this.kept[slot] = ms;
    this.count++;
  }

  p99(): number | null {
    const n = Math.min(this.count, RESERVOIR);
    if (n === 0) return null;
    const sorted = this.kept.slice(0, n).sort();
    return sorted[Math.min(n - 1, Math.ceil(n * 0.99) - 1)]!;
  }
}
