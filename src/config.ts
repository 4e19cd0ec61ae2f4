import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { embeddedDatabaseUrl, loadOrCreateSecrets, SECRET_NAMES } from './secrets.js';
import { STARTUP_STEPS } from './startup-steps.js';
import { STARTUP_DEADLINE_MS } from './timeouts.js';

const port = z.coerce.number().int().min(1).max(65535);
const POSTGRES_URL = /^postgres(ql)?:\/\/[^/]+\/[^/?]+/;
const postgresUrl = z.string().regex(POSTGRES_URL, 'must be postgres://user:password@host:port/database');

/** Every variable sitelog reads, one short description each; ops/stack.ts reuses the ones it needs. */
export const envFields = {
  PORT: port.default(3000).describe('port the web instances share, bound to 127.0.0.1'),
  BIND_ADDRESS: z
    .union([z.ipv4(), z.ipv6()], { error: 'must be an IPv4 or IPv6 address' })
    .default('127.0.0.1')
    .describe("address the web instances listen on: this host's own address when nginx runs on another host"),
  TRUST_PROXY: z
    .string()
    .default('loopback')
    .transform((s) => s.split(',').map((p) => p.trim()))
    .pipe(
      z.array(
        z.union([z.literal('loopback'), z.ipv4(), z.ipv6(), z.cidrv4(), z.cidrv6()], {
          error: 'must be "loopback" or addresses/CIDRs separated by commas',
        }),
      ),
    )
    .describe('the nginx hosts whose X-Forwarded-For the app believes (comma-separated addresses or CIDRs)'),
  PROXY_PORT: z.coerce.number().int().min(0).max(65535).default(8080).describe('nginx port; 0 = no proxy'),
  WEB_INSTANCES: z
    .union([z.literal('max'), z.coerce.number().int().min(1).max(256)])
    .default(2)
    .describe('number of web instances, or "max"'),
  DATABASE_URL: postgresUrl.describe('PostgreSQL URL (ecosystem.config.js points it at the embedded server when unset)'),
  DATABASE_DIRECT_URL: postgresUrl
    .optional()
    .describe('PostgreSQL itself, for what needs a session (liveness locks, migrations), when DATABASE_URL goes through PgBouncer in transaction mode (unset: DATABASE_URL)'),
  DATABASE_READ_URLS: z
    .string()
    .transform((s) => s.split(',').map((u) => u.trim()).filter((u) => u !== ''))
    .pipe(z.array(z.string().regex(POSTGRES_URL, 'must be postgres:// URLs separated by commas')).min(1, 'must name at least one replica'))
    .optional()
    .describe('streaming replicas (PostgreSQL itself, comma-separated) for the reads that need not see their own writes: the log list and the log browser'),
  DB_POOL_MAX: z.coerce.number().int().min(1).max(1000).default(10).describe('pool size per instance'),
  API_TOKEN: z.string().min(16, 'must be at least 16 characters').describe('bearer token of the JSON API'),
  ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').describe('password of the console'),
  SITELOG_HOST: z
    .string()
    .min(1)
    .max(255)
    .default(os.hostname())
    .describe('the name this host logs under'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DATA_DIR: z.string().default('./.data').describe('runtime state'),
  NODE_APP_INSTANCE: z.coerce.number().int().min(0).default(0).describe('set by PM2: this instance id'),
  restart_time: z.coerce.number().int().min(0).default(0).describe('set by PM2: restarts of this instance'),
  name: z.string().min(1).default('web').describe('set by PM2: the app this process belongs to (web, or web-blue / web-green under deploy.sh)'),
  pm_out_log_path: z.string().optional().describe("set by PM2: this instance's log file (the watchdog writes its last line there)"),
  EMBEDDED_PG_PORT: port.default(5433).describe('port of the embedded PostgreSQL (local stack only)'),
  LOG_RETENTION_DAYS: z.coerce
    .number()
    .int()
    .min(1)
    .max(36_500)
    .optional()
    .describe('entries older than this many days are removed in batches (unset: kept forever; docs/retention.md says what is kept longer)'),
  LOG_RETENTION_INTERVAL_MS: z.coerce
    .number()
    .int()
    .min(100)
    .max(86_400_000)
    .default(300_000)
    .describe('how often each instance offers a log retention pass (one process makes it at a time); the first offer comes 30 s after start, or sooner when this is shorter; tests shorten it'),
  METRICS_ALLOW: z
    .string()
    .default('127.0.0.1')
    .transform((s) => s.split(',').map((p) => p.trim()))
    .pipe(
      z.array(z.union([z.literal('loopback'), z.ipv4(), z.ipv6(), z.cidrv4(), z.cidrv6()], { error: 'must be addresses/CIDRs separated by commas' })),
    )
    // "loopback" as the networks it is, so nginx's allow lines and the app's check read one list
    .transform((entries) => entries.flatMap((e) => (e === 'loopback' ? ['127.0.0.0/8', '::1'] : [e])))
    .describe('the addresses that may scrape GET /metrics (nginx allows them, the app checks again)'),
  SITELOG_TEST_ROUTES: z
    .enum(['0', '1'], { error: 'must be 0 or 1' })
    .default('0')
    .transform((v) => v === '1')
    .describe('tests only: 1 adds routes that harm the process (e.g. block its event loop); never set it in production'),
  SITELOG_TEST_STARTUP_HANG: z
    .string()
    .transform((v) => ({ how: v.slice(0, v.indexOf(':')), step: v.slice(v.indexOf(':') + 1) }))
    .pipe(
      z.object({
        how: z.enum(['await', 'block'], { error: 'must be await:<step> or block:<step>' }),
        step: z.enum(STARTUP_STEPS, { error: `must name a step: ${STARTUP_STEPS.join(', ')}` }),
      }),
    )
    .optional()
    .describe('tests only, with SITELOG_TEST_ROUTES=1: startup hangs at this step for good, awaiting or with its event loop blocked (src/testing/hang.ts)'),
  SITELOG_TEST_STARTUP_DEADLINE_MS: z.coerce
    .number()
    .int()
    .min(1_000)
    .max(STARTUP_DEADLINE_MS)
    .optional()
    .describe('tests only, with SITELOG_TEST_ROUTES=1: a shorter startup deadline than STARTUP_DEADLINE_MS (src/timeouts.ts)'),
  SECRETS_FILE: z
    .string()
    .optional()
    .describe('set by ecosystem.config.js for the local stack: unset secrets come from this file, made on the first start'),
};
const schema = z.object(envFields);

export type Config = Readonly<
  Omit<
    z.infer<typeof schema>,
    | 'WEB_INSTANCES'
    | 'NODE_APP_INSTANCE'
    | 'restart_time'
    | 'name'
    | 'pm_out_log_path'
    | 'EMBEDDED_PG_PORT'
    | 'SECRETS_FILE'
    | 'DATABASE_DIRECT_URL'
    | 'DATABASE_READ_URLS'
    | 'SITELOG_TEST_STARTUP_DEADLINE_MS'
  > & {
    /** DATABASE_URL unless it goes through PgBouncer in transaction mode. */
    DATABASE_DIRECT_URL: string;
    /** Whether DATABASE_URL is a pooler's (DATABASE_DIRECT_URL set apart from it): no session survives a transaction there. */
    DATABASE_POOLED: boolean;
    DATABASE_READ_URLS: readonly string[];
    WEB_INSTANCES: number;
    PM2_APP: string;
    INSTANCE: number;
    PM2_RESTARTS: number;
    PM2_OUT_LOG: string | undefined;
    /** STARTUP_DEADLINE_MS, or the tests' shorter one. */
    STARTUP_DEADLINE_MS: number;
  }
>;

/** Exit code for a configuration error: PM2 lists it in stop_exit_codes so a bad config is no restart loop. */
export const EXIT_CONFIG = 78;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  }
}

const SECRET_KEYS = new Set(['API_TOKEN', 'ADMIN_PASSWORD', 'DATABASE_URL', 'DATABASE_DIRECT_URL', 'DATABASE_READ_URLS', 'EMBEDDED_PG_PASSWORD']);

/** Reads the environment once; reports every bad variable, one line each, without echoing secrets. */
export function parseEnv<S extends z.ZodType>(schema: S, env: NodeJS.ProcessEnv): z.infer<S> {
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = schema.safeParse(present);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '?');
      const value = present[key];
      const shown = value === undefined ? 'unset' : SECRET_KEYS.has(key) ? 'value hidden' : JSON.stringify(value);
      return `${key}: ${value === undefined ? 'required' : issue.message} (${shown})`;
    }),
  );
}

/**
 * The environment with the local stack's secrets filled in where unset. With SECRETS_FILE set (the
 * local stack's ecosystem.config.js sets it), API_TOKEN, ADMIN_PASSWORD, EMBEDDED_PG_PASSWORD and,
 * when DATABASE_URL is unset, the embedded server's URL come from that file, which is created on the
 * first start. Without it (production) what is missing stays missing, and validation says so.
 */
export function withLocalSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const file = env['SECRETS_FILE'];
  if (!file) return env;
  const { secrets } = loadOrCreateSecrets(path.resolve(file));
  const filled: NodeJS.ProcessEnv = { ...env };
  for (const name of SECRET_NAMES) filled[name] ||= secrets[name];
  const embeddedPort = envFields.EMBEDDED_PG_PORT.safeParse(env['EMBEDDED_PG_PORT'] || undefined);
  if (embeddedPort.success) filled['DATABASE_URL'] ||= embeddedDatabaseUrl(embeddedPort.data, secrets.EMBEDDED_PG_PASSWORD);
  return filled;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1)$/;

/**
 * Why this listening address and this set of trusted proxies do not go together, if they do not.
 * An address other hosts can reach means nginx runs elsewhere (or clients come straight in): with
 * only loopback trusted, the app takes the nginx host for the client, so one guesser's failed
 * logins would lock everybody out. The doctor says the same of a running stack.
 */
export function proxyTrustProblem(bindAddress: string, trustProxy: readonly string[]): string | undefined {
  if (LOOPBACK.test(bindAddress) || trustProxy.some((p) => p !== 'loopback')) return undefined;
  return `BIND_ADDRESS ${bindAddress} is reachable from other hosts, but TRUST_PROXY trusts only loopback: every client behind a remote nginx would look like that nginx; set TRUST_PROXY to the nginx host's address or CIDR`;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const {
    WEB_INSTANCES,
    NODE_APP_INSTANCE,
    restart_time,
    name,
    pm_out_log_path,
    DATABASE_DIRECT_URL,
    DATABASE_READ_URLS,
    EMBEDDED_PG_PORT: _port,
    SECRETS_FILE: _file,
    SITELOG_TEST_STARTUP_DEADLINE_MS,
    ...rest
  } = parseEnv(
    schema,
    withLocalSecrets(env),
  );
  const trustProblem = proxyTrustProblem(rest.BIND_ADDRESS, rest.TRUST_PROXY);
  if (trustProblem) throw new ConfigError([trustProblem]);
  const testOnly = { SITELOG_TEST_STARTUP_HANG: rest.SITELOG_TEST_STARTUP_HANG, SITELOG_TEST_STARTUP_DEADLINE_MS };
  const misplaced = rest.SITELOG_TEST_ROUTES ? [] : Object.entries(testOnly).filter(([, value]) => value !== undefined);
  if (misplaced.length > 0) throw new ConfigError(misplaced.map(([key]) => `${key}: tests only, honoured only with SITELOG_TEST_ROUTES=1 (set)`));
  return Object.freeze({
    ...rest,
    DATA_DIR: path.resolve(rest.DATA_DIR),
    DATABASE_DIRECT_URL: DATABASE_DIRECT_URL ?? rest.DATABASE_URL,
    DATABASE_POOLED: DATABASE_DIRECT_URL !== undefined && DATABASE_DIRECT_URL !== rest.DATABASE_URL,
    DATABASE_READ_URLS: DATABASE_READ_URLS ?? [],
    WEB_INSTANCES: WEB_INSTANCES === 'max' ? os.availableParallelism() : WEB_INSTANCES,
    INSTANCE: NODE_APP_INSTANCE,
    PM2_RESTARTS: restart_time,
    PM2_APP: name,
    PM2_OUT_LOG: pm_out_log_path,
    STARTUP_DEADLINE_MS: SITELOG_TEST_STARTUP_DEADLINE_MS ?? STARTUP_DEADLINE_MS,
  });
}
