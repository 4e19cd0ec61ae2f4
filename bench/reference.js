// What the bench's reference servers share: one pg pool per process, the bearer check and sitelog's
// hot queries, with nothing around them. baseline.js serves them with node:http, express-floor.js
// with the smallest Express app; each is run by PM2 in cluster mode like sitelog's web.
const crypto = require('node:crypto');
const { Pool } = require('pg');

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DB_POOL_MAX || 10) });
pool.on('error', () => undefined);
const token = Buffer.from(`Bearer ${process.env.API_TOKEN}`);
const COLUMNS = 'id, stype, "timestamp", description, ip, user_agent, host, instance, request_id';

exports.authorized = (req) => {
  const given = Buffer.from(req.headers.authorization || '');
  return given.length === token.length && crypto.timingSafeEqual(given, token);
};

exports.firstPage = async () => {
  const { rows } = await pool.query(`SELECT ${COLUMNS} FROM system_logs ORDER BY "timestamp" DESC, id DESC LIMIT $1`, [21]);
  return { items: rows.slice(0, 20), next: null };
};

exports.oneEntry = async (id) => (await pool.query(`SELECT ${COLUMNS} FROM system_logs WHERE id = $1`, [id])).rows[0];

exports.insertEntry = async (body, ip, userAgent) => {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(
      `INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id)
       VALUES ($1, $2, $3, $4, 'baseline', 0, $5) ON CONFLICT (request_id) DO NOTHING RETURNING ${COLUMNS}`,
      [body.stype, body.description, ip, userAgent || null, crypto.randomUUID()],
    );
    await client.query('COMMIT');
    return rows[0];
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
};

exports.ready = () => process.send && process.send('ready');
