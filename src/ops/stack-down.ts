import { withPm2 } from './pm2.js';

// `npm stop`: web first (its shutdown still needs the database), then nginx, then the database.
// Data stays in DATA_DIR. The PM2 daemon goes too when nothing else runs under it.

async function main(): Promise<void> {
  await withPm2(async (pm2) => {
    const running = new Set((await pm2.list()).map((p) => p.name));
    for (const name of ['web', 'proxy', 'db'].filter((n) => running.has(n))) {
      await pm2.delete(name);
      process.stdout.write(`stopped ${name}\n`);
    }
    if ((await pm2.listEverything()).length === 0) await pm2.killDaemon();
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`sitelog: ${(err as Error).message}\n`);
  process.exit(1);
});
