import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PAGE_BYTES } from '../src/logs/queries.js';
import { startApp } from './support/app.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { authHeaders } from './support/stack.js';

// A page of GET /api/logs stops at PAGE_BYTES of JSON, whatever its limit, and `next` goes on from
// there: the largest entries, 200 at a time, would otherwise be a 12 MB answer held several times
// over in a worker's 128 MB (src/logs/queries.ts).

const DATABASE = 'page_bytes_test';
/** The largest entry the API takes: 10,000 characters, each 6 bytes in JSON (\u0001). */
const HEAVY = 40;

let postgres: TestPostgres;
let app: Awaited<ReturnType<typeof startApp>>;
before(async () => {
  postgres = await startPostgres();
  app = await startApp(postgres.url(DATABASE));
});
after(async () => {
  await app?.stop();
  await postgres?.stop();
});

type Page = { items: Array<{ id: number; stype: string; description: string }>; next: string | null };

async function page(query: string): Promise<{ page: Page; bytes: number }> {
  const response = await fetch(`${app.base}/api/logs?${query}`, { headers: authHeaders() });
  assert.equal(response.status, 200);
  const text = await response.text();
  return { page: JSON.parse(text) as Page, bytes: Buffer.byteLength(text) };
}

/** Every page from the first one on, following `next`, bounded. */
async function pages(query: string): Promise<Array<{ page: Page; bytes: number }>> {
  const all: Array<{ page: Page; bytes: number }> = [];
  let next: string | null = null;
  do {
    const one = await page(`${query}${next ? `&before=${next}` : ''}`);
    all.push(one);
    next = one.page.next;
  } while (next && all.length < 20);
  return all;
}

describe('a page of the largest entries', () => {
  let ids: number[];
  before(async () => {
    await postgres.query(DATABASE, 'DELETE FROM system_logs');
    // a second apart, the newest first in id order too: pages and cursors cross distinct times
    await postgres.query(
      DATABASE,
      `INSERT INTO system_logs (stype, "timestamp", description, host)
       SELECT 'security', now() - g * interval '1 second', 'heavy ' || repeat(chr(1), 9994), 'heavy' FROM generate_series(1, $1) g`,
      [HEAVY],
    );
    const rows = await postgres.query<{ id: string }>(DATABASE, `SELECT id FROM system_logs ORDER BY "timestamp" DESC, id DESC`);
    ids = rows.map((r) => Number(r.id));
  });

  // each filter is a statement of its own; the pages after the first add the cursor (before)
  const since = new Date(Date.now() - 86_400_000).toISOString();
  for (const query of ['limit=200', 'limit=200&stype=security', 'limit=200&q=heavy', `limit=200&since=${since}`, 'stype=security']) {
    test(`when ${query} is asked of ${HEAVY} entries of 60 KB, then each page stops at PAGE_BYTES and next goes on to every entry once, newest first`, async () => {
      const all = await pages(query);
      assert.ok(all.length >= 2, `${all.length} pages: the first one stopped before the limit`);
      for (const { bytes } of all) assert.ok(bytes <= PAGE_BYTES + 64 * 1024, `a page of ${bytes} bytes`);
      assert.deepEqual(all.flatMap(({ page: p }) => p.items.map((e) => e.id)), ids);
      assert.equal(all.at(-1)!.page.next, null);
      assert.equal(all[0]!.page.items[0]!.description, `heavy ${'\u0001'.repeat(9994)}`);
    });
  }

  test('when limit=20 is asked of them, then the page holds 20: twenty entries cannot reach PAGE_BYTES', async () => {
    const { page: p } = await page('limit=20');
    assert.deepEqual(p.items.map((e) => e.id), ids.slice(0, 20));
    assert.notEqual(p.next, null);
  });
});
