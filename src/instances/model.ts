import {
  DataTypes,
  Model,
  type CreationOptional,
  type InferAttributes,
  type InferCreationAttributes,
  type Sequelize,
} from 'sequelize';

export const INSTANCE_EVENTS = ['started', 'restarted', 'reloaded'] as const;
export type InstanceEventKind = (typeof INSTANCE_EVENTS)[number];

export class ServerStart extends Model<InferAttributes<ServerStart>, InferCreationAttributes<ServerStart>> {
  declare id: CreationOptional<string>;
  declare host: string;
  declare timestamp: CreationOptional<Date>;
}

export class InstanceEvent extends Model<InferAttributes<InstanceEvent>, InferCreationAttributes<InstanceEvent>> {
  declare id: CreationOptional<string>;
  declare start_id: string;
  declare instance: number;
  declare pid: number;
  declare event: InstanceEventKind;
  declare timestamp: CreationOptional<Date>;
}

/** Rows of the view `live_instances`: the processes that hold their liveness lock right now. */
export class LiveInstance extends Model<InferAttributes<LiveInstance>> {
  declare host: string;
  declare pid: number;
  declare instance: number;
  declare backend_pid: number;
  declare start_id: string;
  declare started_at: Date;
  declare last_seen: Date;
  declare restarts: number;
  declare rss: string;
}

export function initInstanceModels(sequelize: Sequelize): void {
  const id = { type: DataTypes.BIGINT, primaryKey: true, autoIncrement: true };
  const timestamp = { type: DataTypes.DATE(3), allowNull: false, defaultValue: DataTypes.NOW };
  ServerStart.init(
    { id, host: { type: DataTypes.TEXT, allowNull: false }, timestamp },
    { sequelize, tableName: 'server_starts', timestamps: false },
  );
  InstanceEvent.init(
    {
      id,
      start_id: { type: DataTypes.BIGINT, allowNull: false },
      instance: { type: DataTypes.INTEGER, allowNull: false },
      pid: { type: DataTypes.INTEGER, allowNull: false },
      event: { type: DataTypes.TEXT, allowNull: false },
      timestamp,
    },
    { sequelize, tableName: 'instance_events', timestamps: false },
  );
  ServerStart.hasMany(InstanceEvent, { foreignKey: 'start_id', as: 'entries' });
  LiveInstance.init(
    {
      host: { type: DataTypes.TEXT, primaryKey: true },
      pid: { type: DataTypes.INTEGER, primaryKey: true },
      instance: DataTypes.INTEGER,
      backend_pid: DataTypes.INTEGER,
      start_id: DataTypes.BIGINT,
      started_at: DataTypes.DATE(3),
      last_seen: DataTypes.DATE(3),
      restarts: DataTypes.INTEGER,
      rss: DataTypes.BIGINT,
    },
    { sequelize, tableName: 'live_instances', timestamps: false },
  );
}
