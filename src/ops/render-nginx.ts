import { parseArgs } from 'node:util';
import { renderSite, renderStandalone } from './nginx.js';

// node dist/ops/render-nginx.js --dir DIR --listen 80 --upstream HOST:PORT [--upstream …]
//   [--tls-cert FILE --tls-key FILE [--tls-listen 443]] [--standalone]
// Writes sitelog's nginx config into DIR; --standalone adds a main config (local.conf) for an nginx
// of its own in the foreground (`nginx -e stderr -c DIR/local.conf`), as on the test's proxy host.

const USAGE = 'usage: render-nginx --dir DIR --listen ADDRESS --upstream HOST:PORT [--upstream HOST:PORT …] [--tls-cert FILE --tls-key FILE [--tls-listen ADDRESS]] [--standalone]';
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
      standalone: { type: 'boolean', default: false },
    },
  });
  const upstreams = values.upstream ?? [];
  const problems = [
    !values.dir && '--dir is required',
    !values.listen && '--listen is required',
    upstreams.length === 0 && 'at least one --upstream HOST:PORT',
    ...upstreams.filter((u) => !ADDRESS.test(u)).map((u) => `--upstream ${JSON.stringify(u)}: must be HOST:PORT`),
    !!values['tls-cert'] !== !!values['tls-key'] && '--tls-cert and --tls-key go together',
  ].filter((p): p is string => typeof p === 'string');
  if (problems.length > 0 || !values.dir || !values.listen) {
    process.stderr.write(`${problems.join('\n')}\n${USAGE}\n`);
    process.exit(2);
  }
  const tls = values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'], listen: values['tls-listen'] ?? '443' } : undefined;
  const site = { upstreams, listen: values.listen, ...(tls && { tls }) };
  const written = values.standalone ? { site: renderStandalone(values.dir, site) } : renderSite({ dir: values.dir, ...site });
  process.stdout.write(`${Object.values(written).join('\n')}\n`);
}

main();
