import type { Sequelize } from 'sequelize';
import type { Auth } from './auth.js';
import type { Config } from './config.js';
import type { DatabaseGate } from './db/gate.js';
import type { InFlight } from './in-flight.js';
import type { Logger } from './logger.js';
import type { AddSystemLog } from './logs/system-log.js';
import type { HostMetrics } from './metrics/host.js';
import type { Instruments } from './metrics/instruments.js';

/** What the request handlers of one process share: built once in server.ts, never at import time. */
export type AppContext = {
  config: Config;
  sequelize: Sequelize;
  logger: Logger;
  auth: Auth;
  addSystemLog: AddSystemLog;
  /** Open while the database answers; closed, requests get 503 without touching it. */
  gate: DatabaseGate;
  /** The requests being answered now: their deadlines, and those the gate answers when it closes. */
  inFlight: InFlight;
  /** This process's counters, and the host's view over every instance (GET /metrics, the live console). */
  metrics: { instruments: Instruments; host: HostMetrics };
};
