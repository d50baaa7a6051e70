# Sourced by scripts/bench: builds imgproxy, the second baseline, from a
# source copy outside the repository (none of its code is committed here),
# against the pinned libvips from libvips_setup. The Go module proxy refuses
# imgproxy, so the source comes from, in order:
#
#   MEDIA_PROXY_BENCH_IMGPROXY_SRC   a source tarball, or a folder holding one
#                                    (imgproxy-*-src.tar.gz) or the source itself
#   <team folder>/baselines/imgproxy the team folder beside the checkout
#                                    (../shared), or beside the main checkout of
#                                    a git worktree
#
# The binary is cached in .deps/bench/imgproxy-<key>, keyed by the source,
# the libvips pin, Go's version and the architecture.
#
#   imgproxy_source        prints the source's path, or fails saying why
#   imgproxy_cached SRC    prints the cached binary's path if it is built
#   imgproxy_build SRC     builds it if needed (minutes, the first time)
#                          and prints the binary's path

imgproxy_source() {
  local cand=() c common
  if [ -n "${MEDIA_PROXY_BENCH_IMGPROXY_SRC:-}" ]; then
    cand=("$MEDIA_PROXY_BENCH_IMGPROXY_SRC")
  else
    cand=("$ROOT/../shared/baselines/imgproxy")
    # A worktree's team folder sits beside the main checkout.
    common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
    [ -n "$common" ] && cand+=("$(dirname "$(dirname "$common")")/shared/baselines/imgproxy")
  fi
  for c in "${cand[@]}"; do
    if [ -f "$c" ] && [[ "$c" == *.tar.gz ]]; then
      echo "$c"
      return 0
    fi
    if [ -d "$c" ]; then
      if [ -f "$c/go.mod" ] && [ -d "$c/cli" ]; then
        (cd "$c" && pwd)
        return 0
      fi
      local tgz
      tgz=$(find "$c" -maxdepth 1 -name 'imgproxy-*-src.tar.gz' | sort | tail -1)
      if [ -n "$tgz" ]; then
        echo "$tgz"
        return 0
      fi
    fi
  done
  echo "imgproxy: no source found (looked in: ${cand[*]}); set MEDIA_PROXY_BENCH_IMGPROXY_SRC to its tarball or folder" >&2
  return 1
}

# _imgproxy_key SRC: what the cached binary depends on.
_imgproxy_key() {
  local src=$1 sum
  if [ -f "$src" ]; then
    sum=$(sha256sum "$src" | cut -d' ' -f1)
  else
    sum=$(cd "$src" && find . -type f \( -name '*.go' -o -name '*.c' -o -name '*.h' -o -name 'go.mod' -o -name 'go.sum' \) -print0 |
      sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  fi
  printf '%s %s %s %s' "$sum" "$LIBVIPS_NPM_VERSION" "$(go env GOVERSION)" "$(uname -m)" | sha256sum | cut -c1-16
}

imgproxy_cached() {
  local bin
  bin=$ROOT/.deps/bench/imgproxy-$(_imgproxy_key "$1")/imgproxy
  [ -x "$bin" ] || return 1
  echo "$bin"
}

imgproxy_build() {
  local src=$1 dir bin tree shim
  if bin=$(imgproxy_cached "$src"); then
    echo "$bin"
    return 0
  fi
  : "${LIBVIPS_PREFIX:?imgproxy_build needs libvips_setup first}"
  dir=$ROOT/.deps/bench/imgproxy-$(_imgproxy_key "$src")
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp/shim/vips"
  shim=$dir.tmp/shim
  # sharp's libvips build has no glib-2.0.pc (glib is inside libvips-cpp)
  # and no vips7compat.h, whose three macros imgproxy still uses.
  cat >"$shim/glib-2.0.pc" <<PC
Name: glib-2.0
Description: glib inside libvips-cpp
Version: 2.86.0
Libs: -lvips-cpp
Cflags: -I$LIBVIPS_PREFIX/include/glib-2.0 -I$LIBVIPS_PREFIX/lib/glib-2.0/include
PC
  printf '%s\n' '#define VIPS_SAVEABLE_MONO VIPS_FOREIGN_SAVEABLE_MONO' \
    '#define VIPS_SAVEABLE_RGB VIPS_FOREIGN_SAVEABLE_RGB' \
    '#define VIPS_SAVEABLE_RGBA (VIPS_FOREIGN_SAVEABLE_RGB | VIPS_FOREIGN_SAVEABLE_ALPHA)' >"$shim/vips/vips7compat.h"
  if [ -f "$src" ]; then
    tree=$dir.tmp/src
    mkdir -p "$tree"
    tar xzf "$src" -C "$tree" || { echo "imgproxy: cannot unpack $src" >&2; return 1; }
  else
    tree=$src
  fi
  echo "imgproxy: building from $src against libvips $LIBVIPS_NPM_VERSION (a few minutes the first time)" >&2
  if ! (cd "$tree" && PKG_CONFIG_PATH=$LIBVIPS_PREFIX/lib/pkgconfig:$shim CGO_ENABLED=1 CGO_CFLAGS="-O2 -I$shim" \
    CGO_LDFLAGS="-L$LIBVIPS_PREFIX/lib -Wl,-rpath,$LIBVIPS_PREFIX/lib" \
    go build -trimpath -o "$dir.tmp/imgproxy" ./cli >&2); then
    echo "imgproxy: the build failed (see above)" >&2
    return 1
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  mv "$dir.tmp/imgproxy" "$dir/imgproxy"
  rm -rf "$dir.tmp"
  echo "$dir/imgproxy"
}
