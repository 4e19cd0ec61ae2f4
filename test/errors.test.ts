import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
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

/** A code inside a text: a JSON body written out (nginx's `return`, a string in the app) names one as "code":"X". */
const JSON_CODE = /\\?["']code\\?["']\s*:\s*\\?["']([^"'\\]+)\\?["']/g;
/** A string that is a code by its shape alone: the registry's prefix. */
const PREFIXED = /^SITELOG_[A-Z0-9_]+$/;

/**
 * The error codes a source text names, whatever their spelling: `ERRORS.X` (or `ERRORS['X']`), an
 * object's `code: 'X'`, a JSON body's `"code":"X"` inside a string, and any string that is a
 * SITELOG_ code (client script comparing one, say). TypeScript and JavaScript are read through the
 * compiler's syntax tree, so a comment naming `ERRORS.X` is no use of a code; every other file
 * (nginx's configuration, stylesheets) is read as text.
 */
function codesInText(file: string, text: string): string[] {
  const found: string[] = [];
  const inString = (s: string) => {
    for (const [, code] of s.matchAll(JSON_CODE)) found.push(code!);
    if (PREFIXED.test(s)) found.push(s);
  };
  if (!/\.(c|m)?[jt]s$/.test(file)) {
    for (const [, code] of text.matchAll(JSON_CODE)) found.push(code!);
    for (const [, , code] of text.matchAll(/(['"`])(SITELOG_[A-Z0-9_]+)\1/g)) found.push(code!);
  } else {
    const visit = (node: ts.Node): void => {
      if (ts.isPropertyAccessExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'ERRORS') found.push(node.name.text);
      else if (ts.isElementAccessExpression(node) && ts.isIdentifier(node.expression) && node.expression.text === 'ERRORS' && ts.isStringLiteralLike(node.argumentExpression)) {
        found.push(node.argumentExpression.text);
        return;
      } else if (ts.isPropertyAssignment(node) && (ts.isIdentifier(node.name) || ts.isStringLiteral(node.name)) && node.name.text === 'code' && ts.isStringLiteralLike(node.initializer)) {
        found.push(node.initializer.text);
        return;
      } else if (ts.isStringLiteralLike(node) || ts.isTemplateHead(node) || ts.isTemplateMiddle(node) || ts.isTemplateTail(node)) inString(node.text);
      ts.forEachChild(node, visit);
    };
    visit(ts.createSourceFile(file, text, ts.ScriptTarget.Latest, false, /\.(c|m)?js$/.test(file) ? ts.ScriptKind.JS : ts.ScriptKind.TS));
  }
  // an environment variable's name (SITELOG_HOST, …) is no code, quoted or not
  return found.filter((name) => !Object.hasOwn(envFields, name));
}

const codesIn = (file: string) => codesInText(file, fs.readFileSync(file, 'utf8'));

type NginxAnswer = { file: string; uri: string; status: number; code: string };

/** nginx's own error answers: each `error_page` with the status it answers and the code of its `return`. */
function nginxAnswers(): NginxAnswer[] {
  const answers: NginxAnswer[] = [];
  for (const file of filesUnder('nginx')) {
    const text = fs.readFileSync(file, 'utf8');
    const codeAt = new Map<string, { status: number; code: string }>();
    for (const [, uri, body] of text.matchAll(/location\s+=\s+(\S+)\s*\{([^}]*)\}/g)) {
      const returned = body!.match(/return\s+(\d{3})\s+'[^']*"code"\s*:\s*"([^"]+)"/);
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
  test('when src/ or nginx/ names an error code, prefixed or not, then the registry defines it', () => {
    const files = [...filesUnder('src'), ...filesUnder('nginx')];
    const used = files.flatMap((file) => codesIn(file).map((code) => ({ file: path.relative(root, file), code })));
    const unknown = used.filter(({ code }) => !Object.hasOwn(ERRORS, code)).map(({ file, code }) => `${file}: ${code}`);
    assert.deepEqual(unknown, []);
    // the scan is no empty net: it sees the app's codes and every one nginx answers itself
    const seen = new Set(used.map((u) => u.code));
    for (const code of ['SITELOG_UNAUTHORIZED', 'SITELOG_VALIDATION', 'SITELOG_DB_UNAVAILABLE', ...nginxAnswers().map((a) => a.code)]) assert.ok(seen.has(code), code);
  });

  const SCANS: Array<{ when: string; file: string; text: string; codes: string[] }> = [
    { when: 'an object answers a code without the prefix', file: 'x.ts', text: "res.status(409).json({ error: { code: 'CONFLICT', message: 'x' } });", codes: ['CONFLICT'] },
    { when: 'a quoted property names a code', file: 'x.ts', text: `const body = { "code": "NO_SUCH_THING" };`, codes: ['NO_SUCH_THING'] },
    { when: 'a JSON body is written out in a string', file: 'x.ts', text: `res.end('{"error":{"code":"GONE","message":"x"}}');`, codes: ['GONE'] },
    { when: 'a template writes a JSON body', file: 'x.ts', text: 'res.end(`{"error":{"code":"LATE","message":"${m}"}}`);', codes: ['LATE'] },
    { when: 'the registry is read by name, or by key', file: 'x.ts', text: "next(new HttpError(ERRORS.SITELOG_X)); ERRORS['SITELOG_Y'];", codes: ['SITELOG_X', 'SITELOG_Y'] },
    { when: 'client script compares a prefixed code', file: 'x.js', text: "if (body.error.code === 'SITELOG_Z') retry();", codes: ['SITELOG_Z'] },
    { when: 'nginx returns a JSON body', file: 'x.conf', text: `return 418 '{"error":{"code":"TEAPOT","message":"x"}}\\n';`, codes: ['TEAPOT'] },
    { when: 'a comment names ERRORS.X', file: 'x.ts', text: '// callers pass `ERRORS.X`\n/* ERRORS.Y */ const a = 1;', codes: [] },
    { when: 'an environment variable is named', file: 'x.ts', text: "const host = env['SITELOG_HOST']; const c = { code: 'SITELOG_HOST' };", codes: [] },
    { when: 'a SQLSTATE or errno is compared', file: 'x.ts', text: "if (err.code === '3D000' || err.code === 'EPERM') throw err;", codes: [] },
  ];
  for (const { when, file, text, codes } of SCANS) {
    test(`when ${when}, then the registry scan sees ${codes.length > 0 ? codes.join(', ') : 'no code'}`, () => {
      assert.deepEqual(codesInText(file, text).sort(), codes);
    });
  }

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
