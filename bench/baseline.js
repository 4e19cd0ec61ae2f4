// The practical limit on this machine: node:http + pg, no framework, no ORM, the same queries as
// sitelog's hot routes. Run by PM2 in cluster mode with the same instance count.
const http = require('node:http');
const crypto = require('node:crypto');
const { Pool } = require('pg');

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DB_POOL_MAX || 10) });
pool.on('error', () => undefined);
const token = Buffer.from(`Bearer ${process.env.API_TOKEN}`);
const COLUMNS = 'id, stype, "timestamp", description, ip, user_agent, host, instance, request_id';
const authorized = (req) => {
  const given = Buffer.from(req.headers.authorization || '');
  return given.length === token.length && crypto.timingSafeEqual(given, token);
};
const send = (res, status, body) => {
  const json = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(json) });
  res.end(json);
};

http
  .createServer(async (req, res) => {
    try {
      if (!authorized(req)) return send(res, 401, { error: { code: 'UNAUTHORIZED' } });
      const url = new URL(req.url, 'http://x');
      if (req.method === 'GET' && url.pathname === '/api/logs') {
        const { rows } = await pool.query(`SELECT ${COLUMNS} FROM system_logs ORDER BY "timestamp" DESC, id DESC LIMIT $1`, [21]);
        return send(res, 200, { items: rows.slice(0, 20), next: null });
      }
      const one = url.pathname.match(/^\/api\/logs\/(\d+)$/);
      if (req.method === 'GET' && one) {
        const { rows } = await pool.query(`SELECT ${COLUMNS} FROM system_logs WHERE id = $1`, [one[1]]);
        return rows[0] ? send(res, 200, rows[0]) : send(res, 404, { error: { code: 'NOT_FOUND' } });
      }
      if (req.method === 'POST' && url.pathname === '/api/logs') {
        let raw = '';
        for await (const chunk of req) raw += chunk;
        const body = JSON.parse(raw);
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const { rows } = await client.query(
            `INSERT INTO system_logs (stype, description, ip, user_agent, host, instance, request_id)
             VALUES ($1, $2, $3, $4, 'baseline', 0, $5) ON CONFLICT (request_id) DO NOTHING RETURNING ${COLUMNS}`,
            [body.stype, body.description, req.socket.remoteAddress, req.headers['user-agent'] || null, crypto.randomUUID()],
          );
          await client.query('COMMIT');
          return send(res, 201, rows[0]);
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw err;
        } finally {
          client.release();
        }
      }
      send(res, 404, { error: { code: 'NOT_FOUND' } });
    } catch {
      send(res, 500, { error: { code: 'INTERNAL' } });
    }
  })
  .listen(Number(process.env.PORT), '127.0.0.1', () => process.send && process.send('ready'));
