import fs from 'node:fs';
import { z } from 'zod';
import type { Pm2Api, Pm2Process } from './pm2.js';

// Rotation of PM2's log files, run by the logrotate app (src/ops/logrotate.ts). Each sitelog
// process's PM2 log file that has grown past LOG_ROTATE_MAX_SIZE is renamed (web-out-0.log →
// web-out-0.log.1 → .2 …, up to LOG_ROTATE_KEEP), then PM2 reopens every log file by its path. A line
// written between the rename and the reopen lands at the end of the renamed file: nothing is lost,
// where pm2-logrotate's copy-then-truncate drops what is written between its copy and its truncate.
// What keeps each line whole and in one file: docs/log-rotation.md.

const SIZE = /^(\d+(?:\.\d+)?)([KMG]?)B?$/i;
const UNIT_BYTES: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** "500K", "10M", "1G" or a number of bytes. */
export function parseSize(text: string): number {
  const [, amount, unit] = SIZE.exec(text.trim()) ?? [];
  if (amount === undefined) throw new Error(`not a size: ${text}`);
  return Math.round(Number(amount) * UNIT_BYTES[(unit ?? '').toUpperCase()]!);
}

export const settingsSchema = z.object({
  LOG_ROTATE_MAX_SIZE: z
    .string()
    .default('10M')
    .refine((s) => SIZE.test(s.trim()), 'must be a size such as 500K, 10M or 1G')
    .transform(parseSize)
    .describe('a PM2 log file past this size is rotated at the next check'),
  LOG_ROTATE_KEEP: z.coerce.number().int().min(1).max(1000).default(10).describe('rotated files kept per log file (.1 the newest)'),
  LOG_ROTATE_CHECK_SECONDS: z.coerce.number().min(0.1).max(3600).default(10).describe('seconds between two looks at the sizes'),
});
export type RotateSettings = z.infer<typeof settingsSchema>;

/** The log files PM2 writes for these processes: each cluster instance and each fork app has its own. */
export function logFiles(processes: readonly Pm2Process[]): string[] {
  const paths = processes.flatMap((p) => [p.pm2_env.pm_out_log_path, p.pm2_env.pm_err_log_path]);
  return [...new Set(paths.filter((f): f is string => !!f && f !== '/dev/null'))];
}

/**
 * The renames that rotate `file`, in the order they must run: the oldest first, so that each target
 * has already moved on (and file.keep, replaced by the rename before it, is the one dropped).
 */
export function rotationRenames(file: string, keep: number): Array<[from: string, to: string]> {
  const renames: Array<[string, string]> = [];
  for (let n = keep - 1; n >= 1; n -= 1) renames.push([`${file}.${n}`, `${file}.${n + 1}`]);
  renames.push([file, `${file}.1`]);
  return renames;
}

const sizeOf = (file: string): number => {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
};

function renameIfThere(from: string, to: string): void {
  try {
    fs.renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** How many of file.1, file.2, … exist in a row, up to `keep`: the renames stop there. */
function rotatedSoFar(file: string, keep: number): number {
  let n = 0;
  while (n < keep && fs.existsSync(`${file}.${n + 1}`)) n += 1;
  return n;
}

function rotate(file: string, keep: number): void {
  const files = Math.min(keep, rotatedSoFar(file, keep) + 1);
  for (const [from, to] of rotationRenames(file, files)) renameIfThere(from, to);
}

/**
 * Rotates the files past the size, then has PM2 reopen them; returns the files rotated. A log file
 * that is missing means PM2 still writes to its renamed copy (a reopen failed, or a rotator died
 * between rename and reopen): the reopen is asked again.
 */
export async function rotateDue(pm2: Pm2Api, settings: RotateSettings): Promise<string[]> {
  const files = logFiles(await pm2.list());
  const due = files.filter((file) => sizeOf(file) >= settings.LOG_ROTATE_MAX_SIZE);
  const unopened = files.filter((file) => !fs.existsSync(file) && fs.existsSync(`${file}.1`));
  if (due.length === 0 && unopened.length === 0) return [];
  for (const file of due) rotate(file, settings.LOG_ROTATE_KEEP);
  // one reopen for every file: PM2's reloadLogs reopens all of them, by path
  await pm2.reloadLogs();
  return due;
}
