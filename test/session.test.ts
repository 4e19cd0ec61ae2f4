import assert from 'node:assert/strict';
import type { Request } from 'express';
import { test } from 'node:test';
import { cookies } from '../src/console/session.js';

// The console's cookies are read by the `cookie` package, not by hand.

const withCookie = (header: string) => ({ get: (name: string) => (name.toLowerCase() === 'cookie' ? header : undefined) }) as unknown as Request;

test('when a cookie value contains "=", then it is kept whole (the hand-written parser dropped it)', () => {
  assert.equal(cookies(withCookie('theme=dark; sitelog_session=ab=cd=='))['sitelog_session'], 'ab=cd==');
});

test('when a value carries a stray "%", then it is taken as it is instead of failing the request', () => {
  assert.equal(cookies(withCookie('sitelog_login_csrf=x%zz'))['sitelog_login_csrf'], 'x%zz');
});

test('when a value is percent-encoded, then it is decoded', () => {
  assert.equal(cookies(withCookie('a=%20b%3D'))['a'], ' b=');
});
