import { spawn } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, envFields, EXIT_CONFIG, parseEnv } from '../config.js';
import { findNginx, renderStandalone } from './nginx.js';

// The local `proxy` app: renders nginx/ into the folder of `-c FILE` for this stack's ports, then
// runs nginx in the foreground as its child, passing PM2's signals on (SIGQUIT: nginx's graceful
// stop). Rendering here, at the app's start, keeps ecosystem.config.js free of side effects.
//   node dist/ops/proxy.js -c DATA_DIR/nginx/local.conf

const SIGNALS = ['SIGQUIT', 'SIGTERM', 'SIGINT', 'SIGHUP'] as const;

function main(): void {
  const { values } = parseArgs({ options: { c: { type: 'string' } } });
  let env: { PORT: number; PROXY_PORT: number; METRICS_ALLOW: string[] };
  try {
    env = parseEnv(z.object({ PORT: envFields.PORT, PROXY_PORT: envFields.PROXY_PORT, METRICS_ALLOW: envFields.METRICS_ALLOW }), process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`sitelog proxy: ${err.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  const nginx = findNginx();
  if (!values.c || !nginx) {
    process.stderr.write(`sitelog proxy: ${!values.c ? 'usage: proxy -c FILE' : 'no nginx binary found'}\n`);
    process.exit(EXIT_CONFIG);
  }
  const config = renderStandalone(path.dirname(path.resolve(values.c)), {
    upstreams: [`127.0.0.1:${env.PORT}`],
    listen: `127.0.0.1:${env.PROXY_PORT}`,
    metricsAllow: env.METRICS_ALLOW,
  });
  const child = spawn(nginx, ['-e', 'stderr', '-c', config], { stdio: 'inherit' });
  for (const signal of SIGNALS) process.on(signal, () => child.kill(signal));
  child.on('error', (err) => {
    process.stderr.write(`sitelog proxy: ${err.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

main();
