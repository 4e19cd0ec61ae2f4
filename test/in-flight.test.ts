import assert from 'node:assert/strict';
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { InFlight, type InFlightRequest } from '../src/in-flight.js';
import { waitFor } from './support/wait.js';

// The requests a process is answering (src/in-flight.ts): their deadline, their cancellation when
// the client goes away, and which of them the database gate answers. A real HTTP server, real clients.

const DEADLINE_MS = 400;

describe('requests in flight', () => {
  const inFlight = new InFlight(DEADLINE_MS);
  /** Each request the handlers below saw, by the `n` of its query string. */
  const seen = new Map<string, InFlightRequest>();
  let server: http.Server;
  let base: string;

  before(async () => {
    const app = express();
    app.use(inFlight.track);
    // holds the request until it is aborted, then tries to answer as a late handler would
    app.get('/hold', (req, res) => {
      seen.set(req.query['n'] as string, req.inFlight);
      if (req.query['db']) req.inFlight.needsDatabase = true;
      req.inFlight.addEventListener('abort', () => {
        if (!res.headersSent && !res.destroyed) res.json({ late: true });
      });
    });
    app.get('/quick', (_req, res) => {
      res.json({ ok: true });
    });
    server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    inFlight.stop();
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });

  test('when a request outlives its deadline, then it is answered 503 SITELOG_DEADLINE with Retry-After, and its work is told', async () => {
    const started = performance.now();
    const res = await fetch(`${base}/hold?n=deadline`);
    const ms = performance.now() - started;
    assert.equal(res.status, 503);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'SITELOG_DEADLINE');
    assert.equal(seen.get('deadline')?.aborted, true);
    // answered at the deadline, give or take one sweep (100 ms) and a loaded machine
    assert.ok(ms >= DEADLINE_MS - 5 && ms < DEADLINE_MS + 1_000, `answered after ${Math.round(ms)} ms`);
  });

  test('when the client goes away before the answer, then its work is told, and the request leaves the set', async () => {
    const client = new AbortController();
    const pending = fetch(`${base}/hold?n=gone`, { signal: client.signal }).catch((err: unknown) => err);
    await waitFor('the request at the handler', () => seen.has('gone'), { timeoutMs: 2_000, everyMs: 10 });
    assert.equal(seen.get('gone')!.aborted, false);
    client.abort();
    assert.equal(((await pending) as Error).name, 'AbortError');
    // well before the deadline: told once the server saw the connection close, within a sweep
    await waitFor('its work told', () => seen.get('gone')!.aborted, { timeoutMs: DEADLINE_MS - 100, everyMs: 10 });
    await waitFor('out of the requests in flight', () => inFlight.size === 0, { timeoutMs: 1_000, everyMs: 10 });
  });

  test('when requests are in flight, then the gate sees only those past it and not answered yet', async () => {
    const both = [fetch(`${base}/hold?n=db&db=1`), fetch(`${base}/hold?n=plain`)];
    await waitFor('both at their handler', () => seen.has('db') && seen.has('plain'), { timeoutMs: 2_000, everyMs: 10 });
    const waiting = [...inFlight.waitingOnDatabase()];
    assert.equal(waiting.length, 1);
    assert.equal(waiting[0], seen.get('db')!.res);
    assert.equal(inFlight.size, 2);
    await Promise.all(both);
    await waitFor('none in flight', () => inFlight.size === 0, { timeoutMs: 1_000, everyMs: 10 });
    assert.deepEqual([...inFlight.waitingOnDatabase()], []);
  });

  test('when a request is answered in time, then it is never aborted', async () => {
    const res = await fetch(`${base}/quick`);
    assert.equal(res.status, 200);
    await waitFor('out of the requests in flight', () => inFlight.size === 0, { timeoutMs: 1_000, everyMs: 10 });
  });

  test('when work stops listening before the abort, then only the listeners left are told, once', () => {
    const other = new InFlight(60_000);
    try {
      const request = other.begin({ headersSent: false } as unknown as express.Response);
      const told: string[] = [];
      const first = () => told.push('first');
      const second = () => told.push('second');
      request.addEventListener('abort', first);
      request.addEventListener('abort', second);
      request.removeEventListener('abort', first);
      request.abort();
      request.abort();
      assert.deepEqual(told, ['second']);
      assert.equal(request.aborted, true);
    } finally {
      other.stop();
    }
  });
});
