// What PostgreSQL spends on one page of GET /api/logs (21 rows), by how the page leaves it: the
// Express floor's plain columns; sitelog's entries as JSON (row_to_json over to_char's timestamp),
// `current` as src/logs/queries.ts builds them (ROW(…)::log_entry), `lateral` as it did before
// 2026-11-29 (a LATERAL subquery naming the fields, the cursor's two columns beside the entry); the
// alternatives; and the entries' columns alone (`columns_datepart`), for the worker to build the JSON.
// CPU of the backend from /proc per query, prepared statements, 10,000 rows.
// Run: node --import tsx bench/research/list-json-cost.ts
import fs from 'node:fs';
import pg from 'pg';
import { migrate } from '../../src/db/migrate.js';
import { createLogger } from '../../src/logger.js';
import { startPostgres } from '../../test/support/postgres.js';

const N = 4000;
const ts = `to_char(l."timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const variants: Record<string, string> = {
  floor: `SELECT id, stype, "timestamp", description, ip, user_agent, host, instance, request_id FROM system_logs ORDER BY "timestamp" DESC, id DESC LIMIT $1`,
  lateral: `SELECT e."timestamp", l.id, row_to_json(e)::text AS entry FROM system_logs l CROSS JOIN LATERAL (SELECT l.id, l.stype, ${ts} AS "timestamp", l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id) e ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  lateral_entry_only: `SELECT row_to_json(e)::text AS entry FROM system_logs l CROSS JOIN LATERAL (SELECT l.id, l.stype, ${ts} AS "timestamp", l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id) e ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  current: `SELECT row_to_json(ROW(l.id, l.stype, ${ts}, l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id)::log_entry)::text AS entry FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  jbo: `SELECT l."timestamp" AS ts, l.id, json_build_object('id', l.id, 'stype', l.stype, 'timestamp', ${ts}, 'description', l.description, 'ip', l.ip, 'user_agent', l.user_agent, 'host', l.host, 'instance', l.instance, 'request_id', l.request_id)::text AS entry FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  rowjson_rawts: `SELECT e."timestamp", l.id, row_to_json(e)::text AS entry FROM system_logs l CROSS JOIN LATERAL (SELECT l.id, l.stype, l."timestamp", l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id) e ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  agg: `SELECT json_agg(e ORDER BY e.ts DESC, e.id DESC)::text AS page FROM (SELECT l."timestamp" AS ts, l.id, l.stype, ${ts} AS "timestamp", l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1) e`,
  concat: `SELECT l."timestamp" AS ts, l.id, '{"id":' || l.id || ',"stype":' || to_json(l.stype) || ',"timestamp":"' || ${ts} || '","description":' || to_json(l.description) || ',"ip":' || coalesce(to_json(l.ip)::text, 'null') || ',"user_agent":' || coalesce(to_json(l.user_agent)::text, 'null') || ',"host":' || to_json(l.host) || ',"instance":' || coalesce(l.instance::text, 'null') || ',"request_id":' || coalesce(to_json(l.request_id)::text, 'null') || '}' AS entry FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  tschar_only: `SELECT ${ts} AS t, l.id FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  columns_datepart: `SELECT l.id, l.stype, date_part('epoch', l."timestamp") AS at_s, l.description, l.ip, l.user_agent, l.host, l.instance, l.request_id FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
  raw2: `SELECT l."timestamp" AS t, l.id FROM system_logs l ORDER BY l."timestamp" DESC, l.id DESC LIMIT $1`,
};

function ticks(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(x[11]) + Number(x[12]);
}

async function main() {
  const postgres = await startPostgres();
  try {
    await postgres.query('postgres', 'CREATE DATABASE sitelog');
    const client = new pg.Client({ connectionString: postgres.url('sitelog') });
    await client.connect();
    await migrate(postgres.url('sitelog'), client, createLogger({ host: 't', instance: 0, level: 'silent' }));
    await client.query(`INSERT INTO system_logs (stype, description, host, ip, user_agent) SELECT 'app', 'seed entry number ' || g, 'bench', '127.0.0.1', 'autocannon' FROM generate_series(1, 10000) g`);
    await client.query('VACUUM ANALYZE system_logs');
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    for (let round = 0; round < Number(process.env['ROUNDS'] ?? 3); round++) {
      for (const [name, text] of Object.entries(variants)) {
        for (let i = 0; i < 200; i++) await client.query({ name, text, values: [21] });
        const t0 = ticks(pid);
        const started = performance.now();
        for (let i = 0; i < N; i++) await client.query({ name, text, values: [21] });
        const wall = performance.now() - started;
        console.log(`${name.padEnd(16)} backend CPU µs/query ${Math.round(((ticks(pid) - t0) * 10_000) / N)}  wall µs ${Math.round((wall * 1000) / N)}`);
      }
    }
    await client.end();
  } finally {
    await postgres.stop();
  }
}
void main();
