export const STYPES = ['system', 'security', 'app', 'error'] as const;
export type Stype = (typeof STYPES)[number];

/**
 * An entry as the API answers it (SPEC "Log entry fields"): a row of system_logs (the table is
 * created by the migrations), its id a number, its time ISO 8601 in UTC. PostgreSQL renders it
 * (src/logs/queries.ts).
 */
export type LogEntry = {
  id: number;
  stype: Stype;
  timestamp: string;
  description: string;
  ip: string | null;
  user_agent: string | null;
  host: string;
  instance: number | null;
  request_id: string | null;
};
