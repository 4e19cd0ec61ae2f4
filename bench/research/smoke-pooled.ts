// Scratch: the app behind PgBouncer (transaction mode) with DATABASE_DIRECT_URL. Not committed.
import { cleanup, newLab, q, startBouncer, startPrimary } from './lab.js';
import { startApp } from '../../test/support/app.js';
import { authHeaders } from '../../test/support/stack.js';

async function main() {
const lab = newLab();
try {
  const primary = await startPrimary(lab, 40);
  const bouncer = await startBouncer(lab, primary, { server_login_retry: 1, query_wait_timeout: 2, default_pool_size: 4 });
  const app = await startApp(bouncer.url('sitelog'), { DATABASE_DIRECT_URL: primary.url('sitelog'), DB_POOL_MAX: '6', LOG_LEVEL: 'info', LOG_RETENTION_DAYS: '1', LOG_RETENTION_INTERVAL_MS: '500' });
  const errors: string[] = [];
  const ids: number[] = [];
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: 16 }, async (_, c) => {
      for (let i = 0; i < 60; i++) {
        const r = await fetch(`${app.base}/api/logs`, { method: 'POST', headers: authHeaders({ 'content-type': 'application/json', 'idempotency-key': `key-${c}-${i}-smoke` }), body: JSON.stringify({ stype: 'app', description: `d ${c} ${i}` }) });
        if (r.status !== 201) errors.push(`POST ${r.status} ${await r.text()}`);
        else {
          const { id } = (await r.json()) as { id: number };
          ids.push(id);
          const g = await fetch(`${app.base}/api/logs/${id}`, { headers: authHeaders() });
          if (g.status !== 200) errors.push(`GET ${g.status} ${await g.text()}`);
          const l = await fetch(`${app.base}/api/logs?limit=20`, { headers: authHeaders() });
          if (l.status !== 200) errors.push(`LIST ${l.status} ${await l.text()}`);
        }
      }
    }),
  );
  console.log('requests done in', Date.now() - t0, 'ms; errors', errors.length, errors.slice(0, 5));
  const login = await fetch(`${app.base}/console/login`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'password=wrong-password' });
  console.log('wrong login', login.status);
  console.log('through bouncer', await q(bouncer.url('sitelog'), "SELECT current_setting('statement_timeout') st, current_setting('lock_timeout') lt, current_setting('idle_in_transaction_session_timeout') it"));
  console.log('rows', await q(primary.url('sitelog'), 'SELECT count(*) FROM system_logs'));
  console.log('locks', await q(primary.url('sitelog'), "SELECT a.application_name, l.locktype, l.objid, l.objsubid FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype='advisory'"));
  const starts = await fetch(`${app.base}/api/starts`, { headers: authHeaders() });
  console.log('starts', starts.status, (await starts.text()).slice(0, 300));
  const inst = await fetch(`${app.base}/api/instances`, { headers: authHeaders() });
  console.log('instances', inst.status, (await inst.text()).slice(0, 300));
  await new Promise((r) => setTimeout(r, 1500));
  await app.stop();
} finally {
  cleanup(lab);
}
}
void main();
