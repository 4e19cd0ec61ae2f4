import { pm2 as cli, withPm2 } from './pm2.js';

// `npm stop`: web first (its shutdown still needs the database), then nginx, then the database, and
// the log rotation last.
// Data stays in DATA_DIR. The PM2 daemon goes too when nothing else runs under it.

async function main(): Promise<void> {
  const left = await withPm2(async (pm2) => {
    const running = new Set((await pm2.list()).map((p) => p.name));
    for (const name of ['web', 'proxy', 'db', 'logrotate'].filter((n) => running.has(n))) {
      await pm2.delete(name);
      process.stdout.write(`stopped ${name}\n`);
    }
    return (await pm2.listEverything()).length;
  });
  // the CLI's kill, which exits when the daemon is gone (the API's may leave this process waiting)
  if (left === 0) await cli(['kill']);
}

// PM2's API can keep handles open after its work is done: exit once ours is
main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`sitelog: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
