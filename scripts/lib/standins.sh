# Sourced by the scripts after common.sh: installs and runs the real
# stand-ins the tests talk to (an S3 server, an SQS server, the Lambda
# runtime interface emulator), all under $ROOT/.deps, listening on 127.0.0.1
# only.
#
#   standins_install              install what is missing (idempotent), and
#                                 put moto_server and cfn-lint (which the
#                                 template test runs) on PATH
#   s3_start / s3_stop            versitygw, exports MEDIA_PROXY_TEST_S3_*
#   sqs_start / sqs_stop          moto_server, exports MEDIA_PROXY_TEST_SQS_ENDPOINT
#   standins_stop_all             for `trap standins_stop_all EXIT`
#
# versitygw's posix backend keeps each bucket as a directory under its root
# and object metadata (content type, user metadata, ...) in user extended
# attributes, so the root must be on a filesystem with user xattrs (ext4,
# xfs, btrfs and tmpfs do; /work and /tmp here are ext4). If not, it is
# started with --sidecar, which keeps metadata in files beside the data.

STANDINS_VERSITYGW_VERSION=v1.8.0
STANDINS_RIE_VERSION=v0.0.0-20261030222936-bef5c4ba774d
STANDINS_BIN="$ROOT/.deps/bin"
STANDINS_RUN="$ROOT/.deps/run"
# moto_server and cfn-lint come from a virtual environment built from the
# pinned requirements (see _standins_python_tools).
STANDINS_PY_REQUIREMENTS="$ROOT/scripts/lib/requirements.txt"
STANDINS_PY_VENV="$ROOT/.deps/python-tools"

# Fixed keys: the server listens on loopback only and lives for one run.
STANDINS_S3_ACCESS_KEY=media-proxy-test
STANDINS_S3_SECRET_KEY=media-proxy-test-secret

STANDINS_S3_PID=
STANDINS_S3_DIR=
STANDINS_SQS_PID=
STANDINS_SQS_LOG=

# _standins_go_install NAME MODULE/PATH VERSION installs one Go binary into
# .deps/bin unless the stamp says that version is already there.
_standins_go_install() {
  local name=$1 pkg=$2 version=$3
  local stamp="$STANDINS_BIN/.$name.version"
  if [[ -x "$STANDINS_BIN/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    return 0
  fi
  echo "installing $name $version into .deps/bin (first run only)" >&2
  mkdir -p "$STANDINS_BIN"
  GOBIN="$STANDINS_BIN" go install "$pkg@$version"
  echo "$version" >"$stamp"
}

standins_install() {
  _standins_go_install versitygw github.com/versity/versitygw/cmd/versitygw "$STANDINS_VERSITYGW_VERSION"
  _standins_go_install aws-lambda-rie github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie "$STANDINS_RIE_VERSION"
  export MEDIA_PROXY_TEST_RIE="$STANDINS_BIN/aws-lambda-rie"

  _standins_python_tools
}

# _standins_python_tools puts moto_server and cfn-lint on PATH, from the
# virtual environment under .deps that the pinned requirements were last
# installed into. It builds that environment when it is missing or the
# requirements changed. When it cannot (the Python package index is out of
# reach, as on machines that reach only a few registries), it uses the
# tools already on PATH, saying which and whether their versions are the
# pinned ones; only when there are none does it fail, saying what to do.
_standins_python_tools() {
  local venv=$STANDINS_PY_VENV req=$STANDINS_PY_REQUIREMENTS want log
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" == "$want" && -x "$venv/bin/moto_server" && -x "$venv/bin/cfn-lint" ]]; then
    export PATH="$venv/bin:$PATH"
    return 0
  fi
  log=$(mktemp)
  echo "installing the pinned Python tools (${req#"$ROOT/"}) into ${venv#"$ROOT/"}" >&2
  if _standins_python_venv "$venv" "$req" >"$log" 2>&1 && [[ -x "$venv/bin/moto_server" && -x "$venv/bin/cfn-lint" ]]; then
    echo "$want" >"$venv/.requirements.sha256"
    rm -f "$log"
    export PATH="$venv/bin:$PATH"
    return 0
  fi
  local moto cfn missing pinned_moto pinned_cfn
  moto=$(command -v moto_server || true)
  cfn=$(command -v cfn-lint || true)
  pinned_moto=$(sed -n 's/^moto\[server\]==//p' "$req")
  pinned_cfn=$(sed -n 's/^cfn-lint==//p' "$req")
  {
    echo "could not (is the Python package index out of reach?); pip said:"
    grep -v '^[[:space:]]*$' "$log" | tail -n 3 | sed 's/^/    /' || true
  } >&2
  rm -f "$log"
  if [[ -z "$moto" || -z "$cfn" ]]; then
    missing="moto_server and cfn-lint"
    [[ -z "$moto" ]] || missing=cfn-lint
    [[ -z "$cfn" ]] || missing=moto_server
    cat >&2 <<EOF
Not on PATH either: $missing. The tests need moto_server
(moto[server] $pinned_moto, the SQS stand-in) and cfn-lint $pinned_cfn (checks
infra/template.yaml). Run scripts/test where the Python package index is
reachable (it installs them into ${venv#"$ROOT/"} itself), or install them
into a Python environment of your own and put it on PATH:
    python3 -m venv ~/.local/media-proxy-tools
    ~/.local/media-proxy-tools/bin/pip install -r ${req#"$ROOT/"}
    export PATH=~/.local/media-proxy-tools/bin:\$PATH
EOF
    return 1
  fi
  echo "Using the ones already on PATH instead (the pinned ones are tried again next run):" >&2
  _standins_python_found moto_server "$moto" "$(_standins_python_version "$moto" moto)" "$pinned_moto"
  _standins_python_found cfn-lint "$cfn" "$(cfn-lint --version 2>/dev/null | awk '{print $2}')" "$pinned_cfn"
}

# _standins_python_venv DIR REQUIREMENTS makes the environment DIR (once)
# and installs REQUIREMENTS into it. pip gives up within seconds when the
# index is out of reach; the environment stays for the next try.
_standins_python_venv() {
  local venv=$1 req=$2
  command -v python3 >/dev/null || { echo "python3 not found"; return 1; }
  if [[ ! -x "$venv/bin/pip" ]]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv"; then
      # Debian and Ubuntu ship venv's pip in python3-venv.
      rm -rf "$venv"
      [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || return 1
      apt_install python3-venv && python3 -m venv "$venv" || return 1
    fi
  fi
  rm -f "$venv/.requirements.sha256"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
    --timeout 15 --retries 0 -r "$req"
}

# _standins_python_version COMMAND DIST prints the version of the Python
# package DIST where COMMAND runs: the python of its #! line, or, for a
# pyenv shim (a bash script), the python3 on PATH it runs.
_standins_python_version() {
  local cmd=$1 dist=$2 python=python3 first
  first=$(head -n 1 "$cmd" 2>/dev/null || true)
  if [[ "$first" == '#!'*python* ]]; then
    python=${first#\#!}
    python=${python# }
    python=${python%% *}
  fi
  "$python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null || echo unknown
}

# _standins_python_found NAME PATH VERSION PINNED says which tool is used.
_standins_python_found() {
  local note="the pinned version"
  [[ "$3" == "$4" ]] || note="not the pinned $4: results may differ"
  echo "    $1: $2 (version $3, $note)" >&2
}

# _standins_free_port prints a loopback TCP port nobody listens on.
_standins_free_port() {
  local port i
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 40000))
    # A connection that succeeds means the port is taken.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free loopback port found" >&2
  return 1
}

# _standins_wait NAME PID PORT LOG SECONDS waits until PORT accepts
# connections, failing early if the process died.
_standins_wait() {
  local name=$1 pid=$2 port=$3 log=$4 seconds=$5 i
  for ((i = 0; i < seconds * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before listening on 127.0.0.1:$port; log $log:" >&2
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "$name did not listen on 127.0.0.1:$port within ${seconds}s; log $log:" >&2
  tail -n 20 "$log" >&2 || true
  return 1
}

# _standins_has_xattr DIR tells whether DIR's filesystem takes user xattrs.
_standins_has_xattr() {
  python3 - "$1" <<'EOF' 2>/dev/null
import os, sys, tempfile
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as f:
    os.setxattr(f.name, "user.media-proxy-test", b"1")
EOF
}

_standins_kill() {
  local pid=$1 i
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

s3_start() {
  [[ -z "$STANDINS_S3_PID" ]] || { echo "s3 stand-in already running" >&2; return 1; }
  mkdir -p "$STANDINS_RUN"
  local port dir log meta=()
  port=$(_standins_free_port)
  dir=$(mktemp -d "$STANDINS_RUN/s3.XXXXXX")
  log="$dir.log"
  mkdir "$dir/root"
  if ! _standins_has_xattr "$dir/root"; then
    mkdir "$dir/sidecar"
    meta=(--sidecar "$dir/sidecar")
  fi
  ROOT_ACCESS_KEY="$STANDINS_S3_ACCESS_KEY" ROOT_SECRET_KEY="$STANDINS_S3_SECRET_KEY" \
    "$STANDINS_BIN/versitygw" --port "127.0.0.1:$port" --quiet posix "${meta[@]}" "$dir/root" >"$log" 2>&1 &
  STANDINS_S3_PID=$!
  STANDINS_S3_DIR=$dir
  if ! _standins_wait versitygw "$STANDINS_S3_PID" "$port" "$log" 10; then
    s3_stop
    return 1
  fi
  export MEDIA_PROXY_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export MEDIA_PROXY_TEST_S3_ACCESS_KEY="$STANDINS_S3_ACCESS_KEY"
  export MEDIA_PROXY_TEST_S3_SECRET_KEY="$STANDINS_S3_SECRET_KEY"
  export MEDIA_PROXY_TEST_S3_REGION=us-east-1
}

s3_stop() {
  _standins_kill "$STANDINS_S3_PID"
  if [[ -n "$STANDINS_S3_DIR" ]]; then
    rm -rf "$STANDINS_S3_DIR" "$STANDINS_S3_DIR.log"
  fi
  STANDINS_S3_PID=
  STANDINS_S3_DIR=
  unset MEDIA_PROXY_TEST_S3_ENDPOINT MEDIA_PROXY_TEST_S3_ACCESS_KEY MEDIA_PROXY_TEST_S3_SECRET_KEY MEDIA_PROXY_TEST_S3_REGION
}

sqs_start() {
  [[ -z "$STANDINS_SQS_PID" ]] || { echo "sqs stand-in already running" >&2; return 1; }
  mkdir -p "$STANDINS_RUN"
  local port log
  port=$(_standins_free_port)
  log="$STANDINS_RUN/sqs.$port.log"
  # moto on PATH may be a pyenv shim; the shim execs, so $! stays the server.
  moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  STANDINS_SQS_PID=$!
  if ! _standins_wait moto_server "$STANDINS_SQS_PID" "$port" "$log" 20; then
    sqs_stop
    return 1
  fi
  STANDINS_SQS_LOG=$log
  export MEDIA_PROXY_TEST_SQS_ENDPOINT="http://127.0.0.1:$port"
}

sqs_stop() {
  _standins_kill "$STANDINS_SQS_PID"
  STANDINS_SQS_PID=
  if [[ -n "$STANDINS_SQS_LOG" ]]; then
    rm -f "$STANDINS_SQS_LOG"
  fi
  STANDINS_SQS_LOG=
  unset MEDIA_PROXY_TEST_SQS_ENDPOINT
}

standins_stop_all() {
  s3_stop
  sqs_stop
}
