import { setTimeout as sleep } from 'node:timers/promises';

/** One series' value in Prometheus text; the labels given must be all it has. */
export function seriesValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  const wanted = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = (match[2] ?? '').split(/,(?=[a-z_]+=")/).filter(Boolean).sort().join(',');
    if (have === wanted) return Number(match[3]);
  }
  return undefined;
}

/** The host's requests answered, all routes and statuses: the sum of the series without `instance`. */
export function hostRequests(text: string): number {
  return text
    .split('\n')
    .filter((line) => line.startsWith('sitelog_http_requests_total{') && !line.includes('instance="'))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

export type ScrapeLog = { at: number; status: number; ms: number; requests: number | undefined };

/**
 * Prometheus, roughly: GET /metrics every `everyMs` until stopped (bounded by `maxMs`), recording
 * each answer and the host's request total it gave.
 */
export function startScraper(url: string, { everyMs = 1_000, maxMs = 900_000 } = {}) {
  const scrapes: ScrapeLog[] = [];
  let stopped = false;
  const deadline = Date.now() + maxMs;
  const loop = (async () => {
    while (!stopped && Date.now() < deadline) {
      const started = performance.now();
      let status = 0;
      let requests: number | undefined;
      try {
        const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        status = response.status;
        const text = await response.text();
        if (status === 200) requests = hostRequests(text);
      } catch {
        // no answer: status stays 0
      }
      const ms = performance.now() - started;
      scrapes.push({ at: Date.now(), status, ms, requests });
      await sleep(Math.max(0, everyMs - ms));
    }
  })();
  return {
    scrapes,
    async stop(): Promise<ScrapeLog[]> {
      stopped = true;
      await loop;
      return scrapes;
    },
  };
}

/** Scrapes whose host total went down from the one before: Prometheus would read a reset. */
export function decreases(scrapes: ScrapeLog[]): string[] {
  const totals = scrapes.filter((s) => s.requests !== undefined);
  return totals.slice(1).flatMap((s, i) => (s.requests! < totals[i]!.requests! ? [`${totals[i]!.requests} → ${s.requests} at ${new Date(s.at).toISOString()}`] : []));
}
