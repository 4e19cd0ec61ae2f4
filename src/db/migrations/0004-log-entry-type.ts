import type { QueryInterface } from 'sequelize';

// An entry as the API answers it (SPEC "Log entry fields"), for the statements of
// src/logs/queries.ts: row_to_json(ROW(…)::log_entry) names the fields from this type. Naming them
// with a subquery instead (a LATERAL of the row's columns) cost PostgreSQL 195–203 µs of CPU a
// 21-entry page against 180–188 this way (bench/research/results/list-json-cost.txt).
export async function up({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query(`
    CREATE TYPE log_entry AS (
      id          BIGINT,
      stype       TEXT,
      -- ISO 8601 in UTC with milliseconds, as JavaScript writes it
      "timestamp" TEXT,
      description TEXT,
      ip          TEXT,
      user_agent  TEXT,
      host        TEXT,
      instance    INTEGER,
      request_id  TEXT
    );
  `);
}

export async function down({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query('DROP TYPE IF EXISTS log_entry');
}
