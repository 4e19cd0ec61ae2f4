import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { findNginx } from '../src/ops/nginx.js';
import { authHeaders, Stack } from './support/stack.js';
import { waitFor } from './support/wait.js';

// Issue #13, "A reboot brings everything back": what a boot does through `pm2 startup` (systemd runs
// `pm2 resurrect` of what `pm2 save` wrote), on a local stack of its own: the database, nginx when
// it is installed, the log rotation and the web instances all come back from the dump, the site
// answers through nginx, and the startup log counts it as ONE new start of the host.

const INSTANCES = 3;

type Start = { host: string; timestamp: string; entries: Array<{ instance: number; pid: number; event: string }> };

describe('pm2 save, pm2 kill, pm2 resurrect', () => {
  let stack: Stack;
  const apps = ['web', 'db', 'logrotate', ...(findNginx() ? ['proxy'] : [])];

  before(async () => {
    stack = await Stack.create({ instances: INSTANCES, proxy: !!findNginx() });
    await stack.start();
  });
  after(() => stack.stop());

  /** This host's starts, newest first, as GET /api/starts answers them through the stack's front. */
  const starts = async (): Promise<Start[]> => {
    const res = await fetch(stack.url('/api/starts'), { headers: authHeaders() });
    assert.equal(res.status, 200);
    return ((await res.json()) as { items: Start[] }).items.filter((s) => s.host === stack.host);
  };

  /** Each app's processes online, by name, or undefined while one is missing or not online. */
  const allOnline = async () => {
    const online = await Promise.all(apps.map(async (name) => (await stack.processes(name)).filter((p) => p.pm2_env.status === 'online')));
    const expected = (name: string) => (name === 'web' ? INSTANCES : 1);
    return apps.every((name, i) => online[i]!.length === expected(name)) ? true : undefined;
  };

  test('when the saved stack is killed and resurrected, then every app is back, the site answers, and the host has one new start with one entry per instance', async () => {
    await waitFor('every app online', allOnline);
    const before = await waitFor('the first start, with every instance', async () => {
      const found = await starts();
      return found[0]?.entries.length === INSTANCES ? found : undefined;
    });

    await stack.pm2('save');
    await stack.pm2('kill');
    assert.deepEqual(await stack.processes('web'), [], 'nothing runs after pm2 kill');
    await stack.pm2('resurrect');

    await waitFor('every app online again', allOnline, { timeoutMs: 60_000 });
    await stack.waitReady(INSTANCES);
    const after = await waitFor('a new start, with every instance', async () => {
      const found = await starts();
      return found.length > before.length && found[0]!.entries.length >= INSTANCES ? found : undefined;
    });
    assert.equal(after.length, before.length + 1, 'exactly one new "server started"');
    const entries = after[0]!.entries;
    assert.deepEqual(
      entries.map((e) => e.instance).sort(),
      Array.from({ length: INSTANCES }, (_, i) => i),
      'one entry per instance',
    );
    assert.ok(entries.every((e) => e.event === 'started'), 'each instance came up in this start');
    const web = await stack.web();
    assert.deepEqual(new Set(entries.map((e) => e.pid)), new Set([...web.values()].map((p) => p.pid)), 'the entries name the running pids');
  });
});
