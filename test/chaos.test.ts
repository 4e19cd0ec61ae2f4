import assert from 'node:assert/strict';
import { test } from 'node:test';
import { missedTargets, runChaos, SHORT, table } from './chaos/scenarios.js';

test('when reloads, worker kills and database outages hit the stack under load, then no request fails and no write is lost or doubled', { timeout: 300_000 }, async () => {
  const results = await runChaos(SHORT);
  process.stdout.write(`${table(results).split('\n').map((l) => `# ${l}`).join('\n')}\n`);
  assert.equal(results.length, 4);
  assert.ok(results.every((r) => r.requests > 100), 'traffic flowed in every scenario');
  assert.deepEqual(missedTargets(results), []);
});
