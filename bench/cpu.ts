import fs from 'node:fs';

// What one request costs in CPU, part by part: the processes of each part (a PM2 app's workers,
// nginx's master and workers, PostgreSQL's postmaster and backends, the load generator) are the
// descendants of the root pids given, read from /proc before and after a cell. CPU the kernel
// spent outside any of them (loopback softirqs in kernel threads, …) is the `other` part.

const TICK_US = 1_000_000 / 100; // USER_HZ is 100 on Linux

type Proc = { ppid: number; ticks: number };

function processes(): Map<number, Proc> {
  const all = new Map<number, Proc>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // the fields after the command name, which may itself hold spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      all.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // the process ended while we read
    }
  }
  return all;
}

/** Busy ticks of the whole machine (every CPU, everything but idle and iowait). */
function machineTicks(): number {
  const [cpu] = fs.readFileSync('/proc/stat', 'utf8').split('\n');
  const v = cpu!.trim().split(/\s+/).slice(1).map(Number);
  return v.reduce((a, b) => a + b, 0) - v[3]! - v[4]!;
}

export type CpuSnapshot = { pids: Map<number, { part: string; ticks: number }>; machine: number };

/** `roots` names each part by the pid its processes descend from; the nearest named ancestor wins. */
export function cpuSnapshot(roots: Map<number, string>): CpuSnapshot {
  const all = processes();
  const partOf = (pid: number): string | undefined => {
    for (let p: number | undefined = pid, hops = 0; p && hops < 64; p = all.get(p)?.ppid, hops += 1) {
      const part = roots.get(p);
      if (part) return part;
    }
    return undefined;
  };
  const pids = new Map<number, { part: string; ticks: number }>();
  for (const [pid, proc] of all) {
    const part = partOf(pid);
    if (part) pids.set(pid, { part, ticks: proc.ticks });
  }
  return { pids, machine: machineTicks() };
}

/**
 * Microseconds of CPU per request for each part between two snapshots. A process that started in
 * between (a PostgreSQL backend for a new pool connection) counts whole; one that ended in between
 * cannot be read any more, and what it spent shows under `other`.
 */
export function cpuPerRequest(before: CpuSnapshot, after: CpuSnapshot, requests: number): Record<string, number> {
  const spent = new Map<string, number>();
  for (const [pid, { part, ticks }] of after.pids) {
    spent.set(part, (spent.get(part) ?? 0) + ticks - (before.pids.get(pid)?.ticks ?? 0));
  }
  const named = [...spent.values()].reduce((a, b) => a + b, 0);
  spent.set('other', Math.max(0, after.machine - before.machine - named));
  return Object.fromEntries([...spent].map(([part, ticks]) => [part, Math.round((ticks * TICK_US) / requests)]));
}
