import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConnectionAcquireTimeoutError, ConnectionError, DatabaseError, TimeoutError, UniqueConstraintError } from 'sequelize';
import { isRetryable } from '../src/db/database.js';
import { envFields } from '../src/config.js';
import { databaseTrouble, ERRORS, toHttpError } from '../src/errors.js';

// The error registry against every place that answers a code, and the database classifier's rule.

const root = path.resolve(__dirname, '..');

function filesUnder(dir: string): string[] {
  return fs
    .readdirSync(path.join(root, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.join(entry.parentPath, entry.name));
}

/** Codes as a client sees them: quoted (an app literal, nginx's JSON bodies) or named through ERRORS. */
const CODE = /(?:(['"`])(SITELOG_[A-Z_]+)\1|ERRORS\.(SITELOG_[A-Z_]+))/g;

/** The codes a file names; an environment variable's name (SITELOG_HOST, …) is none, quoted or not. */
function codesIn(file: string): string[] {
  return [...fs.readFileSync(file, 'utf8').matchAll(CODE)].map((m) => (m[2] ?? m[3])!).filter((name) => !Object.hasOwn(envFields, name));
}

type NginxAnswer = { file: string; uri: string; status: number; code: string };

/** nginx's own error answers: each `error_page` with the status it answers and the code of its `return`. */
function nginxAnswers(): NginxAnswer[] {
  const answers: NginxAnswer[] = [];
  for (const file of filesUnder('nginx')) {
    const text = fs.readFileSync(file, 'utf8');
    const codeAt = new Map<string, { status: number; code: string }>();
    for (const [, uri, body] of text.matchAll(/location\s+=\s+(\S+)\s*\{([^}]*)\}/g)) {
      const returned = body!.match(/return\s+(\d{3})\s+'[^']*"code":"(SITELOG_[A-Z_]+)"/);
      if (!returned) continue;
      codeAt.set(uri!, { status: Number(returned[1]), code: returned[2]! });
      answers.push({ file, uri: uri!, status: Number(returned[1]), code: returned[2]! });
    }
    for (const [, args] of text.matchAll(/^\s*error_page\s+([^;]+);/gm)) {
      const words = args!.trim().split(/\s+/);
      const uri = words.at(-1)!;
      const override = words.find((w) => w.startsWith('='));
      const statuses = override ? [override.slice(1)] : words.slice(0, -1);
      const target = codeAt.get(uri);
      assert.ok(target, `${path.relative(root, file)}: error_page ${args} points at no location answering a code`);
      for (const status of statuses) answers.push({ file, uri, status: Number(status), code: target.code });
    }
  }
  return answers;
}

describe('error registry', () => {
  test('when src/ or nginx/ names an error code, then the registry defines it', () => {
    const files = [...filesUnder('src'), ...filesUnder('nginx')];
    const unknown = files.flatMap((file) =>
      codesIn(file)
        .filter((code) => !Object.hasOwn(ERRORS, code))
        .map((code) => `${path.relative(root, file)}: ${code}`),
    );
    assert.deepEqual(unknown, []);
  });

  test('when nginx answers an error itself, then with the status the registry gives its code', () => {
    const answers = nginxAnswers();
    assert.ok(answers.length >= 4, 'nginx/sitelog-site.conf answers 400, 413, 429 and 502-504 itself');
    const wrong = answers
      .filter(({ code, status }) => ERRORS[code as keyof typeof ERRORS]?.status !== status)
      .map(({ file, uri, status, code }) => `${path.relative(root, file)} ${uri}: ${status} ${code}`);
    assert.deepEqual(wrong, []);
  });

  test('when an entry is looked up by its name, then it carries that name as its code', () => {
    for (const [name, entry] of Object.entries(ERRORS)) assert.equal(entry.code, name);
  });
});

/** An error as node-pg reports one PostgreSQL answered: a SQLSTATE and a severity. */
const pgError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: 'ERROR' });
/** The same, wrapped as Sequelize wraps a failed query. */
const wrapped = (code: string, message: string) => new DatabaseError(Object.assign(pgError(code, message), { sql: 'SELECT 1' }));
const socketError = (code: string, message: string) => Object.assign(new Error(message), { code, syscall: 'connect' });

const CASES: Array<{ when: string; err: unknown; then: 'gone' | 'busy' | undefined }> = [
  { when: '57P01 admin_shutdown', err: pgError('57P01', 'terminating connection due to administrator command'), then: 'gone' },
  { when: '57P03 cannot_connect_now (starting up)', err: pgError('57P03', 'the database system is starting up'), then: 'gone' },
  { when: '08006 connection_failure', err: pgError('08006', 'connection failure'), then: 'gone' },
  { when: '57P01 wrapped by Sequelize', err: wrapped('57P01', 'terminating connection due to administrator command'), then: 'gone' },
  { when: '53300 too_many_connections', err: pgError('53300', 'sorry, too many clients already'), then: 'busy' },
  { when: '57014 statement timeout', err: pgError('57014', 'canceling statement due to statement timeout'), then: 'busy' },
  { when: '57014 wrapped by Sequelize', err: wrapped('57014', 'canceling statement due to statement timeout'), then: 'busy' },
  { when: '55P03 lock_not_available (lock_timeout: a table somebody holds)', err: pgError('55P03', 'canceling statement due to lock timeout'), then: 'busy' },
  { when: '55P03 from NOWAIT, without "timeout" in its text', err: pgError('55P03', 'could not obtain lock on relation "system_logs"'), then: 'busy' },
  { when: '23505 unique_violation', err: pgError('23505', 'duplicate key value violates unique constraint "x"'), then: undefined },
  { when: '23505 wrapped by Sequelize', err: new UniqueConstraintError({ parent: Object.assign(pgError('23505', 'duplicate key'), { sql: '' }) }), then: undefined },
  { when: '22007 invalid_datetime_format', err: wrapped('22007', 'invalid input syntax for type timestamp with time zone: "x"'), then: undefined },
  { when: '28P01 wrong password', err: pgError('28P01', 'password authentication failed for user "sitelog"'), then: undefined },
  { when: 'ECONNREFUSED', err: socketError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432'), then: 'gone' },
  { when: 'ECONNRESET', err: socketError('ECONNRESET', 'read ECONNRESET'), then: 'gone' },
  { when: 'EAI_AGAIN (host not resolvable for now)', err: socketError('EAI_AGAIN', 'getaddrinfo EAI_AGAIN db'), then: 'gone' },
  { when: 'a Sequelize ConnectionError', err: new ConnectionError(socketError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432')), then: 'gone' },
  { when: 'a Sequelize ConnectionAcquireTimeoutError', err: new ConnectionAcquireTimeoutError(new Error('Operation timeout')), then: 'busy' },
  { when: 'a Sequelize TimeoutError', err: new TimeoutError(Object.assign(new Error('query timed out'), { sql: '' })), then: 'busy' },
  { when: "a plain Error 'Connection terminated unexpectedly'", err: new Error('Connection terminated unexpectedly'), then: 'gone' },
  { when: "a plain Error 'Connection terminated due to connection timeout'", err: new Error('Connection terminated due to connection timeout'), then: 'busy' },
  { when: "a plain Error 'timeout expired' (node-pg's connect timeout)", err: new Error('timeout expired'), then: 'busy' },
  { when: "PgBouncer's 08P01 'server login has been failing' (PostgreSQL unreachable behind it)", err: pgError('08P01', 'server login has been failing, try again later (server_login_retry)'), then: 'gone' },
  { when: "PgBouncer's 08P01 'server conn crashed?'", err: pgError('08P01', 'server conn crashed?'), then: 'gone' },
  { when: "PgBouncer's 08P01 'query_wait_timeout' (its pool full)", err: pgError('08P01', 'query_wait_timeout'), then: 'busy' },
  { when: "PgBouncer's 08P01 'no more connections allowed (max_client_conn)'", err: pgError('08P01', 'no more connections allowed (max_client_conn)'), then: 'busy' },
  { when: "PgBouncer's 08P01 'unsupported startup parameter' (a configuration mistake)", err: pgError('08P01', 'unsupported startup parameter: options'), then: undefined },
  { when: 'a bug', err: new TypeError("Cannot read properties of undefined (reading 'id')"), then: undefined },
  { when: 'a thrown string', err: 'Connection terminated', then: undefined },
];

describe('database classifier', () => {
  for (const { when, err, then } of CASES) {
    test(`when ${when}, then ${then ?? 'no database trouble'}; startup ${then ? 'retries' : 'does not retry'}`, () => {
      assert.equal(databaseTrouble(err), then);
      assert.equal(isRetryable(err), then !== undefined);
    });
  }
});

describe('database trouble as the client sees it', () => {
  test('when the database is busy (a lock or a statement timeout, no connection in time), then 503 SITELOG_DB_BUSY with Retry-After', () => {
    for (const err of [pgError('55P03', 'canceling statement due to lock timeout'), pgError('57014', 'canceling statement due to statement timeout'), new ConnectionAcquireTimeoutError(new Error('Operation timeout'))]) {
      const http = toHttpError(err);
      assert.equal(http.status, 503);
      assert.equal(http.code, 'SITELOG_DB_BUSY');
      assert.equal(http.headers['Retry-After'], '1');
    }
  });

  test('when the database is gone, then 503 SITELOG_DB_UNAVAILABLE with Retry-After', () => {
    const http = toHttpError(socketError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432'));
    assert.equal(http.status, 503);
    assert.equal(http.code, 'SITELOG_DB_UNAVAILABLE');
    assert.equal(http.headers['Retry-After'], '1');
  });
});

describe('data exceptions', () => {
  const cases: Array<[string, unknown]> = [
    ['22008 datetime_field_overflow', pgError('22008', 'date/time field value out of range: "0000-01-01T00:00:00.000Z"')],
    ['22003 numeric_value_out_of_range, wrapped by Sequelize', wrapped('22003', 'value "99999999999" is out of range for type integer')],
    ['22P02 invalid_text_representation', pgError('22P02', 'invalid input syntax for type bigint: "x"')],
    ['22021 character_not_in_repertoire', pgError('22021', 'invalid byte sequence for encoding "UTF8": 0x00')],
  ];
  for (const [when, err] of cases) {
    test(`when PostgreSQL answers ${when}, then 400 SITELOG_VALIDATION, never a 5xx`, () => {
      const http = toHttpError(err);
      assert.equal(http.status, 400);
      assert.equal(http.code, 'SITELOG_VALIDATION');
    });
  }
});
