import net from 'node:net';
import { Router } from 'express';
import { forbidden } from '../errors.js';
import type { HostMetrics } from './host.js';

/**
 * Who may scrape: METRICS_ALLOW's addresses and networks (config.ts expands "loopback"). nginx
 * allows the same list (nginx/sitelog-site.conf); the app checks again, because other spellings of
 * the path and clients reaching the instances directly do not pass that nginx location.
 */
export function metricsAllowList(entries: readonly string[]): (address: string | undefined) => boolean {
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split('/');
    const family = net.isIPv6(address!) ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address!, family);
    else list.addSubnet(address!, Number(prefix), family);
  }
  return (address) => {
    if (!address) return false;
    const v4 = address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
    return list.check(v4, net.isIPv6(v4) ? 'ipv6' : 'ipv4');
  };
}

/** GET /metrics: the host's metrics (every live web instance summed, and each one), Prometheus text. */
export function metricsRouter(host: HostMetrics, allow: readonly string[]): Router {
  const allowed = metricsAllowList(allow);
  const router = Router({ caseSensitive: true, strict: true });
  router.get('/metrics', async (req, res) => {
    if (!allowed(req.ip)) throw forbidden('metrics: this address is not in METRICS_ALLOW');
    res.type('text/plain; version=0.0.4').send(await host.scrape());
  });
  return router;
}
