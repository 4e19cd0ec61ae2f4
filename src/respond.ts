import type { ServerResponse } from 'node:http';

const JSON_TYPE = 'application/json; charset=utf-8';

/**
 * Answers `body`, JSON text already, with its status. What Express's res.type('json').send(body)
 * writes, without parsing and formatting the Content-Type again on every call and looking for an
 * ETag that is never there: an API read is answered by this.
 */
export function sendJson(res: ServerResponse, body: string, status = 200): void {
  res.statusCode = status;
  res.setHeader('Content-Type', JSON_TYPE);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
