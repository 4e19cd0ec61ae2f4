import type { Sequelize } from 'sequelize';
import { initInstanceModels } from '../instances/model.js';
import { SystemLog } from '../logs/model.js';

export function initModels(sequelize: Sequelize): void {
  SystemLog.initModel(sequelize);
  initInstanceModels(sequelize);
}
