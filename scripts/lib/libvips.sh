# Sourced by the other scripts. Installs the pinned libvips build from the npm
# registry into .deps/libvips/<version>/linux-<arch> (once) and points cgo at
# it through a path-free pkg-config file and CGO_LDFLAGS. The same files are
# bundled into the Lambda artifact.
#
# Usage: libvips_setup [x64|arm64]

LIBVIPS_NPM_VERSION=1.3.4 # @img/sharp-libvips-* 1.3.4 = libvips 8.18.7
LIBVIPS_SO=libvips-cpp.so.8.18.7
declare -A LIBVIPS_SHA256=(
  [dev]=e9dd5562c219d44cab7ce811906773a1354b583ed4bfa5115e1cdc954a0290aa
  [linux-x64]=e371cb713fc8822c96a0d3fb60a3d092799d0aefab6d7f1fb3b72d8d75f1d109
  [linux-arm64]=495e6c63c797c6b080a9dbd827a8cc0790b77f8f7d5d82f1764dadfc5068a845
)

libvips_setup() {
  local arch=${1:-x64}
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  local prefix=$root/.deps/libvips/$LIBVIPS_NPM_VERSION/linux-$arch
  if [ ! -f "$prefix/.complete-$LIBVIPS_NPM_VERSION" ]; then
    command -v npm >/dev/null || { echo "libvips: npm is needed to fetch the pinned libvips build (apt-get install npm)" >&2; return 1; }
    local tmp
    tmp=$(mktemp -d)
    echo "libvips: fetching @img/sharp-libvips-linux-$arch@$LIBVIPS_NPM_VERSION and headers" >&2
    (cd "$tmp" && npm pack --silent "@img/sharp-libvips-linux-$arch@$LIBVIPS_NPM_VERSION" "@img/sharp-libvips-dev@$LIBVIPS_NPM_VERSION" >/dev/null) || { rm -rf "$tmp"; return 1; }
    local pkg sum want
    for pkg in dev "linux-$arch"; do
      want=${LIBVIPS_SHA256[$pkg]}
      sum=$(sha256sum "$tmp/img-sharp-libvips-$pkg-$LIBVIPS_NPM_VERSION.tgz" | cut -d' ' -f1)
      if [ "$sum" != "$want" ]; then
        echo "libvips: checksum mismatch for $pkg: got $sum, want $want" >&2
        rm -rf "$tmp"
        return 1
      fi
    done
    rm -rf "$prefix"
    mkdir -p "$prefix"
    tar xzf "$tmp/img-sharp-libvips-linux-$arch-$LIBVIPS_NPM_VERSION.tgz" -C "$prefix" --strip-components=1 package/lib
    tar xzf "$tmp/img-sharp-libvips-dev-$LIBVIPS_NPM_VERSION.tgz" -C "$prefix" --strip-components=1 package/include
    rm -rf "$tmp"
    ln -sf "$LIBVIPS_SO" "$prefix/lib/libvips-cpp.so"
    touch "$prefix/.complete-$LIBVIPS_NPM_VERSION"
  fi
  # The pkg-config file names no absolute path (${pcfiledir} is wherever
  # it lies) and links only the library's name; the folder to link from
  # comes in CGO_LDFLAGS below.
  mkdir -p "$prefix/lib/pkgconfig"
  cat >"$prefix/lib/pkgconfig/vips.pc" <<'PC'
prefix=${pcfiledir}/../..
libdir=${prefix}/lib
includedir=${prefix}/include

Name: vips
Description: the pinned libvips build from @img/sharp-libvips (scripts/lib/libvips.sh)
Version: 8.18.7
Libs: -lvips-cpp
Cflags: -I${includedir} -I${includedir}/glib-2.0 -I${libdir}/glib-2.0/include
PC
  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  export CGO_ENABLED=1
  # Go's build cache keys a cgo package by its source and CGO_* variables,
  # not by what pkg-config printed, and records the link flags inside the
  # cached package. An absolute -L from pkg-config would therefore be
  # reused by every other checkout (with -trimpath, which drops the
  # package folder from the key) and point the linker at a folder that may
  # be gone. In CGO_LDFLAGS the path is part of the key: each checkout
  # compiles the one small vips package once and shares everything else.
  # The folder also names the libvips version, so a new pin never reuses
  # a package compiled against older headers. The rpath lets test binaries
  # and the dev server find the library in place; scripts/package replaces
  # it with $ORIGIN/lib.
  export CGO_LDFLAGS="-g -O2 -L$prefix/lib -Wl,-rpath,$prefix/lib"
  LIBVIPS_PREFIX=$prefix
  export LIBVIPS_PREFIX
}
