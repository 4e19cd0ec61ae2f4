import type { LiveInstance } from './host.js';
import { SAMPLE_EVERY_MS, type Sample } from './instruments.js';

// The live console's data: each live instance of this host with its last 10 minutes of samples,
// and the host's total over the same intervals.

export type LiveView = {
  host: string;
  sampleEveryMs: number;
  instances: LiveInstance[];
  /** Per interval: CPU, RSS, req/s, errors and pool summed; p99 and loop lag the worst instance's. */
  total: Sample[];
};

/**
 * The host's samples: each instance samples on its own clock, so its samples are matched by how
 * recent they are (the last with the last), which keeps the total's newest point complete.
 */
export function hostTotal(instances: readonly LiveInstance[]): Sample[] {
  const length = Math.max(0, ...instances.map((i) => i.samples.length));
  return Array.from({ length }, (_, k) => {
    const points = instances.map((i) => i.samples[i.samples.length - length + k]).filter((s): s is Sample => s !== undefined);
    const p99s = points.map((p) => p.p99).filter((p): p is number => p !== null);
    const sum = (field: 'cpu' | 'rss' | 'rps' | 'errors' | 'errorsPerMin' | 'poolInUse') => points.reduce((a, p) => a + p[field], 0);
    return {
      t: Math.max(...points.map((p) => p.t)),
      cpu: sum('cpu'),
      rss: sum('rss'),
      rps: sum('rps'),
      p99: p99s.length > 0 ? Math.max(...p99s) : null,
      errors: sum('errors'),
      errorsPerMin: sum('errorsPerMin'),
      loopLag: Math.max(...points.map((p) => p.loopLag)),
      poolInUse: sum('poolInUse'),
    };
  });
}

export function liveView(host: string, instances: LiveInstance[]): LiveView {
  return { host, sampleEveryMs: SAMPLE_EVERY_MS, instances, total: hostTotal(instances) };
}
