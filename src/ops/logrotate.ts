import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, EXIT_CONFIG, parseEnv } from '../config.js';
import { rotateDue, settingsSchema } from './log-rotation.js';
import { withPm2 } from './pm2.js';

// The logrotate app (ecosystem.config.js locally, deploy/logrotate.config.js in production): every
// LOG_ROTATE_CHECK_SECONDS, the PM2 log files past LOG_ROTATE_MAX_SIZE are renamed and reopened
// (src/ops/log-rotation.ts; why not copy-then-truncate: docs/log-rotation.md).

async function main(): Promise<void> {
  const settings = parseEnv(settingsSchema, process.env);
  const stopping = new AbortController();
  // PM2 stops an app with SIGINT
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => stopping.abort());
  const mb = (settings.LOG_ROTATE_MAX_SIZE / 1024 ** 2).toFixed(1);
  process.stdout.write(
    `logrotate: PM2 log files past ${mb} MB renamed and reopened, ${settings.LOG_ROTATE_KEEP} kept each, checked every ${settings.LOG_ROTATE_CHECK_SECONDS} s\n`,
  );
  // one connection for the app's life: the daemon that runs this app is there; a connection per
  // check could start a new daemon while `pm2 kill` takes the old one down
  await withPm2(async (pm2) => {
    while (!stopping.signal.aborted) {
      try {
        const rotated = await rotateDue(pm2, settings);
        if (rotated.length > 0) process.stdout.write(`logrotate: rotated ${rotated.map((f) => path.basename(f)).join(', ')}\n`);
      } catch (err) {
        process.stderr.write(`logrotate: ${(err as Error).message}\n`);
      }
      await sleep(settings.LOG_ROTATE_CHECK_SECONDS * 1000, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
  });
}

// PM2's API can keep handles open after its work is done: exit once ours is
main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`sitelog: logrotate: ${(err as Error).message}\n`);
    process.exit(err instanceof ConfigError ? EXIT_CONFIG : 1);
  },
);
