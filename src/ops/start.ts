import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseEnv, envFields, ConfigError } from '../config.js';
import { z } from 'zod';
import { list, pm2, ROOT } from './pm2.js';
import { findNginx } from './nginx.js';

// `npm start`: the whole local stack under PM2, returning once every instance is ready.
// Running it again while the stack is up reloads web (zero downtime) instead of starting twice.

const out = (line: string) => process.stdout.write(`${line}\n`);

async function waitReady(url: string, deadline: number): Promise<void> {
  for (;;) {
    const status = await fetch(url).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) throw new Error(`${url} answered ${status || 'nothing'}; see: npx pm2 logs`);
    await sleep(250);
  }
}

async function main(): Promise<void> {
  const env = parseEnv(
    z.object({ PORT: envFields.PORT, PROXY_PORT: envFields.PROXY_PORT, DATA_DIR: envFields.DATA_DIR }),
    process.env,
  );
  const started = Date.now();
  const running = await list();
  const web = running.filter((p) => p.name === 'web' && p.pm2_env.status === 'online');
  if (web.length > 0) {
    out('sitelog is running: reloading web');
    await pm2(['reload', 'ecosystem.config.js']);
  }
  // starts what is missing (everything on a first start); PM2 skips apps already online
  const online = new Set(running.filter((p) => p.pm2_env.status === 'online').map((p) => p.name));
  const missing = ['db', 'web', 'proxy'].filter((name) => !online.has(name));
  if (missing.length > 0) {
    const output = await pm2(['start', 'ecosystem.config.js', '--only', missing.join(',')]);
    for (const line of output.split('\n').filter((l) => l.startsWith('sitelog:'))) out(line);
  }
  const deadline = Date.now() + 90_000;
  const direct = `http://127.0.0.1:${env.PORT}/`;
  await waitReady(`${direct}readyz`, deadline);
  const proxied = env.PROXY_PORT !== 0 && findNginx() ? `http://127.0.0.1:${env.PROXY_PORT}/` : undefined;
  if (proxied) await waitReady(`${proxied}readyz`, deadline);
  const instances = (await list()).filter((p) => p.name === 'web' && p.pm2_env.status === 'online');
  out(`sitelog ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${instances.length} web instance(s)`);
  if (proxied) out(`  open      ${proxied}  (through nginx)`);
  out(`  direct    ${direct}  (web instances, loopback only)`);
  out(`  secrets   ${path.resolve(ROOT, env.DATA_DIR, 'secrets.env')}  (API_TOKEN, ADMIN_PASSWORD)`);
  out('  logs      npx pm2 logs        stop: npm stop');
}

main().catch((err: unknown) => {
  process.stderr.write(`sitelog: ${err instanceof ConfigError ? err.message : (err as Error).message}\n`);
  process.exit(1);
});
