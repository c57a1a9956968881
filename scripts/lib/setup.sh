# shellcheck shell=bash
# Shared setup for scripts/start and scripts/test. Source it from the repo root
# (the caller has already done `cd` there and `set -euo pipefail`).
#
#   jb_setup   -> node >= 20, dependencies installed, redis-server present, build.

jb_die() {
  local code=$1
  shift
  echo "$*" >&2
  exit "$code"
}

# (a) Node.js >= 20
jb_check_node() {
  local major
  if ! command -v node >/dev/null 2>&1; then
    jb_die 2 "Node.js >= 20 is required but 'node' was not found on PATH (https://nodejs.org/)"
  fi
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < 20)); then
    jb_die 2 "Node.js >= 20 is required, found $(node --version 2>/dev/null || echo unknown)"
  fi
}

# (b) npm ci when node_modules is missing or package-lock.json changed since the last install
jb_ensure_deps() {
  if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "==> installing dependencies (npm ci)" >&2
    if ! npm ci --no-audit --no-fund; then
      # Some npm 11 releases refuse a lock file that lacks other platforms' optional packages
      # (npm/cli#8320), which npm itself leaves out when writing it. npm install reads the same
      # lock file and installs the same versions.
      echo "==> npm ci refused the lock file; installing from it with npm install instead" >&2
      npm install --no-audit --no-fund
    fi
  fi
}

# (c) redis-server on PATH (tests and `dev` start their own; the system service is never used)
jb_ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing redis-server (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    command -v redis-server >/dev/null 2>&1 ||
      jb_die 2 "redis-server is still not on PATH after apt-get install redis-server"
    return 0
  fi
  if [[ "$(id -u)" -ne 0 ]]; then
    jb_die 2 "redis-server is required: sudo apt-get install redis-server"
  fi
  jb_die 2 "redis-server is required and apt-get is not available: install Redis >= 7 so that redis-server is on PATH"
}

# (d) compile src/ -> dist/
jb_build() {
  echo "==> building (npm run build)" >&2
  npm run --silent build
}

jb_setup() {
  jb_check_node
  jb_ensure_deps
  jb_ensure_redis
  jb_build
}
