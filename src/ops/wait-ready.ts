import os from 'node:os';
import { parseArgs } from 'node:util';
import { ConfigError } from '../config.js';
import { withPm2 } from './pm2.js';
import { NotReady, waitForApps } from './readiness.js';
import { productionInstances } from './stack.js';

// deploy/deploy.sh's check of a new release before it takes traffic:
//   node dist/ops/wait-ready.js --app web-green --url http://127.0.0.1:3001/readyz --timeout 60
// Exit 0 once every instance of the app (WEB_INSTANCES) is online and the URL answers 200; exit 1
// as soon as the app errors, stops or restarts, or at the timeout, with the app's own last lines.

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { app: { type: 'string' }, url: { type: 'string' }, timeout: { type: 'string', default: '60' } } });
  const { app, url } = values;
  const timeout = Number(values.timeout);
  if (!app || !url || !(timeout > 0)) {
    process.stderr.write('usage: wait-ready --app NAME --url URL [--timeout SECONDS]\n');
    process.exit(2);
  }
  const instances = productionInstances(process.env);
  await withPm2((pm2) =>
    waitForApps({
      pm2,
      apps: (p) => p.name === app,
      web: { name: app, instances: instances === 'max' ? os.availableParallelism() : instances },
      urls: [url],
      timeoutMs: timeout * 1000,
      restartsBefore: new Map(),
    }),
  );
}

// PM2's API can keep handles open after its work is done: exit once ours is
main().then(
  () => process.exit(0),
  (err: unknown) => {
    const known = err instanceof NotReady || err instanceof ConfigError;
    process.stderr.write(`deploy: ${known ? err.message : String((err as Error).stack ?? err)}\n`);
    process.exit(1);
  },
);
