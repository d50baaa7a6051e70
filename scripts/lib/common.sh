# Sourced by the scripts: repository root, Go checks and the pinned libvips.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# shellcheck source=libvips.sh
source "$ROOT/scripts/lib/libvips.sh"

host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo x64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) echo "unsupported machine $(uname -m)" >&2; return 1 ;;
  esac
}

need_go() {
  command -v go >/dev/null || { echo "Go 1.26 or newer is needed: https://go.dev/dl/" >&2; exit 1; }
}

# need_node checks for Node.js >= 20.9 and npm, which scripts/test needs
# (npm fetches the pinned libvips build and the benchmark baseline's
# sharp; node runs that baseline, which scripts/test smoke-runs).
need_node() {
  local v
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "Node.js 20.9 or newer and npm are needed (npm fetches the pinned libvips build and the benchmark baseline's sharp; node runs the baseline): https://nodejs.org/en/download (Debian 12's own nodejs is too old)" >&2
    exit 1
  fi
  v=$(node -p 'process.versions.node')
  if ! printf '20.9.0\n%s\n' "$v" | sort -V -C; then
    echo "Node.js 20.9 or newer is needed for the benchmark baseline; this node is $v: https://nodejs.org/en/download" >&2
    exit 1
  fi
}

# need_npm_for_libvips checks for npm when the pinned libvips build (which
# comes from the npm registry) is not installed yet.
need_npm_for_libvips() {
  [[ -f "$ROOT/.deps/libvips/$LIBVIPS_NPM_VERSION/linux-$1/.complete-$LIBVIPS_NPM_VERSION" ]] && return 0
  command -v npm >/dev/null && return 0
  echo "npm is needed once, to fetch the pinned libvips build from the npm registry (apt-get install npm, or Node.js from https://nodejs.org/en/download)" >&2
  exit 1
}

# apt_install PACKAGE... installs Debian packages when we are root, or exits
# with the command to run.
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing $*; install it with: sudo apt-get install $*" >&2
    exit 1
  fi
  echo "installing $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet.
  apt-get install -y --no-install-recommends "$@" >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends "$@" >&2; }
}
