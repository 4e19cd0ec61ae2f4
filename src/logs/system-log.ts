import type { Logger } from '../logger.js';
import { SystemLog, type Stype } from './model.js';

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
export function systemLogger(identity: { host: string; instance: number }, logger: Logger) {
  return async function addSystemLog(input: SystemLogInput): Promise<SystemLog | null> {
    try {
      return await SystemLog.create({
        stype: input.stype,
        description: input.description,
        ip: input.ip ?? null,
        user_agent: input.userAgent ?? null,
        request_id: input.requestId ?? null,
        host: identity.host,
        instance: identity.instance,
      });
    } catch (err) {
      logger.error({ err, stype: input.stype }, 'could not write system log entry');
      return null;
    }
  };
}
export type AddSystemLog = ReturnType<typeof systemLogger>;
