import type { RequestHandler, Response } from 'express';
import { ERRORS, HttpError, sendHttpError } from './errors.js';

/**
 * What a request's database work listens to (db/lean.ts): it aborts at the request's deadline, or
 * when its client goes away first, and the statement running then is cancelled. An AbortSignal fits
 * it too (log retention passes one).
 */
export type Cancellation = {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
};

/**
 * One request this process is answering: when it began, its cancellation, and whether it went past
 * the database gate. Not an AbortController: an EventTarget per request, with a listener added and
 * removed by every query, cost an API read about 20 µs of its 450 (docs/measurements.md); a request's
 * work has one listener at a time.
 */
export class InFlightRequest implements Cancellation {
  aborted = false;
  /** Past the database gate (db/gate.ts): answered 503 if the database goes away before it is answered. */
  needsDatabase = false;
  readonly startedAt = performance.now();
  private listeners: Array<() => void> = [];

  constructor(readonly res: Response) {}

  addEventListener(_type: 'abort', listener: () => void): void {
    this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.listeners.indexOf(listener);
    if (i !== -1) this.listeners.splice(i, 1);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const listener of this.listeners.splice(0)) listener();
  }
}

/** How often the requests in flight are looked at: a deadline or a client gone is acted on within this. */
const SWEEP_EVERY_MS = 100;

/**
 * The requests this process is answering now: begun by app.ts's first layer, ended when their
 * response's head is written. Each one is answered within `deadlineMs` (REQUEST_DEADLINE_MS): past
 * it, a 503, and its work is cancelled; so is the work of a request whose client went away before it
 * was answered. One sweep every SWEEP_EVERY_MS looks for both, instead of a timer and a 'close'
 * listener per request, which together cost an API read more than its own route handler.
 */
export class InFlight {
  private readonly requests = new Set<InFlightRequest>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly deadlineMs: number) {
    this.sweeper = setInterval(() => this.sweep(performance.now()), SWEEP_EVERY_MS);
    this.sweeper.unref();
  }

  /** Starts one request's record: `req.inFlight`. */
  begin(res: Response): InFlightRequest {
    const request = new InFlightRequest(res);
    this.requests.add(request);
    return request;
  }

  /** Its response's head is written: answered, whatever its work still does. */
  end(request: InFlightRequest): void {
    this.requests.delete(request);
  }

  private sweep(now: number): void {
    for (const request of this.requests) {
      const { res } = request;
      if (res.headersSent) this.requests.delete(request); // answered outside end(), by a test's app
      else if (res.destroyed) {
        // its client went away: nobody waits for its work any more
        this.requests.delete(request);
        request.abort();
      } else if (now - request.startedAt >= this.deadlineMs) {
        // answered first: work told of the abort may answer too, and only one answer can go
        sendHttpError(res, new HttpError(ERRORS.SITELOG_DEADLINE, undefined, { 'Retry-After': '1' }));
        this.requests.delete(request);
        request.abort();
      }
    }
  }

  /** Middleware, for an app without app.ts's first layer: a test's. */
  readonly track: RequestHandler = (req, res, next) => {
    req.inFlight = this.begin(res);
    next();
  };

  /** The responses of requests past the database gate, not answered yet, whose clients still wait. */
  *waitingOnDatabase(): Iterable<Response> {
    for (const request of this.requests) {
      if (request.needsDatabase && !request.res.headersSent && !request.res.destroyed) yield request.res;
    }
  }

  get size(): number {
    return this.requests.size;
  }

  stop(): void {
    clearInterval(this.sweeper);
  }
}
