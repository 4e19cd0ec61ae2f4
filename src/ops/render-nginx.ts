import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError, envFields, parseEnv } from '../config.js';
import { renderSite, renderStandalone } from './nginx.js';

// node dist/ops/render-nginx.js --dir DIR --listen 80 --upstream HOST:PORT [--upstream …]
//   [--tls-cert FILE --tls-key FILE [--tls-listen 443]] [--metrics-allow LIST] [--standalone]
// Writes sitelog's nginx config into DIR; --standalone adds a main config (local.conf) for an nginx
// of its own in the foreground (`nginx -e stderr -c DIR/local.conf`), as on the test's proxy host.
// Who may scrape /metrics: --metrics-allow, else the environment's METRICS_ALLOW (deploy.sh runs
// this with the production environment), else 127.0.0.1.

const USAGE = 'usage: render-nginx --dir DIR --listen ADDRESS --upstream HOST:PORT [--upstream HOST:PORT …] [--tls-cert FILE --tls-key FILE [--tls-listen ADDRESS]] [--metrics-allow ADDRESS[,CIDR…]] [--standalone]';
const ADDRESS = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

function main(): void {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string' },
      listen: { type: 'string' },
      upstream: { type: 'string', multiple: true },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-listen': { type: 'string' },
      'metrics-allow': { type: 'string' },
      standalone: { type: 'boolean', default: false },
    },
  });
  const upstreams = values.upstream ?? [];
  const metricsAllow = parseMetricsAllow(values['metrics-allow'] ?? process.env['METRICS_ALLOW']);
  const problems = [
    ...(typeof metricsAllow === 'string' ? [metricsAllow] : []),
    !values.dir && '--dir is required',
    !values.listen && '--listen is required',
    upstreams.length === 0 && 'at least one --upstream HOST:PORT',
    ...upstreams.filter((u) => !ADDRESS.test(u)).map((u) => `--upstream ${JSON.stringify(u)}: must be HOST:PORT`),
    !!values['tls-cert'] !== !!values['tls-key'] && '--tls-cert and --tls-key go together',
  ].filter((p): p is string => typeof p === 'string');
  if (problems.length > 0 || !values.dir || !values.listen || typeof metricsAllow === 'string') {
    process.stderr.write(`${problems.join('\n')}\n${USAGE}\n`);
    process.exit(2);
  }
  const tls = values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'], listen: values['tls-listen'] ?? '443' } : undefined;
  const site = { upstreams, listen: values.listen, metricsAllow, ...(tls && { tls }) };
  const written = values.standalone ? { site: renderStandalone(values.dir, site) } : renderSite({ dir: values.dir, ...site });
  process.stdout.write(`${Object.values(written).join('\n')}\n`);
}

/** METRICS_ALLOW's entries, checked by the app's own schema; a string: what is wrong with it. */
function parseMetricsAllow(value: string | undefined): string[] | string {
  try {
    return parseEnv(z.object({ METRICS_ALLOW: envFields.METRICS_ALLOW }), { METRICS_ALLOW: value }).METRICS_ALLOW;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems.join('\n');
  }
}

main();
