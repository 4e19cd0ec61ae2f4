import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import client, { type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Logger } from '../logger.js';
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

type Metrics = MetricObjectWithValues<MetricValue<string>>[];

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

const PROCESS_FILE = /^p-(\d+)-(\d+)\.json$/;
const RETIRED_FILE = /^r-(.+)-(\d+)-(\d+)\.json$/;

export class HostMetrics {
  private readonly started = Date.now();
  private readonly file: string;
  private readonly socketName: string;
  private server: net.Server | undefined;
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly dir: string,
    private readonly me: Identity,
    private readonly instruments: Instruments,
    private readonly logger: Logger,
  ) {
    this.file = path.join(dir, `p-${me.pid}-${this.started}.json`);
    // Linux's abstract namespace: no file to clean up, no path length limit, private to the host's
    // network namespace.
    this.socketName = `\0sitelog-metrics-${crypto.createHash('sha256').update(dir).digest('hex').slice(0, 16)}-${me.pid}`;
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
    await this.foldRetired();
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
    return client.AggregatorRegistry.aggregate([this.neverBelowReported(summed)]).metrics();
  }

  /** Counters as reported, raised to what an earlier scrape reported where a crash lost counts. */
  private neverBelowReported(metrics: Metrics): Metrics {
    const file = path.join(this.dir, 'reported.json');
    let reported: Record<string, number> = {};
    try {
      reported = readJson<Record<string, number>>(file);
    } catch {
      // the first scrape, or a file cut short: nothing to hold to
    }
    const now: Record<string, number> = {};
    const raised = metrics.map((m) =>
      String(m.type) === 'gauge'
        ? m
        : {
            ...m,
            values: m.values.map((v) => {
              const key = `${(v as { metricName?: string }).metricName ?? m.name}${JSON.stringify(Object.entries(v.labels).sort())}`;
              const value = Math.max(v.value, reported[key] ?? 0);
              now[key] = value;
              return { ...v, value };
            }),
          },
    );
    writeAtomically(file, JSON.stringify(now));
    return raised;
  }

  /** The live console's data: the recent samples of every live instance of this host. */
  async liveSamples(): Promise<LiveInstance[]> {
    const { processes } = this.readFolder();
    const answers = await Promise.all(
      [...processes.values()].filter((f) => !f.final && alive(f.pid)).map((f) => ask<LiveInstance>(f.socket, 'samples').catch(() => undefined)),
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
    try {
      const { processes, retired } = this.readFolder();
      const absorbed = new Set([...retired.values()].flatMap((r) => r.absorbed));
      const parts = [...retired.values()].map((r) => ({ instance: r.instance, metrics: r.metrics }));
      for (const [name, file] of processes) {
        if (absorbed.has(name)) continue;
        parts.push({ instance: file.instance, metrics: await this.currentCounters(name, file) });
      }
      return parts;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 5) throw err;
      return this.collect(attempt + 1);
    }
  }

  /** A live process's counters now; a process that is gone (or does not answer), its file's last. */
  private async currentCounters(name: string, file: ProcessFile): Promise<Metrics> {
    if (file.final || !alive(file.pid)) return countersOnly(file.metrics);
    try {
      return await ask<Metrics>(file.socket, 'metrics');
    } catch {
      // stopped between the listing and the question (its final file is written by now), or blocked
      return countersOnly(readJson<ProcessFile>(path.join(this.dir, name)).metrics);
    }
  }

  /** The process files (by name) and the newest retired file of each instance. */
  private readFolder(): { processes: Map<string, ProcessFile>; retired: Map<string, RetiredFile & { generation: number }> } {
    const names = fs.readdirSync(this.dir);
    const processes = new Map<string, ProcessFile>();
    const newest = new Map<string, { name: string; generation: number }>();
    for (const name of names) {
      const retired = RETIRED_FILE.exec(name);
      if (retired) {
        const key = `${retired[1]}-${retired[2]}`;
        const generation = Number(retired[3]);
        if ((newest.get(key)?.generation ?? -1) < generation) newest.set(key, { name, generation });
      }
    }
    const retired = new Map([...newest].map(([key, { name, generation }]) => [key, { ...readJson<RetiredFile>(path.join(this.dir, name)), generation }]));
    // listed before the retired files were read: a file folded meanwhile is either absorbed in what
    // was read, or gone when read below (ENOENT: the read starts again)
    for (const name of names) if (PROCESS_FILE.test(name)) processes.set(name, readJson<ProcessFile>(path.join(this.dir, name)));
    return { processes, retired };
  }

  /**
   * Folds the files of this instance's processes that are gone into a new generation of its retired
   * file, then deletes them. A generation is created with link(2), which fails when it exists: two
   * processes folding at once (a reload's old and new one) cannot both win, so none is lost.
   */
  private async foldRetired(): Promise<void> {
    const { processes, retired } = this.readFolder();
    const key = `${this.me.app}-${this.me.instance}`;
    const previous = retired.get(key);
    const gone = [...processes].filter(([, f]) => f.app === this.me.app && f.instance === this.me.instance && (f.final || !alive(f.pid)));
    const fresh = gone.filter(([name]) => !previous?.absorbed.includes(name));
    if (fresh.length === 0) return;
    const generation = (previous?.generation ?? 0) + 1;
    const metrics = client.AggregatorRegistry.aggregate([...(previous ? [previous.metrics] : []), ...fresh.map(([, f]) => countersOnly(f.metrics))]);
    const content: RetiredFile = {
      app: this.me.app,
      instance: this.me.instance,
      // names whose files are deleted already need not be remembered: no listing can show them again
      absorbed: [...(previous?.absorbed ?? []).filter((n) => processes.has(n)), ...fresh.map(([name]) => name)],
      metrics: (await metrics.getMetricsAsJSON()),
    };
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
    if (previous) fs.rmSync(path.join(this.dir, `r-${key}-${previous.generation - 1}.json`), { force: true });
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

/** Gauges describe a process now: a process that is gone has none. */
// (prom-client's typings say MetricType is a numeric enum; at runtime it is the type's name)
const countersOnly = (metrics: Metrics): Metrics => metrics.filter((m) => String(m.type) !== 'gauge');

function withLabel(metrics: Metrics, name: string, value: string): Metrics {
  return metrics.map((m) => ({ ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.labels, [name]: value } })) }));
}

function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** Readers see the old content or the new, never half of one. */
function writeAtomically(file: string, content: string): void {
  const temporary = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, content);
  fs.renameSync(temporary, file);
}
