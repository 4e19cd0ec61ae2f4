import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { loadOrCreateSecrets, SECRET_NAMES } from '../src/secrets.js';

// The local stack's secrets file: made once, whole, and repaired when it is there but unusable.

/** Each test's file in a folder of its own, all of them removed at the end. */
const folders: string[] = [];
const tmpFile = () => {
  folders.push(fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-secrets-')));
  return path.join(folders.at(-1)!, 'secrets.env');
};
after(() => {
  for (const dir of folders) fs.rmSync(dir, { recursive: true, force: true });
});

test('when the file is missing, then it is created with every secret, mode 0600', () => {
  const file = tmpFile();
  const { secrets, created } = loadOrCreateSecrets(file);
  assert.equal(created, true);
  assert.deepEqual(Object.keys(secrets).sort(), [...SECRET_NAMES].sort());
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(loadOrCreateSecrets(file), { secrets, created: false });
});

test('when the file is there but empty (a full disk, a touch), then it is filled instead of failing', () => {
  const file = tmpFile();
  fs.writeFileSync(file, '');
  const { secrets, created } = loadOrCreateSecrets(file);
  assert.equal(created, true);
  assert.equal(Object.keys(secrets).length, SECRET_NAMES.length);
});

test('when the file has Windows line endings, then its values are read without the carriage returns', () => {
  const file = tmpFile();
  fs.writeFileSync(file, SECRET_NAMES.map((n) => `${n}=value-of-${n}`).join('\r\n') + '\r\n');
  const { secrets, created } = loadOrCreateSecrets(file);
  assert.equal(created, false);
  assert.equal(secrets.API_TOKEN, 'value-of-API_TOKEN');
});
