import type { InstanceEventKind } from './model.js';

// The startup log's rule (SPEC "Startup log"), as a function of what the database says when this
// process registers, under the host's start lock. The I/O around it is in presence.ts.

export type StartFacts = {
  /** Instance ids of the host's other live processes (their liveness locks are held). */
  alive: number[];
  /** This process's instance id (PM2's NODE_APP_INSTANCE). */
  instance: number;
  /** How often PM2 has restarted this instance id. */
  pm2Restarts: number;
  /** Whether this instance id already came up in the host's current start. */
  cameUpInThisStart: boolean;
};

export type StartEvent = { serverStarted: boolean; event: InstanceEventKind };

/**
 * - nobody else alive on the host: this is a start of the server;
 * - the same instance id still alive: `pm2 reload` (or a deploy's new slot) is replacing it;
 * - an id that came up in this start and that PM2 restarted: it died and came back;
 * - anything else (an id new to this start, a scale-up's fresh process): started.
 */
export function startEvent(facts: StartFacts): StartEvent {
  if (facts.alive.length === 0) return { serverStarted: true, event: 'started' };
  if (facts.alive.includes(facts.instance)) return { serverStarted: false, event: 'reloaded' };
  if (facts.pm2Restarts > 0 && facts.cameUpInThisStart) return { serverStarted: false, event: 'restarted' };
  return { serverStarted: false, event: 'started' };
}
