import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

// docs/architecture.md: imports run downhill. The database folder is a floor the features stand on.

const SRC = path.resolve(__dirname, '..', 'src');
const FEATURES = ['logs', 'instances', 'console'];

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? files(full) : e.name.endsWith('.ts') ? [full] : [];
  });
}

/** The src/ folders a file imports from (relative imports only), e.g. ['db', 'logs']. */
function importedRooms(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specifiers = [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]!);
  return specifiers.map((s) => path.relative(SRC, path.resolve(path.dirname(file), s)).split(path.sep)[0]!);
}

test('when a file in src/db/ imports, then never from a feature', () => {
  const climbing = files(path.join(SRC, 'db')).flatMap((f) => importedRooms(f).filter((r) => FEATURES.includes(r)).map((r) => `${path.relative(SRC, f)} → ${r}`));
  assert.deepEqual(climbing, []);
});

test('when a feature or the app imports, then never from src/ops/', () => {
  const appFiles = files(SRC).filter((f) => !path.relative(SRC, f).startsWith(`ops${path.sep}`));
  const climbing = appFiles.flatMap((f) => importedRooms(f).filter((r) => r === 'ops').map(() => path.relative(SRC, f)));
  assert.deepEqual(climbing, []);
});
