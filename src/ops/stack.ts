import path from 'node:path';
import { z } from 'zod';
import { envFields, parseEnv } from '../config.js';
import { findNginx } from './nginx.js';

// What ecosystem.config.js declares for the local stack, derived from the environment. PM2 evaluates
// that file at every start and reload, so this only reads: the secrets file and nginx's config are
// made by the processes themselves when they start (config.ts, db/embedded.ts, ops/proxy.ts).

const ROOT = path.resolve(__dirname, '..', '..');

const stackSchema = z.object({
  PORT: envFields.PORT,
  PROXY_PORT: envFields.PROXY_PORT,
  WEB_INSTANCES: envFields.WEB_INSTANCES,
  EMBEDDED_PG_PORT: envFields.EMBEDDED_PG_PORT,
  DATA_DIR: envFields.DATA_DIR,
  DATABASE_URL: envFields.DATABASE_URL.optional(),
});

/**
 * What the PM2 command that evaluates ecosystem.config.js will do with it, from PM2's own argv: PM2
 * gives the file no other way to know, and does not pass `--env` to it. One case needs it. `pm2
 * reload ecosystem.config.js`, the command ops run daily, reloads every app the file declares, and
 * PM2 reloads a fork-mode app by restarting it (pm2/lib/God/Reload.js): the database and nginx
 * would go down. On a reload the file therefore declares web alone. (`startOrReload` is a start
 * here: it must be able to start what is missing.)
 */
export function pm2Invocation(argv: readonly string[]): { reloading: boolean; production: boolean } {
  const args = argv.slice(2); // node, pm2's bin
  const command = args.find((a) => !a.startsWith('-'));
  const production = args.some((a, i) => a === '--env=production' || (a === '--env' && args[i + 1] === 'production'));
  return { reloading: command === 'reload', production };
}

/** WEB_INSTANCES for `--env production`, where the rest of the environment is the instances' to check. */
export function productionInstances(env: NodeJS.ProcessEnv): number | 'max' {
  return parseEnv(z.object({ WEB_INSTANCES: envFields.WEB_INSTANCES }), env).WEB_INSTANCES;
}

/** deploy/deploy.sh's slots: each release runs as the web app of one of them. */
const SLOTS = ['blue', 'green'] as const;
const webAppName = (slot?: (typeof SLOTS)[number]) => (slot ? `web-${slot}` : 'web');

/** The web app: `web`, or under deploy/deploy.sh the slot that runs a release, web-blue or web-green. */
export const isWebApp = (p: { name: string }): boolean => [undefined, ...SLOTS].some((slot) => p.name === webAppName(slot));

const slotSchema = z.object({
  SITELOG_SLOT: z
    .enum(SLOTS, { error: 'must be blue or green' })
    .optional()
    .describe("set by deploy/deploy.sh: the release's app is web-blue or web-green"),
});

/** The web app's name and instances under `--env production`: web, or deploy.sh's web-blue / web-green. */
export function productionWeb(env: NodeJS.ProcessEnv): { name: string; instances: number | 'max' } {
  const { SITELOG_SLOT: slot } = parseEnv(slotSchema, env);
  return { name: webAppName(slot), instances: productionInstances(env) };
}

export const NO_PROXY_NOTICE = 'sitelog: nginx is not installed, so the proxy app is off (apt-get install nginx-light)';

export type LocalStack = {
  dataDir: string;
  secretsFile: string;
  instances: number | 'max';
  /** Added to every app's environment. */
  env: Record<string, string>;
  /** The embedded PostgreSQL app, when DATABASE_URL is unset. */
  db: boolean;
  /** The nginx config the proxy app renders and runs, when nginx is installed and PROXY_PORT is not 0. */
  proxy?: { config: string; url: string };
  /** Where a browser goes: nginx when the proxy runs, else the web instances directly. */
  url: string;
  /** The web instances themselves (loopback). */
  directUrl: string;
  notices: string[];
};

/**
 * The logrotate app (src/ops/logrotate.ts), run from `root`: declared by ecosystem.config.js for the
 * local stack, and by deploy/logrotate.config.js in production, where ecosystem.config.js declares web
 * alone (SPEC) and deploy/deploy.sh starts the live release's rotation beside it.
 */
export function logrotateApp(root: string) {
  return {
    name: 'logrotate',
    namespace: 'sitelog',
    script: 'dist/ops/logrotate.js',
    cwd: root,
    exec_mode: 'fork',
    stop_exit_codes: [78],
    time: true,
    // PM2's API would print "Reloading all logs..." at every reopen
    env: { PM2_SILENT: 'true' },
  };
}

/** Everything the local stack derives from the environment, checked once with one line per problem. */
export function localStack(env: NodeJS.ProcessEnv): LocalStack {
  const vars = parseEnv(stackSchema, env);
  const dataDir = path.resolve(ROOT, vars.DATA_DIR);
  const secretsFile = path.join(dataDir, 'secrets.env');
  const nginx = vars.PROXY_PORT === 0 ? undefined : findNginx();
  const proxy = nginx
    ? { config: path.join(dataDir, 'nginx', 'local.conf'), url: `http://127.0.0.1:${vars.PROXY_PORT}/` }
    : undefined;
  return {
    dataDir,
    secretsFile,
    instances: vars.WEB_INSTANCES,
    env: { DATA_DIR: dataDir, SECRETS_FILE: secretsFile },
    db: vars.DATABASE_URL === undefined,
    ...(proxy && { proxy }),
    url: proxy?.url ?? `http://127.0.0.1:${vars.PORT}/`,
    directUrl: `http://127.0.0.1:${vars.PORT}/`,
    notices: vars.PROXY_PORT !== 0 && !nginx ? [NO_PROXY_NOTICE] : [],
  };
}
