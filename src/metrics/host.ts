import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import client from 'prom-client';
import type { Logger } from '../logger.js';
import { countersOnly, highest, holdCounters, isGone, parseProcessFileName, processFileName, withLabel, type Metrics } from './counters.js';
import type { Instruments, Sample } from './instruments.js';

// The host's metrics: every web instance of this host summed, never one random worker's numbers.
// PM2 runs no code of ours in its master, so the instances find each other through a folder,
// DATA_DIR/metrics (docs/metrics.md has the picture):
// - each process listens on a socket of its own and writes a file naming it, with a copy of its
//   counters every few seconds and a final one when it stops (after its last response);
// - whoever is scraped lists the folder and asks every live process for its counters now, and takes
//   the files of processes that are gone: a reloaded instance's counts stay in the host's total;
// - the files of processes that are gone are folded, per instance, into one "retired" file;
// - a process killed -9 loses what it counted since its file's last copy (≤ 1 s): the host's
//   counters then stay flat until they pass what was reported before (reported.json), because
//   Prometheus takes any decrease for a reset and would see a spike.

/** One process's file: who it is, where it answers, and its counters as of `writtenAt`. */
type ProcessFile = {
  app: string;
  instance: number;
  pid: number;
  socket: string;
  writtenAt: number;
  /** written after the process's last response: these counters are its last */
  final: boolean;
  metrics: Metrics;
};

/** The folded counters of one instance's processes that are gone, and which files they came from. */
type RetiredFile = { app: string; instance: number; absorbed: string[]; metrics: Metrics };

export type LiveInstance = { instance: number; pid: number; samples: Sample[] };

export type Identity = { app: string; instance: number; pid: number };

/** How often a process copies its counters to its file: what a crash (kill -9) may lose. */
const WRITE_EVERY_MS = 1_000;
/** How often a process folds the files of its instance's processes that are gone. */
const FOLD_EVERY_MS = 60_000;
/** How long a scrape waits for one process's answer (a blocked one is then read from its file). */
const ASK_TIMEOUT_MS = 1_000;

const RETIRED_FILE = /^r-(.+)-(\d+)-(\d+)\.json$/;

export class HostMetrics {
  private readonly started = Date.now();
  private readonly file: string;
  private readonly socketName: string;
  private server: net.Server | undefined;
  private timers: NodeJS.Timeout[] = [];
  /** Files already warned about, so a bad file is one warning, not one per scrape. */
  private readonly unreadable = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly me: Identity,
    private readonly instruments: Instruments,
    private readonly logger: Logger,
  ) {
    this.file = path.join(dir, processFileName(me.pid, this.started));
    // Linux's abstract namespace: no file to clean up, no path length limit, one namespace per
    // network namespace (each host of the multi-host test has its own). Any local user can connect:
    // what it answers is what /metrics shows, no secret. Named by pid and start, like the file.
    this.socketName = `\0sitelog-metrics-${crypto.createHash('sha256').update(dir).digest('hex').slice(0, 16)}-${me.pid}-${this.started}`;
  }

  /** Answers the other processes, writes this process's file, folds what its predecessors left. */
  async start(): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    this.server = net.createServer((socket) => this.answer(socket));
    await new Promise<void>((resolve, reject) => {
      // exclusive: bound by this process itself; a cluster worker's listen() otherwise goes through
      // the master, which would hold the socket for the whole cluster
      this.server!.once('error', reject).listen({ path: this.socketName, exclusive: true }, () => resolve());
    });
    await this.writeOwnFile(false);
    // metrics never stop a process from starting
    await this.foldRetired().catch((err: unknown) => this.logger.warn({ err }, 'metrics: could not fold'));
    this.timers = [
      setInterval(() => void this.writeOwnFile(false).catch((err: unknown) => this.logger.warn({ err }, 'metrics: could not write this process\'s file')), WRITE_EVERY_MS),
      setInterval(() => void this.foldRetired().catch((err: unknown) => this.logger.warn({ err }, 'metrics: could not fold')), FOLD_EVERY_MS),
    ];
    for (const timer of this.timers) timer.unref();
  }

  /** After the last response: the final counters go to the file, then the socket closes. */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    await this.writeOwnFile(true);
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** The host's metrics in Prometheus text: the sum (no `instance` label), then each instance. */
  async scrape(): Promise<string> {
    const parts = await this.collect();
    const series = parts.flatMap(({ instance, metrics }) => [metrics, withLabel(metrics, 'instance', String(instance))]);
    const summed = (await client.AggregatorRegistry.aggregate(series).getMetricsAsJSON()) as Metrics;
    return client.AggregatorRegistry.aggregate([this.heldAtReported(summed)]).metrics();
  }

  /** holdCounters against reported.json, which keeps, series by series, the highest any scrape reported. */
  private heldAtReported(metrics: Metrics): Metrics {
    const file = path.join(this.dir, 'reported.json');
    const { held, now } = holdCounters(metrics, readReported(file));
    // read again just before writing: a scrape on another instance meanwhile keeps its figures
    writeAtomically(file, JSON.stringify(highest(readReported(file), now)));
    return held;
  }

  /** The live console's data: the recent samples of every live instance of this host. */
  async liveSamples(): Promise<LiveInstance[]> {
    const { processes } = this.readFolder();
    const names = [...processes.keys()];
    const answers = await Promise.all(
      [...processes].filter(([name, f]) => !isGone(name, f, names, alive)).map(([, f]) => ask<LiveInstance>(f.socket, 'samples').catch(() => undefined)),
    );
    return answers.filter((a): a is LiveInstance => a !== undefined).sort((a, b) => a.instance - b.instance);
  }

  private answer(socket: net.Socket): void {
    socket.setEncoding('utf8');
    socket.once('data', (request: string) => {
      const reply =
        request.trim() === 'samples'
          ? Promise.resolve<LiveInstance>({ instance: this.me.instance, pid: this.me.pid, samples: this.instruments.recentSamples() })
          : this.instruments.registry.getMetricsAsJSON();
      reply.then(
        (body) => socket.end(JSON.stringify(body)),
        () => socket.destroy(),
      );
    });
    socket.on('error', () => undefined);
  }

  private async writeOwnFile(final: boolean): Promise<void> {
    const content: ProcessFile = {
      ...this.me,
      socket: this.socketName,
      writtenAt: Date.now(),
      final,
      metrics: (await this.instruments.registry.getMetricsAsJSON()),
    };
    writeAtomically(this.file, JSON.stringify(content));
  }

  /**
   * Every part of the host's counters, once each: the retired files, the files of processes that
   * are gone, and the live processes' answers. A folder changing under the read (a fold deleting a
   * file listed a moment ago) starts the read again.
   */
  private async collect(attempt = 1): Promise<Array<{ instance: number; metrics: Metrics }>> {
    const { processes, retired, vanished } = this.readFolder();
    const absorbed = new Set([...retired.values()].flatMap((r) => r.absorbed));
    const names = [...processes.keys()];
    const current = await Promise.all(
      [...processes].filter(([name]) => !absorbed.has(name)).map(async ([name, file]) => ({ instance: file.instance, metrics: await this.currentCounters(name, file, names) })),
    );
    // a fold deleted a file under the read: read again (five reads changing under each other is
    // not a fold; the held counters cover what a last read may miss)
    if ((vanished || current.some((c) => c.metrics === VANISHED)) && attempt < 5) return this.collect(attempt + 1);
    return [...[...retired.values()].map((r) => ({ instance: r.instance, metrics: r.metrics })), ...current.filter((c) => c.metrics !== VANISHED)];
  }

  /** A live process's counters now; a process that is gone (or does not answer), its file's last. */
  private async currentCounters(name: string, file: ProcessFile, names: readonly string[]): Promise<Metrics> {
    if (isGone(name, file, names, alive)) return countersOnly(file.metrics);
    try {
      return await ask<Metrics>(file.socket, 'metrics');
    } catch {
      // stopped between the listing and the question (its final file is written by now), or blocked
      const last = readJsonIfThere<ProcessFile>(path.join(this.dir, name));
      return last ? countersOnly(last.metrics) : VANISHED;
    }
  }

  /**
   * The process files (by name) and the newest retired file of each instance. A file that went
   * between the listing and its read (a fold deleted it) sets `vanished`: a scrape reads again. One
   * that cannot be parsed is skipped with a warning: metrics never fail a scrape for one bad file.
   */
  private readFolder(): { processes: Map<string, ProcessFile>; retired: Map<string, RetiredFile & { generation: number }>; vanished: boolean } {
    const names = fs.readdirSync(this.dir);
    let vanished = false;
    const read = <T>(name: string): T | undefined => {
      try {
        const content = readJsonIfThere<T>(path.join(this.dir, name));
        if (content === undefined) vanished = true;
        return content;
      } catch (err) {
        if (!this.unreadable.has(name)) this.logger.warn({ err, file: name }, 'metrics: a file in DATA_DIR/metrics cannot be read; it is left out');
        this.unreadable.add(name);
        return undefined;
      }
    };
    const newest = new Map<string, { name: string; generation: number }>();
    for (const name of names) {
      const retired = RETIRED_FILE.exec(name);
      if (retired) {
        const key = `${retired[1]}-${retired[2]}`;
        const generation = Number(retired[3]);
        if ((newest.get(key)?.generation ?? -1) < generation) newest.set(key, { name, generation });
      }
    }
    const retired = new Map<string, RetiredFile & { generation: number }>();
    for (const [key, { name, generation }] of newest) {
      const content = read<RetiredFile>(name);
      if (content) retired.set(key, { ...content, generation });
    }
    // listed before the retired files were read: a file folded meanwhile is either absorbed in what
    // was read, or gone when read below (the read starts again)
    const processes = new Map<string, ProcessFile>();
    for (const name of names) {
      const content = parseProcessFileName(name) ? read<ProcessFile>(name) : undefined;
      if (content) processes.set(name, content);
    }
    return { processes, retired, vanished };
  }

  /**
   * Folds the files of processes that are gone, instance by instance, into a new generation of that
   * instance's retired file, then deletes them. A generation is created with link(2), which fails
   * when it exists: two processes folding one instance at once (a reload's old and new process)
   * cannot both win, so nothing is lost or counted twice. Any process folds any instance's files:
   * those of an instance id that a scale-down removed too.
   */
  private async foldRetired(): Promise<void> {
    const { processes, retired } = this.readFolder();
    const names = [...processes.keys()];
    const goneByKey = new Map<string, Array<[string, ProcessFile]>>();
    for (const [name, file] of processes) {
      if (!isGone(name, file, names, alive)) continue;
      const key = `${file.app}-${file.instance}`;
      goneByKey.set(key, [...(goneByKey.get(key) ?? []), [name, file]]);
    }
    for (const [key, gone] of goneByKey) await this.foldInstance(key, gone, retired.get(key), processes);
    this.removeStaleTemporaries();
  }

  private async foldInstance(key: string, gone: Array<[string, ProcessFile]>, previous: (RetiredFile & { generation: number }) | undefined, processes: Map<string, ProcessFile>): Promise<void> {
    const fresh = gone.filter(([name]) => !previous?.absorbed.includes(name));
    if (fresh.length === 0) return;
    const [, first] = fresh[0]!;
    const metrics = client.AggregatorRegistry.aggregate([...(previous ? [previous.metrics] : []), ...fresh.map(([, f]) => countersOnly(f.metrics))]);
    const content: RetiredFile = {
      app: first.app,
      instance: first.instance,
      // names whose files are deleted already need not be remembered: no listing can show them again
      absorbed: [...(previous?.absorbed ?? []).filter((n) => processes.has(n)), ...fresh.map(([name]) => name)],
      metrics: (await metrics.getMetricsAsJSON()),
    };
    const generation = (previous?.generation ?? 0) + 1;
    const target = path.join(this.dir, `r-${key}-${generation}.json`);
    const temporary = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(content));
    try {
      fs.linkSync(temporary, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return; // another process folded first
      throw err;
    } finally {
      fs.rmSync(temporary, { force: true });
    }
    for (const name of content.absorbed) fs.rmSync(path.join(this.dir, name), { force: true });
    // the generation before `previous`: a scrape reading it now finds it gone and reads again
    if (previous) fs.rmSync(path.join(this.dir, `r-${key}-${previous.generation - 1}.json`), { force: true });
  }

  /** Temporary files of processes killed while writing one. */
  private removeStaleTemporaries(): void {
    for (const name of fs.readdirSync(this.dir)) {
      if (!name.endsWith('.tmp')) continue;
      const file = path.join(this.dir, name);
      const age = Date.now() - (fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > FOLD_EVERY_MS) fs.rmSync(file, { force: true });
    }
  }
}

/** Asks a process on its socket; rejects when it does not answer within ASK_TIMEOUT_MS. */
function ask<T>(socketName: string, question: 'metrics' | 'samples'): Promise<T> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketName);
    const chunks: Buffer[] = [];
    socket.setTimeout(ASK_TIMEOUT_MS, () => socket.destroy(new Error(`no answer within ${ASK_TIMEOUT_MS} ms`)));
    socket.once('connect', () => socket.write(`${question}\n`));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', reject);
    socket.once('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as T);
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  });
}

/** Whether a process runs (signal 0 checks without sending); EPERM: it runs, as another user. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A file's JSON, or undefined when the file is not there (any other failure throws). */
function readJsonIfThere<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** What the last scrapes reported (reported.json); nothing when there is none or it is unreadable. */
function readReported(file: string): Record<string, number> {
  try {
    return readJsonIfThere<Record<string, number>>(file) ?? {};
  } catch {
    return {};
  }
}

/** currentCounters' answer for a process whose file went while it was being asked: read again. */
const VANISHED: Metrics = [];

/** Readers see the old content or the new, never half of one. */
function writeAtomically(file: string, content: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, content);
  fs.renameSync(temporary, file);
}
