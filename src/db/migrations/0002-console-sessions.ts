import type { QueryInterface } from 'sequelize';

// Console sessions live in the database, the one thing all instances (and hosts) share: a session
// made on one instance is valid on every other, and logging out ends it everywhere.
export async function up({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query(`
    CREATE TABLE console_sessions (
      -- sha256 of the cookie value: a leaked table does not leak usable cookies
      id_hash     TEXT PRIMARY KEY,
      csrf        TEXT NOT NULL,
      created_at  TIMESTAMPTZ(3) NOT NULL DEFAULT now(),
      expires_at  TIMESTAMPTZ(3) NOT NULL
    );
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
    -- the login throttle counts recent failures per address
    CREATE INDEX system_logs_security_ip ON system_logs (ip, "timestamp") WHERE stype = 'security';
  `);
}

export async function down({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query('DROP TABLE IF EXISTS console_sessions; DROP INDEX IF EXISTS system_logs_security_ip;');
}
