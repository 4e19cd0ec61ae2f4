import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';

// The seed's first failure came from a connection opened at import time, before uWSGI forked.

test('when every module of the app is imported, then no connection is opened', async () => {
  const connects: unknown[] = [];
  // eslint-disable-next-line @typescript-eslint/unbound-method -- applied to the socket itself below
  const original = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function connect(this: net.Socket, ...args: unknown[]) {
    connects.push(args[0]);
    return (original as (...a: unknown[]) => net.Socket).apply(this, args);
  };
  try {
    process.env['DATABASE_URL'] = 'postgres://postgres:x@127.0.0.1:1/sitelog';
    const modules = [
      '../src/app.js',
      '../src/startup.js',
      '../src/config.js',
      '../src/db/sequelize.js',
      '../src/db/database.js',
      '../src/db/migrate.js',
      '../src/db/lean.js',
      '../src/instances/presence.js',
      '../src/instances/queries.js',
      '../src/console/routes.js',
      '../src/instances/routes.js',
      '../src/logs/routes.js',
      '../src/logs/queries.js',
      '../src/logs/system-log.js',
    ];
    for (const m of modules) {
      const exported = (await import(m)) as Record<string, unknown>;
      assert.ok(Object.keys(exported).length > 0, `${m} exports something`);
    }
    // let any connect scheduled on a later tick happen before we look
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(connects, []);
  } finally {
    net.Socket.prototype.connect = original;
  }
});
