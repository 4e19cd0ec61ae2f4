#!/usr/bin/env bash
# deploy/deploy.sh — one release of sitelog onto a server prepared by deploy/provision.sh.
#   runuser -u sitelog -- deploy/deploy.sh --repo <git url or path> [--ref main]
# (or from `pm2 deploy production`, whose post-deploy hook calls it with the checkout it fetched).
#
# fetch the release → npm ci → build → migrations, once → switch `current` → pm2 reload --env
# production → /readyz through nginx. When the check fails, `current` goes back to the previous
# release and that is reloaded; the command then exits 1. The last KEEP releases are kept.
set -euo pipefail

APP_HOME=${SITELOG_HOME:-/srv/sitelog}
ENV_FILE=${SITELOG_ENV_FILE:-/etc/sitelog/sitelog.env}
CHECK_URL=${SITELOG_CHECK_URL:-http://127.0.0.1:${SITELOG_LISTEN:-80}/readyz}
KEEP=${SITELOG_KEEP_RELEASES:-5}
PM2="$APP_HOME/pm2/node_modules/.bin/pm2"
export HOME=$APP_HOME PM2_HOME=$APP_HOME/.pm2
# PM2 runs the app from this symlink, so a reload starts the instances of the release it points to
export SITELOG_CURRENT=$APP_HOME/current

repo="" ref="main"
while [ $# -gt 0 ]; do
  case "$1" in
    --repo) repo=${2:?--repo needs a value}; shift 2 ;;
    --ref) ref=${2:?--ref needs a value}; shift 2 ;;
    *) echo "usage: deploy.sh --repo <git url or path> [--ref <branch, tag or commit>]" >&2; exit 2 ;;
  esac
done
[ -n "$repo" ] || { echo "deploy: --repo is required" >&2; exit 2; }
[ -r "$ENV_FILE" ] || { echo "deploy: cannot read $ENV_FILE (run deploy/provision.sh as root first; deploy as the app user)" >&2; exit 1; }
[ -x "$PM2" ] || { echo "deploy: no PM2 at $PM2 (run deploy/provision.sh)" >&2; exit 1; }

log() { printf 'deploy: %s\n' "$*"; }
# the production environment, for npm run migrate and for the instances PM2 starts
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a

# 1. fetch the release into a folder of its own
stamp=$(date -u +%Y%m%d-%H%M%S)
release="$APP_HOME/releases/$stamp"
log "fetching $ref from $repo"
git -c advice.detachedHead=false clone --quiet --no-checkout "$repo" "$release"
git -C "$release" -c advice.detachedHead=false checkout --quiet --detach "$ref"
commit=$(git -C "$release" rev-parse --short HEAD)
log "release $stamp at $commit"

# 2. install and build (the compiler is a dev dependency; NODE_ENV=production would leave it out),
#    then drop what only the build needed. A failure here leaves the running release untouched.
(
  cd "$release"
  npm ci --include=dev --no-audit --no-fund --no-update-notifier --loglevel=error
  npm run build --silent
  npm prune --omit=dev --no-audit --no-fund --no-update-notifier --loglevel=error
)

# 3. migrations, once, before any instance of the release runs (the instances would wait on the
#    same advisory lock and find nothing to do)
(cd "$release" && npm run migrate --silent)

# 4. switch `current` atomically; remember where it pointed
previous=$(readlink "$SITELOG_CURRENT" 2>/dev/null || true)
switch() { ln -sfn "$1" "$SITELOG_CURRENT.next" && mv -T "$SITELOG_CURRENT.next" "$SITELOG_CURRENT"; }
switch "$release"

# 5. reload (or start, on the first deploy) from the symlink, with the environment above
reload() {
  (cd "$SITELOG_CURRENT" && "$PM2" startOrReload ecosystem.config.js --env production --update-env >/dev/null)
}
ready() {
  local deadline=$((SECONDS + ${SITELOG_CHECK_SECONDS:-60}))
  while [ $SECONDS -lt $deadline ]; do
    if node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(3000) }).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' "$CHECK_URL"; then
      return 0
    fi
    sleep 1
  done
  return 1
}
log "reloading into $commit"
if reload && ready; then
  "$PM2" save --force >/dev/null
  log "$commit is live ($CHECK_URL answers 200)"
else
  log "$CHECK_URL did not answer 200 after the reload"
  if [ -n "$previous" ] && [ -d "$previous" ]; then
    log "rolling back to $(basename "$previous")"
    switch "$previous"
    reload
    if ready; then log "rolled back: $(basename "$previous") is live again"; else log "rollback reloaded but $CHECK_URL still fails: see pm2 logs"; fi
  else
    log "no previous release to roll back to: see pm2 logs"
  fi
  exit 1
fi

# 6. keep the last KEEP releases (the live one always among them)
mapfile -t old < <(ls -1d "$APP_HOME"/releases/*/ 2>/dev/null | sed 's:/$::' | head -n -"$KEEP")
for dir in "${old[@]}"; do
  [ "$dir" = "$(readlink "$SITELOG_CURRENT")" ] || rm -rf "$dir"
done
