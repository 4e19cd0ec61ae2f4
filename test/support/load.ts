import crypto from 'node:crypto';
import { authHeaders } from './stack.js';

export type Ack = { key: string; id: number; description: string };

export type LoadResult = {
  requests: number;
  failures: Array<{ what: string; status: number; detail?: string }>;
  acks: Ack[];
  latenciesMs: number[];
};

type Entry = { id: number; description: string; request_id: string; timestamp: string };

/**
 * The seed incident's workload: `clients` concurrent clients for `durationMs`, each mixing writes
 * (with an Idempotency-Key), reads of its own writes and page reads, checking every answer against
 * what it asked. Bounded in time and count.
 */
export async function runLoad(
  base: string,
  opts: { clients: number; durationMs: number; maxRequests?: number; accept?: (status: number) => boolean },
): Promise<LoadResult> {
  const result: LoadResult = { requests: 0, failures: [], acks: [], latenciesMs: [] };
  const run = crypto.randomBytes(4).toString('hex');
  const deadline = Date.now() + opts.durationMs;
  const maxRequests = opts.maxRequests ?? 1_000_000;
  const accepted = opts.accept ?? (() => false);

  const timed = async (url: string, init?: RequestInit) => {
    const started = performance.now();
    result.requests += 1;
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
    const body = await response.text();
    result.latenciesMs.push(performance.now() - started);
    return { status: response.status, body };
  };

  async function client(index: number): Promise<void> {
    const mine: Ack[] = [];
    for (let i = 0; Date.now() < deadline && result.requests < maxRequests; i += 1) {
      const roll = Math.random();
      try {
        if (roll < 0.5 || mine.length === 0) {
          const key = `load-${run}-${index}-${i}`;
          const description = `client ${index} write ${i} ${crypto.randomUUID()}`;
          const { status, body } = await timed(`${base}/api/logs`, {
            method: 'POST',
            headers: authHeaders({ 'content-type': 'application/json', 'idempotency-key': key }),
            body: JSON.stringify({ stype: 'app', description }),
          });
          if (status !== 201) {
            if (!accepted(status)) result.failures.push({ what: 'write', status, detail: body.slice(0, 200) });
            continue;
          }
          const entry = JSON.parse(body) as Entry;
          if (entry.description !== description || entry.request_id !== key) {
            result.failures.push({ what: 'write answered with another entry', status, detail: body.slice(0, 200) });
            continue;
          }
          const ack = { key, id: entry.id, description };
          mine.push(ack);
          result.acks.push(ack);
        } else if (roll < 0.8) {
          const own = mine[Math.floor(Math.random() * mine.length)]!;
          const { status, body } = await timed(`${base}/api/logs/${own.id}`, { headers: authHeaders() });
          if (status !== 200) {
            if (!accepted(status)) result.failures.push({ what: 'read own', status, detail: body.slice(0, 200) });
            continue;
          }
          const entry = JSON.parse(body) as Entry;
          if (entry.id !== own.id || entry.description !== own.description) {
            result.failures.push({ what: 'read own answered with another entry', status, detail: body.slice(0, 200) });
          }
        } else {
          const { status, body } = await timed(`${base}/api/logs?limit=20`, { headers: authHeaders() });
          if (status !== 200) {
            if (!accepted(status)) result.failures.push({ what: 'list', status, detail: body.slice(0, 200) });
            continue;
          }
          const { items } = JSON.parse(body) as { items: Entry[] };
          const ordered = items.every((e, k) => k === 0 || items[k - 1]!.timestamp >= e.timestamp);
          if (!ordered || items.length > 20) result.failures.push({ what: 'list out of order', status });
        }
      } catch (err) {
        result.failures.push({ what: 'transport', status: 0, detail: String(err) });
      }
    }
  }

  await Promise.all(Array.from({ length: opts.clients }, (_, i) => client(i)));
  return result;
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
