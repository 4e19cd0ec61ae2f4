#!/usr/bin/env bash
# deploy/deploy.sh — one release of sitelog onto a server prepared by deploy/provision.sh, as root:
#   deploy/deploy.sh --repo <git url or path> [--ref <branch, tag or commit>]
# (or from `pm2 deploy production`, whose post-deploy hook calls it with the checkout it fetched).
#
# Blue/green: the release runs beside the live one and takes traffic only once it is ready.
#   fetch the ref → npm ci, build, prune → migrations, once → start it as the idle slot's PM2 app
#   (web-blue on PORT, web-green on PORT+1) → wait until every instance is online and its /readyz
#   answers 200 → point nginx at its port (nginx -s reload is graceful) → /readyz through nginx →
#   stop the old slot once nginx's old workers are gone → `current`, the release's logrotate app,
#   pm2 save (what a boot resurrects).
# A release that cannot start or never turns ready is stopped and removed, and nginx and the live
# release are never touched: users see nothing. Exit 1 with the new instances' own last lines.
# Everything the release runs, runs as the app user; root is needed for nginx only.
#
# Settings (environment, defaults in brackets); the folders are variables so a test can use its own:
#   SITELOG_USER [sitelog], SITELOG_HOME [/srv/sitelog]   the app user and its home
#   SITELOG_ENV_FILE [/etc/sitelog/sitelog.env]            the production environment (PORT, DATABASE_URL, …)
#   SITELOG_NGINX_DIR [/etc/nginx/sitelog]                 where the site is rendered
#   SITELOG_NGINX_SITES [/etc/nginx/sites-enabled]         where it is enabled
#   SITELOG_NGINX_CONF [nginx's own]                       the main config, for nginx -t / -s reload
#   SITELOG_LISTEN [80]                                    nginx's plain-HTTP listen
#   SITELOG_TLS_CERT / SITELOG_TLS_KEY [/etc/sitelog/tls/fullchain.pem, privkey.pem]  HTTPS when both exist
#   SITELOG_CHECK_SECONDS [60]                             how long a release may take to turn ready
#   SITELOG_KEEP_RELEASES [5]
set -euo pipefail
export NO_UPDATE_NOTIFIER=1 NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false

APP_USER=${SITELOG_USER:-sitelog}
APP_HOME=${SITELOG_HOME:-/srv/sitelog}
ENV_FILE=${SITELOG_ENV_FILE:-/etc/sitelog/sitelog.env}
NGINX_DIR=${SITELOG_NGINX_DIR:-/etc/nginx/sitelog}
NGINX_SITES=${SITELOG_NGINX_SITES:-/etc/nginx/sites-enabled}
NGINX_CONF=${SITELOG_NGINX_CONF:-}
LISTEN=${SITELOG_LISTEN:-80}
TLS_CERT=${SITELOG_TLS_CERT:-/etc/sitelog/tls/fullchain.pem}
TLS_KEY=${SITELOG_TLS_KEY:-/etc/sitelog/tls/privkey.pem}
CHECK_SECONDS=${SITELOG_CHECK_SECONDS:-60}
KEEP=${SITELOG_KEEP_RELEASES:-5}
PM2="$APP_HOME/pm2/node_modules/.bin/pm2"
CURRENT=$APP_HOME/current
SLOT_FILE=$APP_HOME/live-slot

log() { printf 'deploy: %s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }

repo="" ref="main"
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo=${2:?--repo needs a value}; shift 2 ;;
    --ref) ref=${2:?--ref needs a value}; shift 2 ;;
    *) echo "usage: deploy.sh --repo <git url or path> [--ref <branch, tag or commit>]" >&2; exit 2 ;;
  esac
done
[ -n "$repo" ] || die "--repo is required"
[ "$(id -u)" = 0 ] || die "run as root: deploy.sh points nginx at the new release, and runs the release as $APP_USER"
[ -r "$ENV_FILE" ] || die "cannot read $ENV_FILE (run deploy/provision.sh first)"
[ -x "$PM2" ] || die "no PM2 at $PM2 (run deploy/provision.sh)"
[ -d "$repo" ] && repo=$(cd "$repo" && pwd)

# fd 9 is the deploy lock: what this script starts must not inherit it (PM2's daemon would hold it)
as_app() {
  if [ "$(id -un)" = "$APP_USER" ]; then env HOME="$APP_HOME" PM2_HOME="$APP_HOME/.pm2" "$@" 9>&-
  else runuser -u "$APP_USER" -- env HOME="$APP_HOME" PM2_HOME="$APP_HOME/.pm2" "$@" 9>&-; fi
}
pm2_app() { as_app "$PM2" "$@"; }
# The production environment goes only to what needs it (the migrations, PM2 starting the release,
# the readiness wait), never to `npm ci`, whose dependencies' install scripts would see every secret.
with_env() (
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
  "$@"
)
BASE_PORT=$(with_env sh -c 'echo "${PORT:-3000}"')

# --- 1. fetch the release into a folder of its own; a failed attempt leaves nothing behind --------
stamp=$(date -u +%Y%m%d-%H%M%S)
release="$APP_HOME/releases/$stamp"
# one deploy at a time: two would pick the same idle slot
exec 9>"$APP_HOME/.deploy.lock"
flock -n 9 || die "another deploy is running (lock: $APP_HOME/.deploy.lock)"
candidate="" gitconfig="" backup="" committed=0 start_log=""
# Once nginx sends traffic to the new slot the release is committed: nothing after that may remove it.
cleanup() {
  local code=$?
  [ -n "$gitconfig" ] && rm -f "$gitconfig"
  [ -n "$start_log" ] && rm -f "$start_log"
  if [ "$code" != 0 ] && [ "$committed" = 0 ]; then
    [ -n "$backup" ] && restore_nginx
    [ -n "$candidate" ] && pm2_app delete "$candidate" >/dev/null 2>&1 || true
    [ -d "$release" ] && [ "$release" != "$(readlink "$CURRENT" 2>/dev/null)" ] && rm -rf "$release"
  fi
  [ -n "$backup" ] && rm -rf "$backup"
  return 0
}
trap cleanup EXIT

log "fetching $ref from $repo"
# A local repository owned by another user is refused by git ("dubious ownership") unless it is
# listed in safe.directory, which only global or system config may do: a global config of this run's
# own lists it (and includes the app user's own).
gitconfig=$(mktemp)
printf '[include]\n\tpath = %s/.gitconfig\n[safe]\n\tdirectory = %s\n\tdirectory = %s/.git\n' "$APP_HOME" "$repo" "$repo" > "$gitconfig"
chmod 0644 "$gitconfig"
git_app() { as_app env GIT_CONFIG_GLOBAL="$gitconfig" git -c advice.detachedHead=false "$@"; }
git_app clone --quiet --no-checkout "$repo" "$release"
# a branch is origin/<ref> in the clone; a tag or a commit is itself
commit=$(git_app -C "$release" rev-parse --verify --quiet "origin/$ref^{commit}" || git_app -C "$release" rev-parse --verify --quiet "$ref^{commit}") ||
  die "no branch, tag or commit '$ref' in $repo"
git_app -C "$release" checkout --quiet --detach "$commit"
short=$(git_app -C "$release" rev-parse --short HEAD)
log "release $stamp at $short"

# --- 2. install and build (the compiler is a dev dependency), then drop what only the build needed --
(
  cd "$release"
  as_app npm ci --include=dev --no-audit --no-fund --loglevel=error >/dev/null
  as_app node src/ops/build-check.cjs check
  as_app npm prune --omit=dev --no-audit --no-fund --loglevel=error >/dev/null
)

# --- 3. migrations, once, before any instance of the release runs --------------------------------
(cd "$release" && with_env as_app npm run migrate --silent)

# --- 4. the idle slot: the app that is not live (an app named `web`, from before slots, counts as blue)
# (a daemon that jlist had to spawn first prints "[PM2] …" lines before the JSON)
apps=$(pm2_app jlist 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=s.split("\n").find(l=>l.startsWith("[{")||l.trim()==="[]");for(const p of JSON.parse(j||"[]"))console.log(p.name)})' || true)
live=$(cat "$SLOT_FILE" 2>/dev/null || true)
if [ -z "$live" ] && grep -qx web <<<"$apps"; then live=web; fi
case "$live" in blue|web) new=green ;; *) new=blue ;; esac
port_of() { case "$1" in green) echo $((BASE_PORT + 1)) ;; *) echo "$BASE_PORT" ;; esac; }
app_of() { case "$1" in web) echo web ;; *) echo "web-$1" ;; esac; }
new_port=$(port_of "$new")
candidate=$(app_of "$new")
# a slot left over from an interrupted deploy
grep -qx "$candidate" <<<"$apps" && pm2_app delete "$candidate" >/dev/null

# --- 5. start the release beside the live one, and wait until it is ready --------------------------
log "starting $short as $candidate on port $new_port"
started=$SECONDS
start_log=$(mktemp)
# --only: the slot's app alone (in production the file declares nothing else; the log rotation is
# started from deploy/logrotate.config.js in step 7, once the release is committed)
(cd "$release" && with_env as_app env PORT="$new_port" SITELOG_SLOT="$new" "$PM2" start ecosystem.config.js --env production --update-env --only "$candidate" >"$start_log" 2>&1) &
starting=$!
if ! (cd "$release" && with_env as_app node dist/ops/wait-ready.js --app "$candidate" --url "http://127.0.0.1:$new_port/readyz" --timeout "$CHECK_SECONDS"); then
  kill "$starting" 2>/dev/null || true
  wait "$starting" 2>/dev/null || true
  grep -E '^sitelog:|\[PM2\]\[ERROR\]' "$start_log" | sed 's/^/deploy: pm2 start: /' >&2 || true
  die "$short did not become ready ($((SECONDS - started)) s): it never took traffic, and the live release is untouched"
fi
wait "$starting" || true
log "$candidate is ready on port $new_port ($((SECONDS - started)) s)"

# --- 6. point nginx at it -------------------------------------------------------------------------
nginx_c=(${NGINX_CONF:+-c "$NGINX_CONF"})
pid_file=$(nginx -T "${nginx_c[@]}" 2>/dev/null | sed -n 's/^[[:space:]]*pid[[:space:]]\+\([^;]*\);.*/\1/p' | head -1) || true
pid_file=${pid_file:-/run/nginx.pid}
render_site() { # release folder, port
  local tls=()
  [ -r "$TLS_CERT" ] && [ -r "$TLS_KEY" ] && tls=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
  # with the production environment: the site's METRICS_ALLOW
  with_env node "$1/dist/ops/render-nginx.js" --dir "$NGINX_DIR" --listen "$LISTEN" --upstream "127.0.0.1:$2" "${tls[@]}" >/dev/null
  ln -sfn "$NGINX_DIR/sitelog.conf" "$NGINX_SITES/sitelog"
  if [ ${#tls[@]} -gt 0 ]; then ln -sfn "$NGINX_DIR/sitelog-tls.conf" "$NGINX_SITES/sitelog-tls"; else rm -f "$NGINX_SITES/sitelog-tls"; fi
}
workers_of() { # the worker processes of an nginx master, from /proc (no procps on a bare system)
  local stat pid ppid rest
  for stat in /proc/[0-9]*/stat; do
    read -r pid _ _ ppid rest < "$stat" 2>/dev/null || continue
    [ "$ppid" = "$1" ] && echo "$pid"
  done
  return 0
}
reload_nginx() { # reloads (or starts) nginx, then waits until the old workers have finished their requests
  local master old deadline
  master=$(cat "$pid_file" 2>/dev/null || true)
  if [ -n "$master" ] && kill -0 "$master" 2>/dev/null; then
    old=$(workers_of "$master")
    nginx "${nginx_c[@]}" -s reload
    deadline=$((SECONDS + 30))
    for pid in $old; do
      while [ -d "/proc/$pid" ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      # a master that refused the new configuration (a port it cannot bind) keeps its old workers
      [ ! -d "/proc/$pid" ] || return 1
    done
  else
    nginx "${nginx_c[@]}" 9>&-
  fi
}
# puts back the site as it was before this deploy rendered its own (files and links)
restore_nginx() {
  local link
  find "$NGINX_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  cp -a "$backup/." "$NGINX_DIR/" && rm -f "$NGINX_DIR"/.link-*
  for link in sitelog sitelog-tls; do
    if [ -f "$backup/.link-$link" ]; then ln -sfn "$(cat "$backup/.link-$link")" "$NGINX_SITES/$link"; else rm -f "$NGINX_SITES/$link"; fi
  done
}
mkdir -p "$NGINX_DIR" "$NGINX_SITES"
# the site as it was (its files and its two links), put back by restore_nginx on any failure
backup=$(mktemp -d)
cp -a "$NGINX_DIR/." "$backup/"
for link in sitelog sitelog-tls; do readlink "$NGINX_SITES/$link" > "$backup/.link-$link" 2>/dev/null || rm -f "$backup/.link-$link"; done
render_site "$release" "$new_port"
nginx_t=$(mktemp)
if ! nginx -t -q "${nginx_c[@]}" 2>"$nginx_t"; then
  reason=$(tail -1 "$nginx_t"); rm -f "$nginx_t"
  die "nginx -t fails with this release's site: $reason; nginx and the live release are untouched"
fi
rm -f "$nginx_t"
if ! reload_nginx; then
  restore_nginx && reload_nginx || true
  die "nginx kept its old configuration after the reload (see its error log): back on the live release"
fi
# the check goes where nginx listens: LISTEN's address when it names one, else loopback
listen_host=127.0.0.1
case "$LISTEN" in *:*) listen_host=${LISTEN%:*} ;; esac
case "$listen_host" in 0.0.0.0|'*'|'[::]') listen_host=127.0.0.1 ;; esac
check_url="http://$listen_host:${LISTEN##*:}/readyz"
if ! node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' "$check_url"; then
  restore_nginx
  [ -n "$live" ] && reload_nginx || true
  die "$check_url did not answer 200 through nginx: nginx is back on the live release"
fi
committed=1
log "nginx sends traffic to $candidate"

# --- 7. the old slot goes; the new one is what boots -----------------------------------------------
if [ -n "$live" ]; then
  # gone already if the daemon was restarted since (pm2 kill, a container without resurrect)
  pm2_app delete "$(app_of "$live")" >/dev/null 2>&1 || true
  log "stopped $(app_of "$live") (its requests finished first)"
fi
echo "$new" > "$SLOT_FILE"
ln -sfn "$release" "$CURRENT.next" && mv -T "$CURRENT.next" "$CURRENT"
candidate=""
# the log rotation (rename, then PM2 reopens: docs/log-rotation.md) runs from the live release:
# started anew, since a restart would keep the old release's folder, which step 8 deletes in time
# (a release older than deploy/logrotate.config.js declares it in ecosystem.config.js). The release
# is live already: a rotation that does not start is a warning, and the apps are saved either way.
pm2_app delete logrotate >/dev/null 2>&1 || true
if [ -f "$release/deploy/logrotate.config.js" ]; then rotation=(deploy/logrotate.config.js); else rotation=(ecosystem.config.js --env production --only logrotate); fi
(cd "$release" && with_env as_app "$PM2" start "${rotation[@]}" >/dev/null) \
  || printf 'deploy: warning: the logrotate app did not start; PM2 log files are not rotated until the next deploy\n' >&2
# what `pm2 resurrect` brings back at boot (provision.sh's pm2-<user>.service): this release's apps
pm2_app save --force >/dev/null
log "$short is live (deploy took $SECONDS s)"

# --- 8. keep the last KEEP releases (the live one always among them) -------------------------------
mapfile -t old < <(ls -1d "$APP_HOME"/releases/*/ 2>/dev/null | sed 's:/$::' | head -n -"$KEEP")
for dir in "${old[@]}"; do
  [ "$dir" = "$(readlink "$CURRENT")" ] || rm -rf "$dir"
done
