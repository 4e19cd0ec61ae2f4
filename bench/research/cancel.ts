 
// PgBouncer 1.18 and sitelog's cancel (src/db/lean.ts cancelRunning): the CancelRequest sent with
// socket.end() (the client half-closes at once) against written and left open until PgBouncer closes.
// Run: node --import tsx bench/research/cancel.ts
import fs from 'node:fs';
import net from 'node:net';
import pg from 'pg';
import { cleanup, newLab, startBouncer, startPrimary, q } from './lab.js';

const TRIALS = Number(process.env.TRIALS ?? 10);

function cancel(client: pg.Client, port: number, how: 'end' | 'write'): Promise<boolean> {
  const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
  const request = Buffer.alloc(16);
  request.writeInt32BE(16, 0);
  request.writeInt32BE(80877102, 4);
  request.writeInt32BE(processID, 8);
  request.writeInt32BE(secretKey, 12);
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const timer = setTimeout(() => (socket.destroy(), resolve(false)), 1_000);
    socket.once('connect', () => (how === 'end' ? socket.end(request) : socket.write(request)));
    socket.once('close', () => (clearTimeout(timer), resolve(true)));
    socket.once('error', () => undefined);
  });
}

async function main(): Promise<void> {
  const lab = newLab();
  try {
    const primary = await startPrimary(lab);
    await q(primary.url(), 'CREATE DATABASE sitelog');
    const bouncer = await startBouncer(lab, primary);
    const pidfile = fs.readFileSync(bouncer.config, 'utf8').match(/pidfile = (.*)/)![1]!;
    for (const how of ['end', 'write'] as const) {
      let crashes = 0;
      let cancelled = 0;
      for (let i = 0; i < TRIALS; i++) {
        const c = new pg.Client({ connectionString: bouncer.url() });
        c.on('error', () => undefined);
        await c.connect();
        const running = c.query('SELECT pg_sleep(3)').then(
          () => 'finished',
          (e: { code?: string }) => e.code ?? 'error',
        );
        await new Promise((r) => setTimeout(r, 100));
        await cancel(c, bouncer.port, how);
        if ((await running) === '57014') cancelled++;
        await c.end().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 100));
        const pid = fs.existsSync(pidfile) ? Number(fs.readFileSync(pidfile, 'utf8')) : 0;
        let alive = pid > 0;
        try {
          if (alive) process.kill(pid, 0);
        } catch {
          alive = false;
        }
        if (!alive) {
          crashes++;
          fs.rmSync(pidfile, { force: true });
          bouncer.start();
        }
      }
      console.log(`cancel with socket.${how}(): ${TRIALS} trials, ${cancelled} statements cancelled (57014), PgBouncer died ${crashes} times`);
    }
    const log = fs.readFileSync(bouncer.config.replace('pgbouncer.ini', 'pgbouncer.log'), 'utf8');
    console.log('FATAL lines in pgbouncer.log:', log.split('\n').filter((l) => l.includes('FATAL')).slice(0, 2));
  } finally {
    cleanup(lab);
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
