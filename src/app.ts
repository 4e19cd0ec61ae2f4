import crypto from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import express, { type RequestHandler } from 'express';
import helmet from 'helmet';
import type { AppContext } from './context.js';
import type { InFlight, InFlightRequest } from './in-flight.js';
import type { Instruments } from './metrics/instruments.js';
import { errorHandler, ERRORS, HttpError, notFound } from './errors.js';
import { healthRouter } from './health.js';
import { homeRouter } from './home.js';
import { instancesRouter } from './instances/routes.js';
import type { Logger } from './logger.js';
import { logsRouter } from './logs/routes.js';
import { consoleRouter } from './console/routes.js';
import { metricsRouter } from './metrics/routes.js';
import { logLinesRouter } from './testing/log-lines.js';
import { blockRouter } from './testing/block.js';
import { cookies, findSession, SESSION_COOKIE, type Session } from './console/session.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      id: string;
      log: Logger;
      /** The console session, when the request carries a valid session cookie. */
      session?: Session;
      /** Its deadline and cancellation: aborts at the deadline, or when its client goes away (src/in-flight.ts). */
      inFlight: InFlightRequest;
    }
  }
}

/** Looks the session up only when the cookie is there: API calls with a bearer token cost nothing. */
function loadSession(ctx: AppContext): RequestHandler {
  return (req, _res, next) => {
    if (!req.headers.cookie || !cookies(req)[SESSION_COOKIE]) return next();
    // returned: Express answers a rejection as an error
    return findSession(ctx.sequelize, req, ctx.config.ADMIN_PASSWORD).then((session) => {
      req.session = session;
      next();
    });
  };
}

/** nginx sends X-Request-Id: $request_id, the same across its retries of one request. */
const REQUEST_ID = /^[A-Za-z0-9-]{8,128}$/;

/** Express's compiled `trust proxy` setting: whether the peer at `address` is one of TRUST_PROXY's. */
type TrustProxy = (address: string | undefined, hop: number) => boolean;

/**
 * helmet's headers do not depend on the request: computed once at startup, then set on every
 * page by one middleware instead of helmet's twelve.
 */
function documentHeaders(): Array<[string, string]> {
  const headers: Array<[string, string]> = [];
  const probe = { setHeader: (name: string, value: string) => headers.push([name, value]), removeHeader: () => undefined };
  helmet({
    // HSTS belongs to the TLS server block in nginx; on plain-HTTP local stacks it would break the site.
    strictTransportSecurity: false,
    // everything the console needs is served from here: no inline script or style, no CDN
    contentSecurityPolicy: {
      directives: { upgradeInsecureRequests: null, styleSrc: ["'self'"], fontSrc: ["'self'"], formAction: ["'self'"] },
    },
  })({} as IncomingMessage, probe as unknown as ServerResponse, () => undefined);
  return headers;
}

/**
 * A JSON answer is never a document: most of helmet's headers (referrer, DNS prefetch, origin
 * agent cluster, …) mean nothing on it. These are the ones OWASP's REST Security Cheat Sheet asks
 * of an API: nothing may run, frame, sniff or embed it, and no cache may keep it. 193 bytes instead
 * of helmet's 537, which nginx and every client parse on each API call.
 */
const API_HEADERS: ReadonlyArray<[string, string]> = [
  ['Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'"],
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
  ['Cross-Origin-Resource-Policy', 'same-origin'],
  ['Cache-Control', 'no-store'],
];

/** The JSON-only paths: the API and the probes, in any case (routing is not case-sensitive). */
const JSON_PATHS = /^\/(api|healthz|readyz)(\/|$)/i;

/**
 * Every request, in one layer (each layer a request passes costs it): its id, its security headers,
 * its deadline, and its body, parsed as JSON for the methods that carry one. The id is nginx's when
 * the peer is a TRUST_PROXY one (the same across nginx's retries of one request, so a retried write
 * is stored once); any other client's X-Request-Id is ignored, or a client could make its failed
 * logins collide on one id and be counted once.
 */
function requestContext(trusted: TrustProxy, inFlight: InFlight): RequestHandler {
  const pageHeaders = documentHeaders();
  const bodies = jsonBodies();
  return (req, res, next) => {
    req.inFlight = inFlight.begin(res);
    const incoming = req.headers['x-request-id'];
    const believed = typeof incoming === 'string' && REQUEST_ID.test(incoming) && trusted(req.socket.remoteAddress, 0);
    req.id = believed ? incoming : crypto.randomUUID();
    res.setHeader('X-Request-Id', req.id);
    const headers = JSON_PATHS.test(req.path) ? API_HEADERS : pageHeaders;
    // indexed, not destructured: this runs for every request
    for (let i = 0; i < headers.length; i++) res.setHeader(headers[i]![0], headers[i]![1]);
    if (req.method === 'GET' || req.method === 'HEAD') next();
    else bodies(req, res, next);
  };
}

/** `req.log` is a child logger naming the request id, made on first use: most requests log nothing. */
function lazyRequestLogger(app: express.Express, logger: Logger): void {
  const children = new WeakMap<object, Logger>();
  Object.defineProperty(app.request, 'log', {
    configurable: true,
    get(this: express.Request): Logger {
      let child = children.get(this);
      if (!child) children.set(this, (child = logger.child({ reqId: this.id })));
      return child;
    },
  });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A body: JSON in strict UTF-8, or a form on the console's pages; any other media type is refused
 * (415) before a handler sees it.
 */
function jsonBodies(): RequestHandler {
  const parse = express.json({
    limit: '128kb',
    verify: (_req, _res, buf) => {
      utf8.decode(buf);
    },
  });
  return (req, res, next) => {
    const form = req.path.startsWith('/console/') && req.is('application/x-www-form-urlencoded');
    if (req.get('content-length') !== '0' && req.get('content-type') && !req.is('application/json') && !form) {
      next(new HttpError(ERRORS.SITELOG_UNSUPPORTED_MEDIA_TYPE));
    } else parse(req, res, next);
  };
}

/** The paths whose handlers need the database: the database gate stands in front of them. */
const DATABASE_PATHS = /^\/(api|console)(\/|$)/i;

/** The database gate for the API and the console, without mounting it (a mounted layer costs every request it passes). */
function databaseGate(ctx: AppContext): RequestHandler {
  const session = loadSession(ctx);
  return (req, res, next) => {
    if (!DATABASE_PATHS.test(req.path)) return next();
    const refused = ctx.gate.admit(req.inFlight);
    return refused ? next(refused) : session(req, res, next);
  };
}

/**
 * Every response's head: the moment its request is answered. It leaves the requests in flight, and
 * is counted, before any byte leaves (a client that saw the answer finds it counted). Express gives
 * each response its app's prototype (`app.response`, over http.ServerResponse's), so the hook goes
 * there: writeHead runs once per response, once the status is final (res.end() calls it too).
 */
function onAnswered(app: express.Express, inFlight: InFlight, instruments: Instruments): void {
  // called with the response as `this`, below
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const writeHead = http.ServerResponse.prototype.writeHead as (this: http.ServerResponse, status: number, reason?: unknown, headers?: unknown) => void;
  Object.defineProperty(app.response, 'writeHead', {
    configurable: true,
    // three parameters rather than a rest array: this runs for every response
    value(this: http.ServerResponse<express.Request>, status: number, reason?: unknown, headers?: unknown) {
      writeHead.call(this, status, reason, headers);
      const request = this.req.inFlight;
      if (request) {
        inFlight.end(request);
        instruments.observe(this.req, this.statusCode, (performance.now() - request.startedAt) / 1000);
      }
      return this;
    },
  });
}

/**
 * The classes the app's HTTP server builds its requests and responses from (http.createServer's
 * IncomingMessage and ServerResponse options). Express gives every request and response its app's
 * prototypes (app.request, app.response) as they enter app.handle, by Object.setPrototypeOf. An
 * object whose prototype changes once it is built leaves V8's fast paths: every property read on
 * it after that, in Node's http code and in Express's router, takes the slow one. Here they are
 * built with those prototypes already, so Express's call finds nothing to change (setting an
 * object's prototype to the one it has is a no-op). On this machine a one-route Express app spends
 * 124 µs of CPU a request the usual way and 31 µs this way; node:http alone spends 23
 * (`node bench/research/express-prototypes.js`). The same finding is expressjs/express#5998, and
 * Node took these options for it (nodejs/node#15560).
 *
 * The app's prototypes become the classes' own, each over the one Express made, so that what
 * createApp defines on them (the writeHead hook, `req.log`) is found on either side. The app is
 * never mounted in another one: Express's mount would re-parent these prototypes.
 */
export function requestClasses(app: express.Express) {
  class AppRequest extends http.IncomingMessage {}
  class AppResponse extends http.ServerResponse<AppRequest> {}
  // once, at startup, on the two prototypes: never on a request
  Object.setPrototypeOf(AppRequest.prototype, app.request);
  Object.setPrototypeOf(AppResponse.prototype, app.response);
  app.request = AppRequest.prototype as unknown as express.Request;
  app.response = AppResponse.prototype as unknown as express.Response;
  return { IncomingMessage: AppRequest, ServerResponse: AppResponse };
}

/** The Express app of one process. It never listens: startup.ts does. */
export function createApp(ctx: AppContext): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Only nginx may say who the client is (the local one unless TRUST_PROXY names others); a client's
  // own X-Forwarded-For is overwritten there.
  app.set('trust proxy', ctx.config.TRUST_PROXY);
  app.set('etag', false);
  onAnswered(app, ctx.inFlight, ctx.metrics.instruments);
  lazyRequestLogger(app, ctx.logger);
  app.use(requestContext(app.get('trust proxy fn') as TrustProxy, ctx.inFlight));
  // the API first: it carries the traffic, and each layer a request passes costs it. Every router
  // declares its routes' whole paths: the declared path is the metrics' route label.
  app.use(databaseGate(ctx));
  app.use(logsRouter(ctx));
  app.use(instancesRouter(ctx));
  app.use(healthRouter(ctx));
  app.use(metricsRouter(ctx.metrics.host, ctx.config.METRICS_ALLOW));
  app.use(homeRouter(ctx));
  app.use(consoleRouter(ctx));
  // routes that harm the process or flood its log, for the tests that need them; absent (404) unless set
  if (ctx.config.SITELOG_TEST_ROUTES) app.use(blockRouter(ctx), logLinesRouter(ctx));
  app.use((req, _res, next) => next(notFound(`no route for ${req.method} ${req.path.slice(0, 100)}`)));
  app.use(errorHandler(ctx.logger, (reason) => ctx.gate.close(reason)));
  return app;
}
