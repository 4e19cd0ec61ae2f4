export const STYPES = ['system', 'security', 'app', 'error'] as const;
export type Stype = (typeof STYPES)[number];

/** A row of system_logs, as pg returns it (the table is created by the migrations). */
export type LogRow = {
  id: string;
  stype: Stype;
  timestamp: Date;
  description: string;
  ip: string | null;
  user_agent: string | null;
  host: string;
  instance: number | null;
  request_id: string | null;
};

/** An entry as the API answers it (SPEC "Log entry fields"): the row, its id a number, its time ISO 8601. */
export type LogEntry = Omit<LogRow, 'id' | 'timestamp'> & { id: number; timestamp: string };

export function toLogEntry(row: LogRow): LogEntry {
  return { ...row, id: Number(row.id), timestamp: new Date(row.timestamp).toISOString() };
}
