import type { QueryInterface } from 'sequelize';

// The security review (#11): the login throttle keys clients as nginx does, and console sessions are
// bound to the admin password and end when idle.
export async function up({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query(`
    -- A client for the limits: its IPv4 address (an IPv4-mapped IPv6 address counts as IPv4), or its
    -- IPv6 /64. nginx keys its own limit the same way ($sitelog_client_key in nginx/sitelog.conf).
    CREATE FUNCTION sitelog_client_key(ip text) RETURNS text
      LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
      DECLARE
        address inet;
      BEGIN
        IF ip ~* '^::ffff:[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$' THEN
          ip := substr(ip, 8);
        END IF;
        address := ip::inet;
        RETURN CASE family(address) WHEN 4 THEN host(address) ELSE host(network(set_masklen(address, 64))) || '/64' END;
      EXCEPTION WHEN data_exception THEN
        -- not an address (it cannot come from nginx): the text itself is the key
        RETURN ip;
      END
      $$;
    -- the throttle counts a client's recent failures since its last unlock (the console's Unlock
    -- button; also a security entry, but only the console writes here: an API client writes entries)
    CREATE TABLE login_unlocks (
      client      TEXT PRIMARY KEY,
      unlocked_at TIMESTAMPTZ(3) NOT NULL DEFAULT now()
    );
    DROP INDEX system_logs_security_ip;
    CREATE INDEX system_logs_security_client ON system_logs (sitelog_client_key(ip), "timestamp") WHERE stype = 'security';

    -- HMAC-SHA256 of the session token keyed by the admin password: a new password ends every
    -- session, and the table alone cannot be used to guess the password. Sessions made before this
    -- migration have none, so they end.
    ALTER TABLE console_sessions ADD COLUMN password_tag TEXT;
    -- a person's last page or form (not the instances page's polling): sessions end when idle
    ALTER TABLE console_sessions ADD COLUMN last_seen TIMESTAMPTZ(3) NOT NULL DEFAULT now();
  `);
}

export async function down({ context }: { context: QueryInterface }): Promise<void> {
  await context.sequelize.query(`
    ALTER TABLE console_sessions DROP COLUMN IF EXISTS password_tag, DROP COLUMN IF EXISTS last_seen;
    DROP INDEX IF EXISTS system_logs_security_client;
    CREATE INDEX IF NOT EXISTS system_logs_security_ip ON system_logs (ip, "timestamp") WHERE stype = 'security';
    DROP TABLE IF EXISTS login_unlocks;
    DROP FUNCTION IF EXISTS sitelog_client_key(text);
  `);
}
