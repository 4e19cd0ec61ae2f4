import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { listAll } from '../src/ops/pm2.js';
import { freePort } from './support/ports.js';
import { startPostgres, type TestPostgres } from './support/postgres.js';
import { waitFor } from './support/wait.js';

// deploy/provision.sh and deploy/deploy.sh for real, against a layout of the test's own: its folders
// instead of /srv and /etc, an nginx of its own on a test port, a test PostgreSQL, PM2 under the
// layout's home. A prober goes through nginx during every deploy: a good release, one that throws at
// startup, one that never turns ready, and a branch ref each cost users nothing.

const ROOT = path.resolve(__dirname, '..');
const exec = promisify(execFile);

/** Two consecutive free ports: deploy.sh's blue slot on the first, green on the second. */
async function freePortPair(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const server = net.createServer().once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
  for (;;) {
    const port = await freePort();
    if (port < 65535 && (await free(port + 1))) return port;
  }
}

/** A git repository holding this working tree on `main`, with the drill branches beside it. */
function makeRepository(dir: string): void {
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', ...args], { cwd: dir, stdio: 'pipe' });
  const files = execFileSync('git', ['ls-files', '-co', '--exclude-standard', '-z'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter((f) => f !== '' && fs.existsSync(path.join(ROOT, f)));
  fs.mkdirSync(dir, { recursive: true });
  for (const file of files) fs.cpSync(path.join(ROOT, file), path.join(dir, file), { recursive: true });
  // Secrets never reach `npm ci`, where every dependency's install script runs: this one fails the
  // deploy if they do.
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  manifest.scripts['preinstall'] = `node -e "if (process.env.API_TOKEN || process.env.DATABASE_URL) { console.error('secrets seen by npm ci'); process.exit(1) }"`;
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-q', '-m', 'the release under test');
  const branch = (name: string, file: string, from: string, to: string) => {
    git('checkout', '-q', '-b', name, 'main');
    const text = fs.readFileSync(path.join(dir, file), 'utf8');
    assert.ok(text.includes(from), `${file} has ${from}`);
    fs.writeFileSync(path.join(dir, file), text.replace(from, to));
    git('commit', '-q', '-am', name);
  };
  branch('drill-throws', 'src/startup.ts', '  const sequelize = createSequelize(config);', "  throw new Error('drill: this release cannot start');\n  const sequelize = createSequelize(config);");
  branch('drill-never-ready', 'src/health.ts', 'const database = ctx.gate.open && ', 'const database = false && ctx.gate.open && ');
  branch('feature', 'src/home.ts', '<main>', '<main data-release="feature">');
  git('checkout', '-q', 'main');
}

type Probe = { total: number; retried: string[]; failed: Array<{ status: number; path: string }>; stop: () => Promise<void> };

/**
 * Four clients asking nginx for a page and a database read, all along, until stopped (bounded:
 * 10 min). Like a browser, a client sends a GET again once when its kept-alive connection was closed
 * under it (nginx's old workers close idle client connections on a graceful reload); a second
 * failure, and any answer but 200, is a failed request.
 */
function probe(base: string, token: string): Probe {
  const result: Probe = { total: 0, retried: [], failed: [], stop: () => Promise.resolve() };
  let stopped = false;
  const deadline = Date.now() + 600_000;
  const paths = ['/healthz', '/api/logs?limit=1', '/'];
  const get = (p: string) =>
    fetch(`${base}${p}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) }).then(
      async (r) => (await r.arrayBuffer(), r.status),
      (err: Error & { cause?: { code?: string } }) => {
        result.retried.push(`${p}: ${err.cause?.code ?? err.message}`);
        return 0;
      },
    );
  const loops = Array.from({ length: 4 }, async (_, i) => {
    for (let n = i; !stopped && Date.now() < deadline; n += 1) {
      const p = paths[n % paths.length]!;
      let status = await get(p);
      if (status === 0) status = await get(p);
      result.total += 1;
      if (status !== 200) result.failed.push({ status, path: p });
      await sleep(20);
    }
  });
  result.stop = async () => {
    stopped = true;
    await Promise.all(loops);
  };
  return result;
}

describe('deploy', { timeout: 900_000 }, () => {
  let postgres: TestPostgres;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let base: string;
  let token: string;
  const repo = () => path.join(dir, 'repo');
  const home = () => path.join(dir, 'srv');
  const nginxConf = () => path.join(dir, 'nginx', 'nginx.conf');

  const deploy = async (ref: string) => {
    const started = Date.now();
    try {
      const { stdout, stderr } = await exec('bash', [path.join(ROOT, 'deploy', 'deploy.sh'), '--repo', repo(), '--ref', ref], { env, timeout: 300_000 });
      return { code: 0, output: stdout + stderr, ms: Date.now() - started };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}`, ms: Date.now() - started };
    }
  };
  /** Deploys `ref` with the prober running through nginx all along. */
  const deployUnderProbe = async (ref: string, t: { diagnostic: (m: string) => void }) => {
    const prober = probe(base, token);
    await sleep(500);
    const result = await deploy(ref);
    await sleep(500);
    await prober.stop();
    t.diagnostic(`${ref}: exit ${result.code} after ${(result.ms / 1000).toFixed(1)} s; ${prober.total} probes, ${prober.failed.length} failed, ${prober.retried.length} sent again (${prober.retried.join(', ')})`);
    return { ...result, probes: prober };
  };
  const liveCommit = () => execFileSync('git', ['-C', path.join(home(), 'current'), 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
  const commitOf = (ref: string) => execFileSync('git', ['-C', repo(), 'rev-parse', ref], { encoding: 'utf8' }).trim();
  const releases = () => fs.readdirSync(path.join(home(), 'releases')).sort();
  const apps = async () => (await listAll({ ...env, PM2_HOME: path.join(home(), '.pm2') })).filter((p) => p.pm2_env.namespace === 'sitelog');
  const startupLog = () =>
    postgres.query<{ description: string }>('sitelog_deploy', `SELECT description FROM system_logs WHERE stype = 'system' AND host = $1 ORDER BY id`, [os.hostname()]);

  before(async () => {
    postgres = await startPostgres();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sitelog-deploy-'));
    fs.chmodSync(dir, 0o755);
    makeRepository(repo());
    const nginxDir = path.join(dir, 'nginx');
    fs.mkdirSync(path.join(nginxDir, 'sites-enabled'), { recursive: true });
    fs.mkdirSync(path.join(nginxDir, 'tmp'));
    // the server's main config, as the distribution's: it includes whatever sites are enabled
    fs.writeFileSync(
      nginxConf(),
      [
        `pid ${nginxDir}/nginx.pid;`,
        `error_log ${nginxDir}/error.log warn;`,
        'worker_processes 2;',
        'events { worker_connections 1024; }',
        'http {',
        `  access_log off; client_body_temp_path ${nginxDir}/tmp/body; proxy_temp_path ${nginxDir}/tmp/proxy;`,
        `  fastcgi_temp_path ${nginxDir}/tmp/fastcgi; uwsgi_temp_path ${nginxDir}/tmp/uwsgi; scgi_temp_path ${nginxDir}/tmp/scgi;`,
        `  include ${nginxDir}/sites-enabled/*;`,
        '}',
      ].join('\n'),
    );
    const listen = await freePort();
    base = `http://127.0.0.1:${listen}`;
    // the machine's environment (its CA settings for npm, say), without any of the suite's own sitelog variables
    const machine = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(PM2_HOME|DATA_DIR|DATABASE_URL|API_TOKEN|ADMIN_PASSWORD|PORT|SITELOG_.*)$/.test(k)));
    env = {
      ...machine,
      SITELOG_USER: os.userInfo().username,
      SITELOG_HOME: home(),
      SITELOG_ETC: path.join(dir, 'etc'),
      SITELOG_ENV_FILE: path.join(dir, 'etc', 'sitelog.env'),
      SITELOG_PORT: String(await freePortPair()),
      SITELOG_DATABASE_URL: postgres.url('sitelog_deploy'),
      SITELOG_NGINX_DIR: path.join(nginxDir, 'sitelog'),
      SITELOG_NGINX_SITES: path.join(nginxDir, 'sites-enabled'),
      SITELOG_NGINX_CONF: nginxConf(),
      SITELOG_LISTEN: `127.0.0.1:${listen}`,
      SITELOG_CHECK_SECONDS: '20',
    };
    const provision = async () => (await exec('bash', [path.join(ROOT, 'deploy', 'provision.sh')], { env, timeout: 300_000 })).stdout;
    const first = await provision();
    assert.match(first, /provision: done, \d+ change\(s\)/);
    assert.doesNotMatch(first, /npm notice|new version|update available/i, "provision's output is its own");
    assert.match(await provision(), /provision: done, 0 change\(s\)/, 'a second run changes nothing');
    token = fs.readFileSync(env['SITELOG_ENV_FILE']!, 'utf8').match(/^API_TOKEN=(.*)$/m)![1]!;
    // the first deploy, from a local repository that another user owns (git's "dubious ownership")
    const asRoot = process.getuid?.() === 0;
    if (asRoot) execFileSync('chown', ['-R', 'nobody', repo()]);
    const initial = await deploy('main');
    if (asRoot) execFileSync('chown', ['-R', `${process.getuid?.()}`, repo()]);
    assert.equal(initial.code, 0, initial.output);
  });

  after(async () => {
    if (!dir) return;
    await exec(process.execPath, [path.join(ROOT, 'node_modules', 'pm2', 'bin', 'pm2'), 'kill'], { env: { ...env, PM2_HOME: path.join(home(), '.pm2') } }).catch(() => undefined);
    const pidFile = path.join(dir, 'nginx', 'nginx.pid');
    if (fs.existsSync(pidFile)) process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 'SIGQUIT');
    await postgres?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('when a good release is deployed under load, then no probe fails, it is live, and its instances are recorded as reloaded, never as a new server start', async (t) => {
    execFileSync('git', ['-C', repo(), '-c', 'user.name=test', '-c', 'user.email=test@example.com', 'commit', '-q', '--allow-empty', '-m', 'a second release']);
    const logBefore = await startupLog();
    const slotBefore = fs.readFileSync(path.join(home(), 'live-slot'), 'utf8').trim();
    const result = await deployUnderProbe('main', t);
    assert.equal(result.code, 0, result.output);
    assert.ok(result.probes.total > 50, `${result.probes.total} probes`);
    assert.deepEqual(result.probes.failed, []);
    assert.equal(liveCommit(), commitOf('main'));
    const slot = fs.readFileSync(path.join(home(), 'live-slot'), 'utf8').trim();
    assert.notEqual(slot, slotBefore);
    const instances = os.availableParallelism(); // provision's WEB_INSTANCES=max
    assert.deepEqual((await apps()).map((p) => p.name).sort(), [...Array<string>(instances).fill(`web-${slot}`), 'logrotate'].sort());
    // the log rotation runs from the live release, which boot brings back (pm2 save)
    const logrotate = (await apps()).find((p) => p.name === 'logrotate')!;
    assert.equal((logrotate.pm2_env as { pm_cwd?: string }).pm_cwd, fs.realpathSync(path.join(home(), 'current')));
    const saved = fs.readFileSync(path.join(home(), '.pm2', 'dump.pm2'), 'utf8');
    assert.deepEqual([...new Set((JSON.parse(saved) as Array<{ name: string }>).map((p) => p.name))].sort(), ['logrotate', `web-${slot}`]);
    const added = (await startupLog()).slice(logBefore.length).map((r) => r.description);
    assert.equal(added.filter((d) => d === 'server started').length, 0);
    const expected = Array.from({ length: instances }, (_, k) => `instance ${k} reloaded (pid)`);
    assert.deepEqual(added.map((d) => d.replace(/\(pid \d+\)/, '(pid)')).sort(), expected);
    // and /api/starts tells the same story: the current start's entries end with this deploy's reloads
    const starts = (await (await fetch(`${base}/api/starts`, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      items: Array<{ entries: Array<{ event: string }> }>;
    };
    assert.deepEqual(starts.items[0]!.entries.slice(-instances).map((e) => e.event), Array(instances).fill('reloaded'));
    // the doctor runs on the release as deployed: dev dependencies pruned, nothing to build
    const current = path.join(home(), 'current');
    assert.equal(fs.existsSync(path.join(current, 'node_modules', 'typescript')), false);
    const doctor = await exec('npm', ['run', 'doctor', '--silent', '--', '--nginx-config', nginxConf()], { cwd: current, env: { ...env, PM2_HOME: path.join(home(), '.pm2') } }).then(
      (r) => r.stdout,
      (err: { stdout?: string }) => err.stdout ?? '',
    );
    assert.match(doctor, /^ok +cluster-mode/m);
    assert.match(doctor, /^ok +migrations/m);
    assert.match(doctor, /^sitelog doctor: /m);
  });

  test('when a release throws at startup, then no probe fails, deploy exits 1 with its own error line, and nothing of it is left', async (t) => {
    const before = { commit: liveCommit(), releases: releases(), apps: (await apps()).map((p) => p.pid).sort() };
    const result = await deployUnderProbe('drill-throws', t);
    assert.equal(result.code, 1, result.output);
    assert.match(result.output, /drill: this release cannot start/);
    assert.match(result.output, /it never took traffic, and the live release is untouched/);
    assert.deepEqual(result.probes.failed, []);
    assert.equal(liveCommit(), before.commit);
    assert.deepEqual(releases(), before.releases, 'no half-made release');
    assert.deepEqual((await apps()).map((p) => p.pid).sort(), before.apps, 'the live instances were not touched');
  });

  test('when a release never turns ready, then no probe fails and deploy exits 1 once its check runs out', async (t) => {
    const before = { commit: liveCommit(), releases: releases(), starts: (await startupLog()).filter((r) => r.description === 'server started').length };
    const result = await deployUnderProbe('drill-never-ready', t);
    assert.equal(result.code, 1, result.output);
    assert.match(result.output, /not ready after 20 s/);
    assert.deepEqual(result.probes.failed, []);
    assert.equal(liveCommit(), before.commit);
    assert.deepEqual(releases(), before.releases);
    assert.equal((await startupLog()).filter((r) => r.description === 'server started').length, before.starts);
  });

  test('when a second deploy starts while one runs, then it refuses at once and the first one goes live', async () => {
    const releasesBefore = releases().length;
    const first = deploy('main');
    // its release folder appears after it took the lock
    await waitFor('the first deploy to hold its lock', () => releases().length > releasesBefore || undefined);
    const second = await deploy('feature');
    assert.equal(second.code, 1, second.output);
    assert.match(second.output, /another deploy is running/);
    const result = await first;
    assert.equal(result.code, 0, result.output);
    assert.equal(liveCommit(), commitOf('main'));
  });

  test('when the ref is a branch other than the default, a tag or a commit, then it deploys', async (t) => {
    execFileSync('git', ['-C', repo(), 'tag', 'v-feature', 'feature']);
    for (const ref of ['feature', 'v-feature', commitOf('main')]) {
      const result = await deployUnderProbe(ref, t);
      assert.equal(result.code, 0, `${ref}: ${result.output}`);
      assert.deepEqual(result.probes.failed, [], ref);
      assert.equal(liveCommit(), commitOf(ref), ref);
    }
    const page = await (await fetch(`${base}/`)).text();
    assert.doesNotMatch(page, /data-release="feature"/, 'the last deploy (main) is what answers');
  });
});
