import type { Sequelize } from 'sequelize';
import { withWriteConnection } from '../db/lean.js';
import type { Logger } from '../logger.js';
import type { Stype } from './model.js';
import { insertEntry } from './queries.js';

export type SystemLogInput = {
  stype: Stype;
  description: string;
  ip?: string | null;
  userAgent?: string | null;
  requestId?: string | null;
};

/**
 * The seed's add_system_log: records an event and never throws into its caller, whose own work
 * (a login, a request) must not fail because the log could not be written.
 */
export function systemLogger(sequelize: Sequelize, identity: { host: string; instance: number }, logger: Logger) {
  /** Whether the entry was stored. */
  return async function addSystemLog(input: SystemLogInput): Promise<boolean> {
    try {
      await withWriteConnection(sequelize, (run) => insertEntry(run, { ...input, ...identity }));
      return true;
    } catch (err) {
      logger.error({ err, stype: input.stype }, 'could not write system log entry');
      return false;
    }
  };
}
export type AddSystemLog = ReturnType<typeof systemLogger>;
