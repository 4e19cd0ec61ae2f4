import type { ErrorCode } from '../../src/errors.js';
import { API_TOKEN } from './stack.js';

export type BadInput = {
  name: string;
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  status: number;
  code: ErrorCode;
};

const json = { 'content-type': 'application/json', authorization: `Bearer ${API_TOKEN}` };

/** Inputs a client may send and the answer SPEC gives each: never a 5xx, never a dead worker. */
export const BAD_INPUTS: BadInput[] = [
  { name: 'malformed JSON', method: 'POST', path: '/api/logs', headers: json, body: '{"stype": "app",', status: 400, code: 'SITELOG_MALFORMED_JSON' },
  { name: 'JSON that is not an object', method: 'POST', path: '/api/logs', headers: json, body: '[1,2,3]', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'wrong type of description', method: 'POST', path: '/api/logs', headers: json, body: '{"stype":"app","description":42}', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'unknown stype', method: 'POST', path: '/api/logs', headers: json, body: '{"stype":"debug","description":"x"}', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'unknown field', method: 'POST', path: '/api/logs', headers: json, body: '{"stype":"app","description":"x","id":1}', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'empty description', method: 'POST', path: '/api/logs', headers: json, body: '{"stype":"app","description":"  "}', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'description over 10,000 characters', method: 'POST', path: '/api/logs', headers: json, body: JSON.stringify({ stype: 'app', description: 'x'.repeat(10_001) }), status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'NUL character', method: 'POST', path: '/api/logs', headers: json, body: '{"stype":"app","description":"a\\u0000b"}', status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'non-UTF-8 bytes', method: 'POST', path: '/api/logs', headers: json, body: new Uint8Array(Buffer.concat([Buffer.from('{"stype":"app","description":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')])), status: 400, code: 'SITELOG_BAD_ENCODING' },
  { name: 'oversized body', method: 'POST', path: '/api/logs', headers: json, body: JSON.stringify({ stype: 'app', description: 'x'.repeat(300_000) }), status: 413, code: 'SITELOG_TOO_LARGE' },
  { name: 'not JSON at all', method: 'POST', path: '/api/logs', headers: { ...json, 'content-type': 'text/plain' }, body: 'hello', status: 415, code: 'SITELOG_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'missing token', method: 'POST', path: '/api/logs', headers: { 'content-type': 'application/json' }, body: '{"stype":"app","description":"x"}', status: 401, code: 'SITELOG_UNAUTHORIZED' },
  { name: 'wrong token', method: 'POST', path: '/api/logs', headers: { ...json, authorization: 'Bearer nope-nope-nope-nope' }, body: '{"stype":"app","description":"x"}', status: 401, code: 'SITELOG_UNAUTHORIZED' },
  { name: 'reading without a token', method: 'GET', path: '/api/logs', status: 401, code: 'SITELOG_UNAUTHORIZED' },
  { name: 'bad Idempotency-Key', method: 'POST', path: '/api/logs', headers: { ...json, 'idempotency-key': 'bad key!' }, body: '{"stype":"app","description":"x"}', status: 400, code: 'SITELOG_BAD_IDEMPOTENCY_KEY' },
  { name: 'huge limit', method: 'GET', path: '/api/logs?limit=100000', headers: json, status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'negative limit', method: 'GET', path: '/api/logs?limit=-1', headers: json, status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'garbage cursor', method: 'GET', path: '/api/logs?before=%27%3B%20DROP%20TABLE', headers: json, status: 400, code: 'SITELOG_BAD_CURSOR' },
  { name: 'forged cursor', method: 'GET', path: `/api/logs?before=${Buffer.from('["x", -1]').toString('base64url')}`, headers: json, status: 400, code: 'SITELOG_BAD_CURSOR' },
  { name: 'bad since', method: 'GET', path: '/api/logs?since=yesterday', headers: json, status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'repeated filter', method: 'GET', path: '/api/logs?stype=app&stype=error', headers: json, status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'unknown filter', method: 'GET', path: '/api/logs?order=asc', headers: json, status: 400, code: 'SITELOG_VALIDATION' },
  { name: 'non-numeric id', method: 'GET', path: '/api/logs/abc', headers: json, status: 404, code: 'SITELOG_NOT_FOUND' },
  { name: 'SQL in id', method: 'GET', path: '/api/logs/1%20OR%201=1', headers: json, status: 404, code: 'SITELOG_NOT_FOUND' },
  { name: 'id beyond bigint', method: 'GET', path: '/api/logs/99999999999999999999999', headers: json, status: 404, code: 'SITELOG_NOT_FOUND' },
  { name: 'unknown id', method: 'GET', path: '/api/logs/987654321', headers: json, status: 404, code: 'SITELOG_NOT_FOUND' },
  { name: 'unknown route', method: 'GET', path: '/api/nothing', headers: json, status: 404, code: 'SITELOG_NOT_FOUND' },
  { name: 'bad percent-encoding', method: 'GET', path: '/api/logs/%E0%A4%A', headers: json, status: 400, code: 'SITELOG_BAD_REQUEST' },
];

export async function send(base: string, input: BadInput): Promise<Response> {
  return fetch(`${base}${input.path}`, {
    method: input.method,
    headers: input.headers ?? {},
    ...(input.body !== undefined ? { body: input.body as BodyInit } : {}),
  });
}
