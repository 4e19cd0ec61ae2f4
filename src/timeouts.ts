// The bounds of a web process's life. ecosystem.config.js sets PM2's timers from these
// (listen_timeout above the startup deadline, kill_timeout above the shutdown bound).

/** How long an instance waits for the database at startup before giving up. */
export const DATABASE_WAIT_MS = 60_000;
/** The longest graceful shutdown, force exit included. */
export const SHUTDOWN_MS = 8_000;
/** Node keeps idle upstream connections longer than nginx does (keepalive_timeout 30s in nginx/), so nginx closes first. */
export const KEEP_ALIVE_MS = 65_000;
/**
 * After a shutdown starts, kept-alive connections are served (each response closing its connection)
 * this long before idle ones are closed. Under load every connection sees a request well within it;
 * an idle one nginx picks at the moment it closes is retried by nginx (proxy_next_upstream), so the
 * grace only has to make that rare. It is paid once per instance by every `pm2 reload`.
 */
export const DRAIN_GRACE_MS = 500;
/**
 * How long one new database connection may take before its request gives up. An outage does not wait
 * for it: a stopped or restarting server refuses or drops connections at once, which closes the
 * database gate (db/gate.ts), and the gate answers the requests still waiting. This bound is only for
 * a server that is slow, and under load on a small machine a new connection (fork, authentication)
 * can take more than half a second: failing the request then would turn a busy moment into a 503.
 */
export const DB_CONNECT_TIMEOUT_MS = 2_000;

/**
 * How long a new connection to a read replica may take. Short, unlike DB_CONNECT_TIMEOUT_MS: a
 * replica that does not answer costs its read nothing but a rerun on the primary (db/replicas.ts),
 * so a replica that hangs must not hold the read up for long.
 */
export const REPLICA_CONNECT_TIMEOUT_MS = 300;
/**
 * A replica further behind the primary than this counts as down: its reads go to the primary until
 * it has caught up, and `npm run doctor` fails on it. The log list may be this stale, never more.
 */
export const REPLICA_MAX_LAG_MS = 10_000;

/** How long a request waits for a pooled connection before it answers 503 (the pool is saturated). */
export const POOL_ACQUIRE_MS = 3_000;
/** PostgreSQL cancels a web process's statement after this (statement_timeout). */
export const STATEMENT_TIMEOUT_MS = 5_000;
/** PostgreSQL ends a web process's session left idle inside a transaction after this. */
export const IDLE_IN_TRANSACTION_MS = 10_000;
/**
 * How long a web process's statement waits for a table or row lock before PostgreSQL cancels it
 * (lock_timeout, SQLSTATE 55P03): the request answers 503 SITELOG_DB_BUSY and its pool connection
 * is free again. Our own lock waits (a duplicate key's insert waiting for the first to commit) last
 * milliseconds; a longer one means somebody holds the table (LOCK TABLE, a migration, a bulk job),
 * and waiting on would only pile requests up. Under a locked table a write waits at most
 * WRITE_SLOT_WAIT_MS for a write slot, then this for its lock: 4 s, within STATEMENT_TIMEOUT_MS. (Only when reads alone fill the whole pool may it also wait POOL_ACQUIRE_MS
 * for a connection; the request's deadline, REQUEST_DEADLINE_MS, bounds it all.)
 */
export const LOCK_WAIT_MS = 1_000;
/**
 * How long a log write waits for one of the write slots (src/db/lean.ts withWriteConnection): as
 * long as any request waits for a pooled connection, no shorter. Under a locked table every slot
 * frees within LOCK_WAIT_MS, so the 503 comes within this + LOCK_WAIT_MS; under a saturated machine
 * slots turn over slowly, and a shorter wait made writes the first to be refused (1.5 s answered
 * 6 writes of 6,827 503 under the seed load on 3 hosts × 4 instances, test/scaling.test.ts).
 */
export const WRITE_SLOT_WAIT_MS = POOL_ACQUIRE_MS;
/**
 * Every request is answered within this: past it, 503 with Retry-After, and its database work is
 * cancelled (src/in-flight.ts). nginx's proxy_read_timeout (15 s) sits above it, so when nginx times out
 * no worker is working on the request any more, and sending it again multiplies nothing: that is
 * a connection PM2's cluster master handed to a worker as it died, which nobody will ever read.
 */
export const REQUEST_DEADLINE_MS = 10_000;

/**
 * A web process whose event loop has not turned for this long is killed (SIGKILL) by its watchdog
 * thread, and PM2 restarts it (src/watchdog.ts, docs/watchdog.md). Nothing a healthy instance does
 * comes near it: the longest pause measured (every 5 s window of 24 clients reading the largest page,
 * 200 entries × 10,000 characters, then 64 reading small ones, on 2 busy cores) was 0.9 s, GC included.
 * Startup is not held to it (STARTUP_DEADLINE_MS bounds it instead) and a graceful shutdown only
 * awaits. Not longer: the loop is found blocked within this plus a check (WATCHDOG_CHECK_MS),
 * and a new instance takes 2-4 s to be ready on a loaded machine, all within the 10 s that issue #13
 * allows between a hung worker and its replacement.
 */
export const WATCHDOG_BLOCKED_MS = 3_000;
/** How often the watchdog thread looks for the main thread's heartbeat (which beats twice as often). */
export const WATCHDOG_CHECK_MS = 500;


/**
 * A web process not ready this long after it started is stuck: its watchdog thread writes one fatal
 * line naming the startup step it is in and kills it, and PM2 restarts it (src/watchdog.ts,
 * docs/watchdog.md). Twice the database wait, because it must never cut a start that is merely slow:
 * the first DATABASE_WAIT_MS is the database's (connectWithRetry gives up past it, plus its last
 * attempt's few seconds of connect timeouts); the second is for all that follows, which takes 2-4 s
 * on a loaded machine, a first start's migrations included, and otherwise waits only on other
 * instances: one running the migrations (its own start is bounded by this too), or the host's start
 * lock (a transaction of milliseconds per instance). A migration that runs longer than that belongs
 * before the instances start (`npm run migrate`, as deploy/deploy.sh does), not in their startup.
 */
export const STARTUP_DEADLINE_MS = 2 * DATABASE_WAIT_MS;
