import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { Shutdown } from '../../src/shutdown.js';
import { startWebProcess } from '../../src/startup.js';
import { ADMIN_PASSWORD, API_TOKEN } from './stack.js';

/** One web process in this test process: the same startup path PM2 runs, without PM2. */
export async function startApp(databaseUrl: string, env: Record<string, string> = {}) {
  // a DATA_DIR each: two apps of one test process would otherwise share their metrics socket,
  // which is named by DATA_DIR and pid
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-app-'));
  const config = loadConfig({
    PORT: '1',
    DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    API_TOKEN,
    ADMIN_PASSWORD,
    SITELOG_HOST: 'test-host',
    LOG_LEVEL: 'silent',
    ...env,
  });
  const logger = createLogger({ host: config.SITELOG_HOST, instance: config.INSTANCE, level: config.LOG_LEVEL });
  const shutdown = new Shutdown(logger, 5_000, () => undefined);
  const server = await startWebProcess({ ...config, PORT: 0 }, logger, shutdown);
  const { port } = server.address() as AddressInfo;
  const stop = async () => {
    await shutdown.begin('test done');
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  return { base: `http://127.0.0.1:${port}`, config, stop };
}
