import type autocannon from 'autocannon';
import { authHeaders } from '../test/support/stack.js';

/** The three endpoints every bench phase loads. */
export const ENDPOINTS = ['GET /api/logs/:id', 'GET /api/logs?limit=20', 'POST /api/logs'] as const;
export type Endpoint = (typeof ENDPOINTS)[number];

/** autocannon's request for one endpoint at `url` (`id`: an entry that exists, for the read by id). */
export function endpointRequest(url: string, endpoint: string, id: number | string): autocannon.Options {
  const auth = authHeaders();
  if (endpoint === 'POST /api/logs') {
    return { url: `${url}/api/logs`, method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ stype: 'app', description: 'bench write' }) };
  }
  return endpoint === 'GET /api/logs/:id' ? { url: `${url}/api/logs/${id}`, headers: auth } : { url: `${url}/api/logs?limit=20`, headers: auth };
}
