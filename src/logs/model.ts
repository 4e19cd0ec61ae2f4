import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type Sequelize,
} from 'sequelize';

export const STYPES = ['system', 'security', 'app', 'error'] as const;
export type Stype = (typeof STYPES)[number];

export class SystemLog extends Model<InferAttributes<SystemLog>, InferCreationAttributes<SystemLog>> {
  declare id: CreationOptional<string>;
  declare stype: Stype;
  declare timestamp: CreationOptional<Date>;
  declare description: string;
  declare ip: string | null;
  declare user_agent: string | null;
  declare host: string;
  declare instance: number | null;
  declare request_id: string | null;

  static initModel(sequelize: Sequelize): void {
    SystemLog.init(
      {
        id: { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true },
        stype: { type: DataTypes.TEXT, allowNull: false },
        timestamp: { type: DataTypes.DATE(3), allowNull: false, defaultValue: DataTypes.NOW },
        description: { type: DataTypes.TEXT, allowNull: false },
        ip: { type: DataTypes.TEXT },
        user_agent: { type: DataTypes.TEXT },
        host: { type: DataTypes.TEXT, allowNull: false },
        instance: { type: DataTypes.INTEGER },
        request_id: { type: DataTypes.TEXT, unique: true },
      },
      { sequelize, tableName: 'system_logs', timestamps: false },
    );
  }
}

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

export function toLogEntry(row: InferAttributes<SystemLog>): LogEntry {
  return {
    id: Number(row.id),
    stype: row.stype,
    timestamp: new Date(row.timestamp).toISOString(),
    description: row.description,
    ip: row.ip,
    user_agent: row.user_agent,
    host: row.host,
    instance: row.instance,
    request_id: row.request_id,
  };
}
