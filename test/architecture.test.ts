import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

// docs/architecture.md: imports run downhill. The database folder is a floor the features stand on,
// and nothing in src/ outside ops/ imports ops/.

const SRC = path.resolve(__dirname, '..', 'src');

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? files(full) : e.name.endsWith('.ts') ? [full] : [];
  });
}

/**
 * The rooms of src/ and the rooms each may import from, as docs/architecture.md draws them: the
 * single files beside server.ts ('.') are the process and the facts every room shares; the database
 * is the floor; features stand on it and on the features before them; ops/ is imported by nobody.
 */
const MAY_IMPORT: Record<string, string[]> = {
  '.': ['db', 'logs', 'instances', 'console', 'metrics', 'testing'],
  db: ['.'],
  logs: ['.', 'db'],
  metrics: ['.', 'db'],
  instances: ['.', 'db', 'logs', 'metrics'],
  console: ['.', 'db', 'logs', 'instances'],
  ops: ['.', 'db', 'logs', 'instances'],
  testing: ['.'],
};

/** A file's room: its folder under src/, or '.' for the single files beside server.ts. */
const roomOf = (file: string): string => {
  const parts = path.relative(SRC, file).split(path.sep);
  return parts.length > 1 ? parts[0]! : '.';
};

/** The rooms a file imports from (relative imports only), e.g. ['db', 'logs', '.']. */
function importedRooms(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import\()\s*'(\.{1,2}\/[^']+)'/g)].map((m) => roomOf(path.resolve(path.dirname(file), m[1]!)));
}

test('when a file in src/ imports another room, then the table of docs/architecture.md allows it', () => {
  const rooms = new Set(files(SRC).map(roomOf));
  assert.deepEqual([...rooms].filter((r) => !(r in MAY_IMPORT)), [], 'every room of src/ is in the table');
  const climbing = files(SRC).flatMap((f) =>
    importedRooms(f)
      .filter((r) => r !== roomOf(f) && !MAY_IMPORT[roomOf(f)]!.includes(r))
      .map((r) => `${path.relative(SRC, f)} → ${r}`),
  );
  assert.deepEqual(climbing, []);
});
