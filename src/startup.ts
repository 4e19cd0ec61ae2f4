import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import net from 'node:net';
import { createApp, requestClasses } from './app.js';
import { authenticate } from './auth.js';
import type { Config } from './config.js';
import type { AppContext } from './context.js';
import { checkPoolBudget, connectWithRetry } from './db/database.js';
import { DatabaseGate } from './db/gate.js';
import { migrate } from './db/migrate.js';
import { setPooledDefaults } from './db/pooler.js';
import { startReplicas } from './db/replicas.js';
import { createSequelize, poolState } from './db/sequelize.js';
import { Presence } from './instances/presence.js';
import type { Logger } from './logger.js';
import { startRetention } from './logs/retention.js';
import { HostMetrics } from './metrics/host.js';
import { Instruments } from './metrics/instruments.js';
import { systemLogger } from './logs/system-log.js';
import type { Shutdown } from './shutdown.js';
import type { StartupStep } from './startup-steps.js';
import { hangAt } from './testing/hang.js';
import { DATABASE_WAIT_MS, DRAIN_GRACE_MS, KEEP_ALIVE_MS, REQUEST_DEADLINE_MS } from './timeouts.js';
import { InFlight } from './in-flight.js';

/**
 * Stops accepting new connections but keeps serving the kept-alive ones for a grace period, each
 * response telling nginx to close its connection (see the 'request' hook below); only then closes
 * what is still idle. Closing an idle connection at once would race nginx reusing it.
 */
async function drain(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    // net.Server#close, not http.Server#close: the latter also drops idle connections right away
    net.Server.prototype.close.call(server, () => resolve());
  });
  let sweep: NodeJS.Timeout | undefined;
  const grace = setTimeout(() => {
    server.closeIdleConnections();
    sweep = setInterval(() => server.closeIdleConnections(), 50);
  }, DRAIN_GRACE_MS);
  try {
    await closed;
  } finally {
    clearTimeout(grace);
    clearInterval(sweep);
  }
}

/**
 * Starts one web process, as a checklist: config → its own Sequelize → wait for the database →
 * migrations (once, under a lock) → startup log → listen → tell PM2 it is ready. `onStep` hears
 * each step as it begins (the watchdog's startup deadline names the one a stuck process is in).
 */
export async function startWebProcess(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
  onStep: (step: StartupStep) => void = () => undefined,
): Promise<http.Server> {
  const step = async (name: StartupStep) => {
    onStep(name);
    if (config.SITELOG_TEST_STARTUP_HANG?.step === name) await hangAt(config.SITELOG_TEST_STARTUP_HANG);
  };
  await step('starting');
  const sequelize = createSequelize(config);
  shutdown.add('database pool', () => sequelize.close());

  await step('waiting for the database');
  // What needs a session (the liveness lock, the migrations' lock) goes to PostgreSQL itself, even
  // when the pool goes through PgBouncer: docs/scaling.md.
  const liveness = await connectWithRetry(config.DATABASE_DIRECT_URL, 'sitelog-liveness', logger, {
    timeoutMs: DATABASE_WAIT_MS,
    signal: shutdown.controller.signal,
  });
  const presence = new Presence(
    { host: config.SITELOG_HOST, instance: config.INSTANCE, pid: process.pid, pm2Restarts: config.PM2_RESTARTS },
    config.DATABASE_DIRECT_URL,
    logger,
  );
  shutdown.add('presence', () => presence.close());
  await step('pool budget');
  const budget = await checkPoolBudget(liveness, { instances: config.WEB_INSTANCES, poolMax: config.DB_POOL_MAX, pooled: config.DATABASE_POOLED });
  logger.debug(budget, 'pool budget fits');

  await step('migrations');
  await migrate(config.DATABASE_DIRECT_URL, liveness, logger, () => step('applying migrations'));
  if (config.DATABASE_POOLED) await setPooledDefaults(liveness, { pooled: config.DATABASE_URL, direct: config.DATABASE_DIRECT_URL }, logger);
  // stopped after the HTTP drain (shutdown steps run newest first): reads in flight finish on them
  const replicas = startReplicas(sequelize, config, logger);
  shutdown.add('read replicas', () => replicas.stop());

  await step('startup log');
  await presence.announce(liveness);
  presence.startHeartbeat();

  const instruments = new Instruments(() => poolState(sequelize), () => replicas.states());
  const inFlight = new InFlight(REQUEST_DEADLINE_MS);
  shutdown.add('requests in flight', () => inFlight.stop());
  const gate = new DatabaseGate(config.DATABASE_URL, logger, inFlight, () => instruments.gateRefusals.inc());
  shutdown.add('database gate', () => gate.stop());
  // stopped after the HTTP server (shutdown steps run newest first): its final counters are its last
  const host = new HostMetrics(path.join(config.DATA_DIR, 'metrics'), { app: config.PM2_APP, instance: config.INSTANCE, pid: process.pid }, instruments, logger);
  await step('metrics');
  await host.start();
  instruments.startSampling();
  shutdown.add('metrics', async () => {
    instruments.stop();
    await host.stop();
  });
  const ctx: AppContext = {
    gate,
    inFlight,
    config,
    sequelize,
    logger,
    auth: authenticate(config.API_TOKEN, (req) => req.session !== undefined),
    addSystemLog: systemLogger(sequelize, { host: config.SITELOG_HOST, instance: config.INSTANCE }, logger),
    metrics: { instruments, host },
  };
  const app = createApp(ctx);
  const server = http.createServer(requestClasses(app), (req, res) => {
    // During shutdown every response closes its connection, so nginx stops reusing it.
    if (shutdown.inProgress) res.shouldKeepAlive = false;
    app(req, res);
  });
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1_000;
  server.requestTimeout = 30_000;
  // its first pass comes well after the process is ready; stopped after the HTTP drain (steps run
  // newest first), so a batch in progress never holds the drain up
  const retention = startRetention(sequelize, () => presence.session(), config, logger);
  shutdown.add('log retention', () => retention?.stop());
  shutdown.add('http server', () => drain(server));
  await step('listening');
  server.listen(config.PORT, config.BIND_ADDRESS);
  await once(server, 'listening');
  return server;
}

