import type { MetricObjectWithValues, MetricValue } from 'prom-client';

// Pure rules over prom-client's JSON form of a registry (`getMetricsAsJSON()`).

export type Metrics = MetricObjectWithValues<MetricValue<string>>[];

/** Gauges describe a process now: a process that is gone has none. */
// (prom-client's typings say MetricType is a numeric enum; at runtime it is the type's name)
export const countersOnly = (metrics: Metrics): Metrics => metrics.filter((m) => String(m.type) !== 'gauge');

export function withLabel(metrics: Metrics, name: string, value: string): Metrics {
  return metrics.map((m) => ({ ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.labels, [name]: value } })) }));
}

/** One series of a metric: its sample name (`…_bucket` for a histogram's) and its labels, in order. */
export function seriesKey(metric: { name: string }, value: { labels: object; metricName?: string }): string {
  return `${value.metricName ?? metric.name}${JSON.stringify(Object.entries(value.labels).sort(([a], [b]) => a.localeCompare(b)))}`;
}

/**
 * Counters held at what was reported before where they fell below it (a process killed -9 lost
 * its last counts): Prometheus takes any decrease for a reset. `reported` is what the last scrapes
 * reported; `now` is what this one reports, for the next.
 */
export function holdCounters(metrics: Metrics, reported: Readonly<Record<string, number>>): { held: Metrics; now: Record<string, number> } {
  const now: Record<string, number> = {};
  const held = metrics.map((m) =>
    String(m.type) === 'gauge'
      ? m
      : {
          ...m,
          values: m.values.map((v) => {
            const key = seriesKey(m, v);
            const value = Math.max(v.value, reported[key] ?? 0);
            now[key] = value;
            return { ...v, value };
          }),
        },
  );
  return { held, now };
}

/** Two reports merged series by series, each at its highest: scrapes on two instances at once lose neither. */
export function highest(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): Record<string, number> {
  const merged: Record<string, number> = { ...a };
  for (const [key, value] of Object.entries(b)) merged[key] = Math.max(value, merged[key] ?? 0);
  return merged;
}

/** A process file's name: its pid and start (ms), so a reused pid is a process of its own. */
export const processFileName = (pid: number, started: number) => `p-${pid}-${started}.json`;
const PROCESS_FILE = /^p-(\d+)-(\d+)\.json$/;

export function parseProcessFileName(name: string): { pid: number; started: number } | undefined {
  const match = PROCESS_FILE.exec(name);
  return match ? { pid: Number(match[1]), started: Number(match[2]) } : undefined;
}

/**
 * Whether the process of a file is gone: it wrote its final counters, or no process has its pid,
 * or a later process has it (a reused pid: the file of the newer start says so).
 */
export function isGone(name: string, file: { final: boolean; pid: number }, names: readonly string[], alive: (pid: number) => boolean): boolean {
  if (file.final || !alive(file.pid)) return true;
  const mine = parseProcessFileName(name);
  return names.some((other) => {
    const them = parseProcessFileName(other);
    return them !== undefined && mine !== undefined && them.pid === mine.pid && them.started > mine.started;
  });
}
