import fs from 'node:fs';
import path from 'node:path';
import { envFields } from '../config.js';

// Renders nginx/ for the three places sitelog's nginx runs: the local `proxy` app (DATA_DIR/nginx),
// a server provisioned by deploy/provision.sh (/etc/nginx), and a proxy host in front of several
// app hosts (the multi-host test, or ops by hand with `node dist/ops/render-nginx.js`).

const TEMPLATES = path.resolve(__dirname, '..', '..', 'nginx');

export function findNginx(): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate = path.join(dir, 'nginx');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function renderTemplate(text: string, vars: Record<string, string | number>): string {
  return text.replace(/\{\{([A-Z_]+)\}\}/g, (_m, key: string) => {
    const value = vars[key];
    if (value === undefined) throw new Error(`nginx template: no value for {{${key}}}`);
    return String(value);
  });
}

/**
 * The upstream's server lines. One address (a single host: PM2's cluster master balances its
 * instances behind one port) is repeated so that proxy_next_upstream has tries left when a worker
 * that died or is shutting down drops a kept-alive connection, and is never taken out of rotation.
 * Several hosts: each may be taken out for a few seconds after a failure (passive health checks;
 * nginx without the commercial module has no active ones), and a failed request moves to the next.
 */
export function upstreamServers(addresses: string[]): string {
  if (addresses.length === 0) throw new Error('nginx: at least one upstream address');
  const lines =
    addresses.length === 1
      ? Array.from({ length: 8 }, () => `server ${addresses[0]} max_fails=0;`)
      : addresses.flatMap((a) => Array.from({ length: 4 }, () => `server ${a} max_fails=1 fail_timeout=3s;`));
  return lines.map((l) => `    ${l}`).join('\n');
}

export type SiteOptions = {
  /** Where the rendered files go (and are included from). */
  dir: string;
  /** host:port of every app host's web instances. */
  upstreams: string[];
  /** nginx `listen` argument of the plain-HTTP server. */
  listen: string;
  /**
   * Certificate and key for the HTTPS server (sitelog-tls.conf), when the host has them, and its
   * `listen` argument (443 unless given). The plain-HTTP server then only redirects to it.
   */
  tls?: { cert: string; key: string; listen?: string };
  /** Who may scrape /metrics: METRICS_ALLOW's addresses and CIDRs (config.ts expands "loopback"). */
  metricsAllow?: readonly string[];
};

/** nginx `allow` lines for METRICS_ALLOW's addresses and CIDRs. */
export function metricsAllowLines(entries: readonly string[] = envFields.METRICS_ALLOW.parse(undefined)): string {
  return entries.map((a) => `    allow ${a};`).join('\n');
}

/** Writes sitelog.conf (http level), sitelog-site.conf and, with tls, sitelog-tls.conf into dir. */
export function renderSite(opts: SiteOptions): { site: string; tls?: string } {
  fs.mkdirSync(opts.dir, { recursive: true });
  const render = (name: string, vars: Record<string, string | number>) => {
    const file = path.join(opts.dir, name);
    fs.writeFileSync(file, renderTemplate(fs.readFileSync(path.join(TEMPLATES, name), 'utf8'), { SITE_DIR: opts.dir, ...vars }));
    return file;
  };
  render('sitelog-site.conf', { METRICS_ALLOW: metricsAllowLines(opts.metricsAllow) });
  const plainServer = opts.tls ? render('sitelog-redirect.conf', { HTTPS_PORT: portSuffix(opts.tls.listen ?? '443') }) : undefined;
  const site = render('sitelog.conf', {
    UPSTREAM_SERVERS: upstreamServers(opts.upstreams),
    LISTEN: opts.listen,
    PLAIN_SERVER: path.basename(plainServer ?? 'sitelog-site.conf'),
  });
  if (!opts.tls) {
    // a site rendered with TLS before, now without: its HTTPS files go
    for (const stale of ['sitelog-redirect.conf', 'sitelog-tls.conf']) fs.rmSync(path.join(opts.dir, stale), { force: true });
    return { site };
  }
  return { site, tls: render('sitelog-tls.conf', { TLS_CERT: opts.tls.cert, TLS_KEY: opts.tls.key, TLS_LISTEN: opts.tls.listen ?? '443' }) };
}

/** `:port` for a redirect to HTTPS on a port other than 443 (`listen` is `port` or `address:port`). */
function portSuffix(listen: string): string {
  const port = listen.match(/(\d+)$/)?.[1] ?? '443';
  return port === '443' ? '' : `:${port}`;
}

/** A main config for an nginx of its own in the foreground, every path under dir (no root needed). */
export function renderStandalone(dir: string, site: Omit<SiteOptions, 'dir'>): string {
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const { tls } = renderSite({ dir, ...site });
  const file = path.join(dir, 'local.conf');
  const vars = { NGINX_DIR: dir, TLS_INCLUDE: tls ? `    include ${tls};` : '' };
  fs.writeFileSync(file, renderTemplate(fs.readFileSync(path.join(TEMPLATES, 'local.conf'), 'utf8'), vars));
  return file;
}
