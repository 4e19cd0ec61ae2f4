// The sitelog processes, as PM2 runs them: `npx pm2 start ecosystem.config.js` (npm install builds).
// PM2 evaluates this file in its CLI process at every start and reload: it only declares. The
// processes make what they need when they start (secrets, nginx's config).
require('./src/ops/build-check.cjs').assertBuilt();
const { SHUTDOWN_MS, STARTUP_DEADLINE_MS } = require('./dist/timeouts.js');
const { localStack, logrotateApp, pm2Invocation, productionWeb } = require('./dist/ops/stack.js');

// `pm2 reload ecosystem.config.js` declares web alone: PM2 would restart the fork-mode apps (the
// database, nginx). The one place that reads PM2's argv, and why: src/ops/stack.ts.
const { production, reloading } = pm2Invocation(process.argv);

const web = {
  name: 'web',
  namespace: 'sitelog',
  script: 'dist/server.js',
  cwd: __dirname,
  exec_mode: 'cluster',
  instances: 2,
  // Ready means: database reached, migrations run, startup log written, listening (src/server.ts).
  wait_ready: true,
  // Above the startup deadline, so that a stuck instance is killed, named, by its watchdog before PM2
  // stops waiting (in cluster mode PM2 then only moves on). The restart gets the 15 s left: enough
  // when the cause has passed; in a reload, PM2 stops the old instance at this bound either way.
  listen_timeout: STARTUP_DEADLINE_MS + 15_000,
  kill_timeout: SHUTDOWN_MS + 2_000,
  // 78 = configuration error: restarting cannot fix it, so PM2 leaves it stopped. (No restart
  // delay: PM2 would show such an app as "waiting restart" forever.)
  stop_exit_codes: [78],
  max_memory_restart: '300M',
  // A web instance may use 128 MB of RSS; its live heap is about 30 MB. Young generation: 8 MB
  // semi-spaces (104-112 MB of RSS under the bench; 16 MB reached 130 MB, for no gain the bench could
  // tell apart from noise). Old generation: 128 MB, because it is also what a burst of the largest
  // pages needs (200 entries of 10,000 characters each, several at once): at 64 or 96 MB eight such
  // reads at once ran a worker out of heap. (docs/measurements.md: the runs.)
  node_args: ['--max-semi-space-size=8', '--max-old-space-size=128'],
  env_production: { NODE_ENV: 'production' },
};

const apps = [web];

if (production) {
  // Only web runs from this file there (SPEC): nginx and PostgreSQL are system services (deploy/),
  // and deploy/deploy.sh starts the log rotation from deploy/logrotate.config.js. The environment
  // comes from the shell or deploy/deploy.sh, and the instances validate all of it at startup.
  // deploy.sh runs each release as an app of its own, web-blue or web-green (SITELOG_SLOT), on a
  // port of its own, and moves nginx to it once it is ready: a release that cannot start never
  // takes traffic.
  Object.assign(web, productionWeb(process.env));
}

if (!production) {
  const local = localStack(process.env);
  for (const notice of local.notices) process.stderr.write(`${notice}\n`);
  web.instances = local.instances;
  web.env = local.env;
  if (local.db && !reloading) {
    apps.push({
      name: 'db',
      namespace: 'sitelog',
      script: 'dist/db/embedded.js',
      cwd: __dirname,
      exec_mode: 'fork',
      wait_ready: true,
      listen_timeout: 60_000,
      // a fast shutdown of PostgreSQL can take a checkpoint
      kill_timeout: 30_000,
      stop_exit_codes: [78],
      // PostgreSQL's own lines carry no date; web's are pino JSON with one (a prefix would break it)
      time: true,
      env: local.env,
    });
  }
  if (local.proxy && !reloading) {
    apps.push({
      name: 'proxy',
      namespace: 'sitelog',
      // renders nginx/ for this stack, then runs nginx in the foreground (src/ops/proxy.ts)
      script: 'dist/ops/proxy.js',
      args: ['-c', local.proxy.config],
      cwd: __dirname,
      exec_mode: 'fork',
      // SIGQUIT: nginx's graceful stop, finishing the requests it has
      kill_signal: 'SIGQUIT',
      kill_timeout: 15_000,
      stop_exit_codes: [78],
      time: true,
      env: local.env,
    });
  }
  // Renames PM2's log files past LOG_ROTATE_MAX_SIZE and has PM2 reopen them, losing no line
  // (src/ops/log-rotation.ts, docs/log-rotation.md). Not on a reload, which declares web alone. In
  // production deploy/deploy.sh runs it from deploy/logrotate.config.js.
  if (!reloading) apps.push(logrotateApp(__dirname));
}

module.exports = {
  apps,
  // `pm2 deploy production setup`, then `pm2 deploy production`: PM2 fetches the ref over SSH into
  // path/source, and deploy/deploy.sh makes a release of it (build, migrations, blue/green start,
  // nginx switch). The hosts are prepared once by deploy/provision.sh. deploy.sh needs root for
  // nginx; it runs the release itself as the app user.
  deploy: {
    production: {
      user: 'root',
      host: (process.env.SITELOG_DEPLOY_HOSTS || 'app1.example.com').split(','),
      ref: process.env.SITELOG_DEPLOY_REF || 'origin/main',
      repo: process.env.SITELOG_DEPLOY_REPO || 'git@example.com:ops/sitelog.git',
      path: '/srv/sitelog/pm2-deploy',
      'post-deploy': 'deploy/deploy.sh --repo "$PWD" --ref HEAD',
    },
  },
};
