# shellcheck shell=bash
# Shared setup for scripts/start and scripts/test. Source it from the repo root
# (the caller has already done `cd` there and `set -euo pipefail`).
#
#   jb_setup   -> node >= 24 (fetched when the system's is older), dependencies installed,
#                 redis-server present, build.

jb_die() {
  local code=$1
  shift
  echo "$*" >&2
  exit "$code"
}

# (a) Node.js >= 24. When the system's Node is older (or missing), Node 26 LTS is fetched from
# the npm registry (package node-linux-<arch>, binary under bin/node) into the checkout's local
# state, once, checked against the integrity pinned here, and put first on PATH for everything
# the scripts run afterwards, npm included (npm's own launcher runs on the `node` found on PATH).
# Nothing is installed outside the checkout.
JB_NODE_MIN=24
JB_NODE_VERSION=26.12.1
declare -A JB_NODE_INTEGRITY=(
  [linux-x64]="sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A=="
  [linux-arm64]="sha512-8Oxs6Y7rDcKufVIM/zYRSwytj46WOrZk7yFCLTKDcs17bBjAeD9HMAqo97hMfMyxozIud0S4vZCs5WB/3iavNQ=="
)

jb_node_major() {
  local v
  v=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [[ "$v" =~ ^[0-9]+$ ]] && echo "$v" || echo 0
}

jb_ensure_node() {
  local root dir
  root=${JB_ROOT:-$(pwd)}
  dir="$root/.jitbroker/runtime/node-v$JB_NODE_VERSION"
  # A Node fetched earlier wins over an older system Node without asking again.
  if [[ -x "$dir/bin/node" ]] && (($(jb_node_major) < JB_NODE_MIN)); then
    export PATH="$dir/bin:$PATH"
  fi
  (($(jb_node_major) >= JB_NODE_MIN)) && return 0

  local platform os arch
  case "$(uname -s)" in Linux) os=linux ;; *) os=unsupported ;; esac
  case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=unsupported ;; esac
  platform="$os-$arch"
  [[ -n "${JB_NODE_INTEGRITY[$platform]:-}" ]] ||
    jb_die 2 "Node.js >= $JB_NODE_MIN is required (found $(node --version 2>/dev/null || echo none)) and no Node $JB_NODE_VERSION package is pinned for $(uname -s)/$(uname -m): install Node.js >= $JB_NODE_MIN"
  command -v npm >/dev/null 2>&1 ||
    jb_die 2 "Node.js >= $JB_NODE_MIN is required (found $(node --version 2>/dev/null || echo none)), and npm, needed to fetch it, is not on PATH"

  echo "==> system Node is $(node --version 2>/dev/null || echo missing); fetching Node $JB_NODE_VERSION (node-$platform) from the npm registry into .jitbroker/runtime (once)" >&2
  mkdir -p "$root/.jitbroker/runtime"
  local tmp tgz integrity
  tmp=$(mktemp -d "$root/.jitbroker/runtime/.fetch.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the path is fixed
  trap "rm -rf '$tmp'" RETURN
  (cd "$tmp" && npm pack --silent --no-update-notifier "node-$platform@$JB_NODE_VERSION" >/dev/null) ||
    jb_die 3 "could not fetch node-$platform@$JB_NODE_VERSION from the npm registry"
  tgz=$(ls "$tmp"/node-"$platform"-*.tgz 2>/dev/null | head -n 1)
  [[ -f "$tgz" ]] || jb_die 3 "npm pack node-$platform@$JB_NODE_VERSION produced no tarball"
  # npm runs on the system's (older) node, so that node is there to compute the digest.
  integrity=$(node -e 'const c=require("crypto"),f=require("fs");process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tgz")
  [[ "$integrity" == "${JB_NODE_INTEGRITY[$platform]}" ]] ||
    jb_die 3 "node-$platform@$JB_NODE_VERSION from the registry does not match the pinned integrity (got $integrity); refusing to run it"
  mkdir -p "$tmp/x"
  tar -xzf "$tgz" -C "$tmp/x" --strip-components=1
  "$tmp/x/bin/node" --version >/dev/null 2>&1 || jb_die 3 "the fetched Node $JB_NODE_VERSION does not run on this machine"
  rm -rf "$dir"
  mv "$tmp/x" "$dir"
  export PATH="$dir/bin:$PATH"
  echo "==> using Node $(node --version) from .jitbroker/runtime" >&2
}

# (b) npm ci when node_modules is missing or package-lock.json changed since the last install
jb_ensure_deps() {
  if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
    echo "==> installing dependencies (npm ci)" >&2
    npm ci --no-audit --no-fund --no-update-notifier
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

# (c2) Debian's Chromium at /usr/bin/chromium, for the console's browser tests (scripts/test
# only; playwright-core drives it and never downloads a browser)
jb_ensure_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
    [[ -x /usr/bin/chromium ]] || jb_die 2 "/usr/bin/chromium is still missing after apt-get install chromium"
    return 0
  fi
  jb_die 2 "the console's browser tests need Debian's Chromium at /usr/bin/chromium: sudo apt-get install chromium"
}

# (d) compile src/ -> dist/
jb_build() {
  echo "==> building (npm run build)" >&2
  npm run --silent build
}

jb_setup() {
  jb_ensure_node
  jb_ensure_deps
  jb_ensure_redis
  jb_build
}
