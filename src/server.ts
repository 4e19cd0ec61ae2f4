import { ConfigError, EXIT_CONFIG, loadConfig, type Config } from './config.js';
import { FatalDatabaseError, PoolBudgetError } from './db/database.js';
import { captureStdout, createLogger, flushed } from './logger.js';
import { Shutdown } from './shutdown.js';
import { startWebProcess } from './startup.js';
import { STARTUP_STEPS, UNBOUNDED_STEPS } from './startup-steps.js';
import { SHUTDOWN_MS } from './timeouts.js';
import { armWatchdog } from './watchdog.js';

// The process PM2 runs, one per cluster instance. Importing it elsewhere is a mistake: it starts.
async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sitelog: ${err.message}\n`);
    await flushed(process.stderr);
    process.exit(EXIT_CONFIG);
  }
  const logger = createLogger({ host: config.SITELOG_HOST, instance: config.INSTANCE, level: config.LOG_LEVEL });
  captureStdout(logger);
  // Armed first: a startup that hangs, awaiting or blocked, is killed at the deadline, naming its step.
  const startup = armWatchdog(logger, {
    logFile: config.PM2_OUT_LOG,
    base: { host: config.SITELOG_HOST, instance: config.INSTANCE, pid: process.pid },
    startup: { steps: STARTUP_STEPS, unbounded: UNBOUNDED_STEPS, deadlineMs: config.STARTUP_DEADLINE_MS },
  });
  const shutdown = new Shutdown(logger, SHUTDOWN_MS);
  // a shutdown during startup has its own bound (SHUTDOWN_MS); the deadline would only misname it
  shutdown.controller.signal.addEventListener('abort', startup.over);
  // PM2 sends SIGINT (its kill_signal), or the 'shutdown' message with shutdown_with_message.
  process.on('SIGINT', () => void shutdown.begin('SIGINT'));
  process.on('SIGTERM', () => void shutdown.begin('SIGTERM'));
  process.on('message', (msg) => msg === 'shutdown' && void shutdown.begin('shutdown message'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception');
    void shutdown.begin('uncaught exception', 1);
  });

  try {
    await startWebProcess(config, logger, shutdown, startup.step);
  } catch (err) {
    if (shutdown.inProgress) return;
    const fatal = err instanceof PoolBudgetError || err instanceof FatalDatabaseError;
    logger.fatal({ err }, fatal ? err.message : 'startup failed');
    await shutdown.begin('startup failed', fatal ? EXIT_CONFIG : 1);
    return;
  }
  logger.info(
    { url: `http://127.0.0.1:${config.PORT}/`, startupMs: Math.round(performance.now()) },
    `instance ${config.INSTANCE} ready`,
  );
  startup.over();
  process.send?.('ready');
}

void main();
