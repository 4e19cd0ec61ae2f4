import http from 'node:http';
import { once } from 'node:events';
import { createApp } from './app.js';
import { authenticate } from './auth.js';
import type { Config } from './config.js';
import type { AppContext } from './context.js';
import { checkPoolBudget, connectWithRetry } from './db/database.js';
import { migrate } from './db/migrate.js';
import { createSequelize } from './db/sequelize.js';
import { Presence } from './instances/presence.js';
import type { Logger } from './logger.js';
import { systemLogger } from './logs/system-log.js';
import type { Shutdown } from './shutdown.js';
import { DATABASE_WAIT_MS, KEEP_ALIVE_MS } from './timeouts.js';

/** Stops accepting, lets in-flight requests finish, and closes keep-alive sockets as they go idle. */
async function drain(server: http.Server): Promise<void> {
  const closed = once(server, 'close');
  server.close();
  server.closeIdleConnections();
  const sweep = setInterval(() => server.closeIdleConnections(), 50);
  try {
    await closed;
  } finally {
    clearInterval(sweep);
  }
}

/**
 * Starts one web process, as a checklist: config → its own Sequelize → wait for the database →
 * migrations (once, under a lock) → startup log → listen → tell PM2 it is ready.
 */
export async function start(config: Config, logger: Logger, shutdown: Shutdown): Promise<http.Server> {
  const sequelize = createSequelize(config);
  shutdown.add('database pool', () => sequelize.close());

  const liveness = await connectWithRetry(config.DATABASE_URL, 'sitelog-liveness', logger, {
    timeoutMs: DATABASE_WAIT_MS,
    signal: shutdown.controller.signal,
  });
  const presence = new Presence(
    { host: config.SITELOG_HOST, instance: config.INSTANCE, pid: process.pid, pm2Restarts: config.PM2_RESTARTS },
    config.DATABASE_URL,
    logger,
  );
  shutdown.add('presence', () => presence.close());
  const budget = await checkPoolBudget(liveness, { instances: config.WEB_INSTANCES, poolMax: config.DB_POOL_MAX });
  logger.debug(budget, 'pool budget fits');

  const readiness = { migrated: false };
  await migrate(sequelize, liveness, logger);
  readiness.migrated = true;

  await presence.announce(liveness);
  presence.startHeartbeat();

  const ctx: AppContext = {
    config,
    sequelize,
    logger,
    auth: authenticate(config.API_TOKEN),
    addSystemLog: systemLogger({ host: config.SITELOG_HOST, instance: config.INSTANCE }, logger),
    readiness,
  };
  const server = http.createServer(createApp(ctx));
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1_000;
  server.requestTimeout = 30_000;
  // A response finishing during shutdown tells nginx not to reuse its connection.
  server.on('request', (_req, res: http.ServerResponse) => {
    if (shutdown.inProgress) res.shouldKeepAlive = false;
  });
  shutdown.add('http server', () => drain(server));
  server.listen(config.PORT, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

