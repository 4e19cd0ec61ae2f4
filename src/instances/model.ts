// The shapes of the instances feature's tables (created by the migrations: server_starts,
// instance_events, instances, and the view live_instances).

export const INSTANCE_EVENTS = ['started', 'restarted', 'reloaded'] as const;
export type InstanceEventKind = (typeof INSTANCE_EVENTS)[number];

/** A row of the view `live_instances`: a process that holds its liveness lock right now. */
export type LiveInstanceRow = {
  host: string;
  pid: number;
  instance: number;
  started_at: Date;
  last_seen: Date;
  restarts: number;
  rss: string;
};

export type ServerStartRow = { id: string; host: string; timestamp: Date };
export type InstanceEventRow = { start_id: string; instance: number; pid: number; event: InstanceEventKind; timestamp: Date };
