import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitFor } from './support/wait.js';

// The tests' one way to wait: only `true` or an object is success, so a count of 0, null, an empty
// string or `false` can never end a wait early. An array is an object: a check that waits for rows
// answers undefined until it has them.

describe('waitFor', () => {
  for (const notYet of [0, null, '', undefined, false, 1, 'yes', Number.NaN]) {
    test(`when the check answers ${JSON.stringify(notYet) ?? String(notYet)}, then it keeps waiting and fails at the deadline`, async () => {
      let calls = 0;
      const check = () => {
        calls += 1;
        return notYet as unknown as true;
      };
      await assert.rejects(waitFor('nothing', check, { timeoutMs: 50, everyMs: 10 }), /timed out after 50 ms waiting for nothing/);
      assert.ok(calls > 1, `polled ${calls} times`);
    });
  }

  test('when the check answers true on its third call, then it resolves to true', async () => {
    let calls = 0;
    const value = await waitFor('third call', () => (++calls === 3 ? true : false), { timeoutMs: 5_000, everyMs: 1 });
    assert.equal(value, true);
    assert.equal(calls, 3);
  });

  test('when the check answers an object (an empty array too), then it resolves to that object', async () => {
    const rows: string[] = [];
    assert.equal(await waitFor('rows', () => Promise.resolve(rows)), rows);
    const found = { id: 7 };
    assert.equal(await waitFor('found', () => found), found);
  });

  test('when the check throws until the deadline, then the failure names what was waited for and the last error', async () => {
    await assert.rejects(
      waitFor('the database', () => {
        throw new Error('ECONNREFUSED');
      }, { timeoutMs: 30, everyMs: 5 }),
      /waiting for the database: ECONNREFUSED/,
    );
  });
});
