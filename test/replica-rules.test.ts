import assert from 'node:assert/strict';
import { test } from 'node:test';
import client from 'prom-client';
import { ConnectionAcquireTimeoutError } from 'sequelize';
import { WorkAbandoned } from '../src/db/lean.js';
import { lagAllowed, replicaFailure, replicaLag, replicaName, ReplicaBusy, ReplicaUnreachable, type LagFacts } from '../src/db/replicas.js';
import type { Metrics } from '../src/metrics/counters.js';
import { Instruments } from '../src/metrics/instruments.js';
import { REPLICA_MAX_LAG_MS } from '../src/timeouts.js';
import { seriesValue } from './support/scraper.js';

// The pure rules of the read replicas (src/db/replicas.ts): which failures send a read to the
// primary, how far behind a replica is, and how the host shows the replicas of its processes.

/** An error as node-postgres gives one PostgreSQL sent. */
const pgError = (code: string, message: string, severity = 'ERROR') => Object.assign(new Error(message), { code, severity });

test('when a read fails on a replica, then only the replica\'s own failures send it to the primary', () => {
  const cases: Array<[string, unknown, 'down' | 'elsewhere' | undefined]> = [
    ['no connection could be made', new ReplicaUnreachable('replica 127.0.0.1:5502: connect ECONNREFUSED'), 'down'],
    ['refused', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5502'), { code: 'ECONNREFUSED' }), 'down'],
    ['reset', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'down'],
    ['admin shutdown (pg_ctl stop -m fast)', pgError('57P01', 'terminating connection due to administrator command', 'FATAL'), 'down'],
    ['crash shutdown', pgError('57P02', 'terminating connection because of crash of another server process', 'FATAL'), 'down'],
    ['starting up', pgError('57P03', 'the database system is starting up', 'FATAL'), 'down'],
    ['connection failure class 08', pgError('08006', 'connection failure'), 'down'],
    ['another FATAL ends the session', pgError('57P05', 'terminating connection due to idle-session timeout', 'FATAL'), 'down'],
    ['dropped socket', new Error('Connection terminated unexpectedly'), 'down'],
    ['used after an error', new Error('Client has encountered a connection error and is not queryable'), 'down'],
    ['connect timeout', new Error('Connection terminated due to connection timeout'), 'down'],
    ['no answer past query_timeout (a hung replica)', new Error('Query read timeout'), 'down'],
    ['conflict with recovery', pgError('40001', 'canceling statement due to conflict with recovery'), 'elsewhere'],
    ['buffer pin deadlock with recovery', pgError('40P01', 'canceling statement due to conflict with recovery'), 'elsewhere'],
    ['a table a migration just made, not replayed yet', pgError('42P01', 'relation "new_table" does not exist'), 'elsewhere'],
    ['a column a migration just added, not replayed yet', pgError('42703', 'column "new_column" does not exist'), 'elsewhere'],
    ['a type a migration just made, not replayed yet', pgError('42704', 'type "log_entry" does not exist'), 'elsewhere'],
    ['a write sent to a replica', pgError('25006', 'cannot execute INSERT in a read-only transaction'), 'elsewhere'],
    ['the query\'s own bad value', pgError('22P02', 'invalid input syntax for type bigint: "x"'), undefined],
    ['the statement timeout: the request\'s own slowness', pgError('57014', 'canceling statement due to statement timeout'), undefined],
    ['a cancel the request asked for', pgError('57014', 'canceling statement due to user request'), undefined],
    ['the request abandoned between statements', new WorkAbandoned('the request was abandoned'), undefined],
    ['no connection of the replica\'s pool free in time', new ReplicaBusy('no connection to replica r:1 free within 1000 ms'), 'elsewhere'],
    ['the primary\'s pool busy (a rerun there failed too)', new ConnectionAcquireTimeoutError(new Error('no connection free within 3000 ms')), undefined],
    ['a bug', new TypeError('cannot read properties of undefined'), undefined],
  ];
  for (const [what, err, expected] of cases) assert.equal(replicaFailure(err), expected, what);
});

const facts = (over: Partial<LagFacts>): LagFacts => ({ recovery: true, streaming: true, caught_up: true, bytes: 0, since_replay: 42, ...over });

test('when a replica streams and has replayed all it received, then it is 0 behind however long the primary was idle', () => {
  assert.deepEqual(replicaLag(facts({ since_replay: 3600 })), { seconds: 0, bytes: 0 });
});

test('when a replica has WAL left to replay, then it is as far behind as its last replayed commit', () => {
  assert.deepEqual(replicaLag(facts({ caught_up: false, bytes: 4_200_000, since_replay: 3.8 })), { seconds: 3.8, bytes: 4_200_000 });
});

test('when a replica does not stream, then it cannot know what it missed: as old as its last replayed commit, unknown without one', () => {
  assert.deepEqual(replicaLag(facts({ streaming: false, since_replay: 12.5 })), { seconds: 12.5, bytes: 0 });
  assert.deepEqual(replicaLag(facts({ streaming: false, caught_up: null, bytes: null, since_replay: null })), { seconds: undefined, bytes: 0 });
});

test('when the server replays nothing (a primary, a promoted replica), then it is 0 behind', () => {
  assert.deepEqual(replicaLag({ recovery: false, streaming: false, caught_up: null, bytes: null, since_replay: null }), { seconds: 0, bytes: 0 });
});

test('when the lag is over the bound or unknown, then the replica serves no reads', () => {
  assert.equal(lagAllowed({ seconds: 0 }), true);
  assert.equal(lagAllowed({ seconds: REPLICA_MAX_LAG_MS / 1000 }), true);
  assert.equal(lagAllowed({ seconds: REPLICA_MAX_LAG_MS / 1000 + 0.001 }), false);
  assert.equal(lagAllowed({ seconds: undefined }), false);
});

test('when a replica is named in a label or a log line, then it is host:port, never its password', () => {
  assert.equal(replicaName('postgres://web:s3cret@10.0.0.7:5433/sitelog'), '10.0.0.7:5433');
  assert.equal(replicaName('postgresql://web:s3cret@replica.example/sitelog'), 'replica.example:5432');
});

test('when two processes read a replica\'s lag, then the host shows the worst lag and up only when both find it up', async () => {
  const pool = () => ({ size: 0, using: 0, waiting: 0 });
  const a = new Instruments(pool, () => [{ replica: 'r:1', up: true, lagSeconds: 3, lagBytes: 100 }]);
  const b = new Instruments(pool, () => [{ replica: 'r:1', up: false, lagSeconds: 5, lagBytes: 40 }]);
  try {
    const parts = [(await a.registry.getMetricsAsJSON()) as Metrics, (await b.registry.getMetricsAsJSON()) as Metrics];
    const text = await client.AggregatorRegistry.aggregate(parts).metrics();
    assert.equal(seriesValue(text, 'sitelog_replica_lag_seconds', { replica: 'r:1' }), 5);
    assert.equal(seriesValue(text, 'sitelog_replica_lag_bytes', { replica: 'r:1' }), 100);
    assert.equal(seriesValue(text, 'sitelog_replica_up', { replica: 'r:1' }), 0);
  } finally {
    a.stop();
    b.stop();
  }
});

test('when no replica is configured, then no replica series is shown', async () => {
  const instruments = new Instruments(() => ({ size: 0, using: 0, waiting: 0 }));
  try {
    assert.doesNotMatch(await instruments.registry.metrics(), /^sitelog_replica_\w+\{/m);
  } finally {
    instruments.stop();
  }
});
