import crypto from 'node:crypto';
import { authHeaders } from './stack.js';

export type Sample = { at: number; ms: number; status: number; kind: 'write' | 'read' | 'list'; code?: string };
export type Ack = { key: string; id: number; description: string };

/**
 * Steady mixed traffic (half writes with an Idempotency-Key, reads of its own writes, page reads)
 * over `connections` concurrent clients until stopped, recording every response. A write answered
 * 502/503 or by a dropped connection is retried with the same key, as a well-behaved client does.
 * Bounded: stops by itself after `maxMs`.
 */
export function startTraffic(base: string, opts: { connections: number; maxMs?: number }) {
  const samples: Sample[] = [];
  const acks: Ack[] = [];
  const mismatches: string[] = [];
  const run = crypto.randomBytes(4).toString('hex');
  let stopped = false;
  const hardStop = setTimeout(() => (stopped = true), opts.maxMs ?? 600_000);

  const request = async (kind: Sample['kind'], url: string, init?: RequestInit) => {
    const started = performance.now();
    let status = 0;
    let body = '';
    try {
      const response = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
      status = response.status;
      body = await response.text();
    } catch {
      // no answer: status stays 0
    }
    const code = status >= 300 || status === 0 ? (body.match(/"code":"([A-Z_]+)"/)?.[1] ?? 'none') : undefined;
    samples.push({ at: Date.now(), ms: performance.now() - started, status, kind, ...(code && { code }) });
    return { status, body };
  };

  async function client(index: number): Promise<void> {
    const mine: Ack[] = [];
    let pending: { key: string; description: string } | undefined;
    for (let i = 0; !stopped; i += 1) {
      if (pending || Math.random() < 0.5 || mine.length === 0) {
        const write = pending ?? { key: `t-${run}-${index}-${i}`, description: `traffic ${run} ${index} ${i}` };
        const { status, body } = await request('write', `${base}/api/logs`, {
          method: 'POST',
          headers: authHeaders({ 'content-type': 'application/json', 'idempotency-key': write.key }),
          body: JSON.stringify({ stype: 'app', description: write.description }),
        });
        if (status === 201) {
          const entry = JSON.parse(body) as { id: number; description: string };
          if (entry.description !== write.description) mismatches.push(`write ${write.key}: ${body.slice(0, 100)}`);
          const ack = { ...write, id: entry.id };
          mine.push(ack);
          acks.push(ack);
          pending = undefined;
        } else {
          pending = status === 0 || status === 502 || status === 503 ? write : undefined;
          if (pending) await new Promise((r) => setTimeout(r, 100));
        }
      } else if (Math.random() < 0.6) {
        const own = mine[Math.floor(Math.random() * mine.length)]!;
        const { status, body } = await request('read', `${base}/api/logs/${own.id}`, { headers: authHeaders() });
        if (status === 200 && (JSON.parse(body) as { description: string }).description !== own.description) {
          mismatches.push(`read ${own.id}: ${body.slice(0, 100)}`);
        }
      } else {
        const { status, body } = await request('list', `${base}/api/logs?limit=20`, { headers: authHeaders() });
        if (status === 200) {
          const { items } = JSON.parse(body) as { items: Array<{ timestamp: string }> };
          const ordered = items.every((e, k) => k === 0 || items[k - 1]!.timestamp >= e.timestamp);
          if (!ordered || items.length > 20) mismatches.push(`list out of order: ${body.slice(0, 100)}`);
        }
      }
    }
  }

  const clients = Promise.all(Array.from({ length: opts.connections }, (_, i) => client(i)));
  return {
    samples,
    acks,
    mismatches,
    /** Resolves when the traffic ends by itself, after `maxMs`. */
    done: clients.then(() => ({ samples, acks, mismatches })),
    async stop() {
      stopped = true;
      clearTimeout(hardStop);
      await clients;
      return { samples, acks, mismatches };
    },
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
