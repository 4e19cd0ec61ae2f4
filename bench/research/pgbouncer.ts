/* eslint-disable @typescript-eslint/no-unsafe-member-access -- research scripts read untyped rows of pg_locks, SHOW …, pg_stat_replication */
// Question 1 of docs/scaling-research.md: node-postgres through PgBouncer 1.18 in transaction mode,
// as sitelog uses it. Run: node --import tsx bench/research/pgbouncer.ts   (N=20000 by default)
import pg from 'pg';
import { listLogsStatement } from '../../src/logs/queries.js';
import { createSequelize } from '../../src/db/sequelize.js';
import { transaction, withConnection, runOn } from '../../src/db/lean.js';
import type { Config } from '../../src/config.js';
import { cleanup, makeSitelogDatabase, newLab, q, startBouncer, startPrimary } from './lab.js';

const N = Number(process.env.N ?? 20_000);
const ROWS = 20_000;
const out = (label: string, value: unknown) => console.log(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
const errOf = (e: unknown) => `${(e as { code?: string }).code ?? '-'} ${(e as Error).message}`;

async function main(): Promise<void> {
const lab = newLab();
try {
  const primary = await startPrimary(lab);
  await makeSitelogDatabase(primary, ROWS);
  const plain = await startBouncer(lab, primary);
  const ignoring = await startBouncer(lab, primary, { ignore_startup_parameters: 'statement_timeout,idle_in_transaction_session_timeout' });
  out('ports', { primary: primary.port, plain: plain.port, ignoring: ignoring.port });

  // --- startup parameters: what sitelog's Sequelize sends (src/db/sequelize.ts) ---
  const config = { DATABASE_URL: plain.url(), DB_POOL_MAX: 2, INSTANCE: 0 } as Config;
  for (const [label, url] of [['plain', plain.url()], ['ignore_startup_parameters', ignoring.url()]] as const) {
    const sequelize = createSequelize({ ...config, DATABASE_URL: url });
    try {
      const rows = await withConnection(sequelize, (run) =>
        run({ name: '', text: `SELECT current_setting('statement_timeout') st, current_setting('idle_in_transaction_session_timeout') iit, current_setting('application_name') app, current_setting('TimeZone') tz` }, []),
      );
      out(`sequelize via pgbouncer (${label})`, rows[0]);
    } catch (e) {
      out(`sequelize via pgbouncer (${label}) fails`, errOf(e) + ` / cause: ${errOf((e as { parent?: unknown }).parent ?? e)}`);
    } finally {
      await sequelize.close();
    }
  }
  // a plain pg.Client with each parameter alone
  for (const param of ['statement_timeout', 'idle_in_transaction_session_timeout', 'application_name', 'options']) {
    const client = new pg.Client({ connectionString: plain.url(), [param]: param === 'options' ? '-c statement_timeout=5000' : param === 'application_name' ? 'sitelog-web-0' : 5000 });
    try {
      await client.connect();
      out(`pg.Client ${param} via plain pgbouncer`, (await client.query(`SELECT current_setting('application_name') app`)).rows[0]);
    } catch (e) {
      out(`pg.Client ${param} via plain pgbouncer fails`, errOf(e));
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  // the options: the database's (or role's) own settings, and SET LOCAL
  await q(primary.url('sitelog'), `ALTER DATABASE sitelog SET statement_timeout = '5s'`);
  await q(primary.url('sitelog'), `ALTER DATABASE sitelog SET idle_in_transaction_session_timeout = '10s'`);
  await q(ignoring.admin(), 'KILL sitelog'); // server connections opened before the ALTER keep the old values
  await q(ignoring.admin(), 'RESUME sitelog');
  out('after ALTER DATABASE … SET, via pgbouncer', (await q(ignoring.url(), `SELECT current_setting('statement_timeout') st, current_setting('idle_in_transaction_session_timeout') iit`))[0]);
  {
    const c = new pg.Client({ connectionString: ignoring.url() });
    await c.connect();
    await c.query('BEGIN');
    await c.query(`SET LOCAL statement_timeout = '100ms'`);
    const t = performance.now();
    try {
      await c.query('SELECT pg_sleep(1)');
    } catch (e) {
      out('SET LOCAL statement_timeout=100ms then pg_sleep(1)', `${errOf(e)} after ${Math.round(performance.now() - t)} ms`);
    }
    await c.query('ROLLBACK');
    // a session SET through transaction pooling: lands on whichever server connection, stays there
    await c.query(`SET client_min_messages TO error`);
    const others = await Promise.all([0, 1, 2, 3].map(() => q(ignoring.url(), 'SELECT pg_backend_pid() pid, current_setting(\'client_min_messages\') m')));
    out('a session SET by one client, seen by other clients', others.map((r) => r[0]));
    await c.end();
  }

  // --- named statements across transaction-mode connections ---
  const { statement: LIST, values: LIST_VALUES } = listLogsStatement({ limit: 50 });
  const GET = { name: 'sitelog-log-by-id', text: (await import('../../src/logs/queries.js')).listLogsStatement({ limit: 1 }).statement.text.replace(/ORDER BY[\s\S]*$/, '').replace(/SELECT e\."timestamp", l\.id, /, 'SELECT ').trim() + ' WHERE l.id = $1' };
  const clients = async (url: string, n: number) => {
    const cs = Array.from({ length: n }, () => new pg.Client({ connectionString: url }));
    await Promise.all(cs.map((c) => c.connect()));
    for (const c of cs) c.on('error', () => undefined);
    return cs;
  };
  {
    const cs = await clients(ignoring.url(), 8);
    const errors = new Map<string, number>();
    let ok = 0;
    await Promise.all(
      cs.map(async (c, i) => {
        for (let k = 0; k < 250; k++) {
          try {
            await c.query({ name: GET.name, text: GET.text, values: [1 + ((i * 250 + k) % ROWS)] });
            ok++;
          } catch (e) {
            const key = errOf(e).replace(/"[^"]*"/, '"…"');
            errors.set(key, (errors.get(key) ?? 0) + 1);
          }
        }
      }),
    );
    out('named get-by-id, 8 clients × 250 through a pool of 4', { ok, errors: Object.fromEntries(errors) });
    // lean.ts's transaction(): BEGIN/COMMIT are named statements too
    let txOk = 0;
    const txErrors = new Map<string, number>();
    await Promise.all(
      cs.map(async (c) => {
        for (let k = 0; k < 100; k++) {
          try {
            await transaction(runOn(c), (run) => run({ name: '', text: 'SELECT 1' }, []));
            txOk++;
          } catch (e) {
            const key = errOf(e).replace(/"[^"]*"/, '"…"');
            txErrors.set(key, (txErrors.get(key) ?? 0) + 1);
          }
        }
      }),
    );
    out("lean.ts transaction() (named BEGIN/COMMIT), 8 clients × 100", { ok: txOk, errors: Object.fromEntries(txErrors) });
    await Promise.all(cs.map((c) => c.end().catch(() => undefined)));
  }

  // --- unnamed statements with parameters, single and in transactions, 16 clients through a pool of 4 ---
  {
    const cs = await clients(ignoring.url(), 16);
    let errors = 0;
    let done = 0;
    const before = Number((await q(primary.url('sitelog'), 'SELECT count(*) n FROM system_logs'))[0]!['n']);
    await Promise.all(
      cs.map(async (c, i) => {
        for (let k = 0; k < 500; k++) {
          try {
            const got = await c.query({ text: GET.text, values: [1 + ((i * 500 + k) % ROWS)] });
            if (got.rows.length !== 1) throw new Error('wrong row');
            await c.query({ text: 'BEGIN' });
            const ins = await c.query({ text: "INSERT INTO system_logs (stype, description, host, request_id) VALUES ('app', $1, 'lab', $2) RETURNING id", values: [`u ${i} ${k}`, `u-${i}-${k}`] });
            const back = await c.query({ text: 'SELECT description FROM system_logs WHERE id = $1', values: [ins.rows[0].id] });
            if (back.rows[0]?.description !== `u ${i} ${k}`) throw new Error('read-your-write failed');
            await c.query({ text: 'COMMIT' });
            done++;
          } catch (e) {
            errors++;
            if (errors < 3) out('unnamed error', errOf(e));
          }
        }
      }),
    );
    const after = Number((await q(primary.url('sitelog'), 'SELECT count(*) n FROM system_logs'))[0]!['n']);
    out('unnamed, 16 clients × 500 (get + BEGIN/INSERT/SELECT/COMMIT) through a pool of 4', { done, errors, inserted: after - before });
    await Promise.all(cs.map((c) => c.end()));
    await q(primary.url('sitelog'), "DELETE FROM system_logs WHERE host = 'lab' AND request_id LIKE 'u-%'");
  }

  // --- lean.ts's cancel (withConnection + AbortSignal) through PgBouncer ---
  {
    const sequelize = createSequelize({ ...config, DATABASE_URL: ignoring.url() });
    const t = performance.now();
    try {
      await withConnection(sequelize, (run) => run({ name: '', text: 'SELECT pg_sleep(5)' }, []), AbortSignal.timeout(200));
    } catch (e) {
      out('withConnection abort after 200 ms through pgbouncer', `${errOf(e)} after ${Math.round(performance.now() - t)} ms`);
    }
    await sequelize.close();
    await new Promise((r) => setTimeout(r, 200));
    out('PgBouncer died after that cancel (lean.ts ends its cancel socket at once; see cancel.ts)', ignoring.reviveIfDead());
  }

  // --- cost: named vs unnamed, direct vs PgBouncer, on the hot reads ---
  const direct = primary.url('sitelog');
  // a fourth way: the statement inside a PL/pgSQL function, whose plan PostgreSQL caches per server
  // connection, called with an unnamed statement (works through transaction pooling)
  await q(direct, `CREATE FUNCTION research_log_by_id(p_id bigint) RETURNS text LANGUAGE plpgsql STABLE AS $f$
    BEGIN RETURN (${GET.text.replace('$1', 'p_id')}); END $f$`);
  await q(direct, `CREATE FUNCTION research_logs(p_limit int) RETURNS TABLE("timestamp" text, id bigint, entry text) LANGUAGE plpgsql STABLE AS $f$
    #variable_conflict use_column
    BEGIN RETURN QUERY ${LIST.text.replace('$1', 'p_limit')}; END $f$`);
  const FN = { get: { name: '', text: 'SELECT research_log_by_id($1) AS entry' }, list: { name: '', text: 'SELECT * FROM research_logs($1)' } };
  const variants = [
    { label: 'direct named', url: direct, named: true },
    { label: 'direct unnamed', url: direct, named: false },
    { label: 'pgbouncer unnamed', url: ignoring.url(), named: false },
    { label: 'pgbouncer unnamed plpgsql fn', url: ignoring.url(), named: false, fn: true },
  ];
  for (const concurrency of [1, 4]) {
    const totals = new Map<string, number>();
    const rounds = 4;
    for (let round = 0; round < rounds; round++) {
      for (const query of ['get', 'list'] as const) {
        for (const v of round % 2 ? [...variants].reverse() : variants) {
          const cs = await clients(v.url, concurrency);
          const per = Math.ceil(N / rounds / concurrency);
          const t = performance.now();
          await Promise.all(
            cs.map(async (c, i) => {
              for (let k = 0; k < per; k++) {
                const s = v.fn ? FN[query] : query === 'get' ? GET : LIST;
                const values = query === 'get' ? [1 + ((i * per + k * 7919) % ROWS)] : LIST_VALUES;
                await c.query(v.named ? { name: s.name || 'sitelog-logs', text: s.text, values } : { text: s.text, values });
              }
            }),
          );
          const key = `${query} ${v.label}`;
          totals.set(key, (totals.get(key) ?? 0) + (performance.now() - t));
          await Promise.all(cs.map((c) => c.end()));
        }
      }
    }
    for (const query of ['get', 'list']) {
      const base = totals.get(`${query} direct named`)!;
      for (const v of variants) {
        const ms = totals.get(`${query} ${v.label}`)!;
        out(`cost c=${concurrency} ${query} ${v.label}`, `${N} in ${(ms / 1000).toFixed(2)} s = ${Math.round(N / (ms / 1000))}/s, ${((ms * 1000) / N).toFixed(0)} µs each (wall/N), ×${(ms / base).toFixed(2)} of direct named`);
      }
    }
  }
} catch (e) {
  console.error(e);
  const { execSync } = await import('node:child_process');
  console.error(execSync(`tail -n 5 ${lab.dir}/*.log ${lab.dir}/*/*.log`).toString());
} finally {
  cleanup(lab);
}
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
