#!/usr/bin/env bash
# Builds carehub's Debian packages (care-edge, care-hub, care-sim,
# carehub-pki) with dpkg-buildpackage from debian/, for this machine's
# architecture or cross-built for another, and leaves the .deb files in dist/.
#
#   deploy/package.sh                    this machine's architecture
#   deploy/package.sh --arch arm64       cross-built for arm64 gateways
#   deploy/package.sh --no-check         skip the unit tests of the build
#                                        (for arm64 they run under qemu-user)
#   deploy/package.sh --version 0.1.1    a changelog entry for this version
#                                        first (in the build's copy only)
#   deploy/package.sh --lint             run lintian on the result
#   deploy/package.sh --out DIR          the .deb files to DIR, not dist/
#
# The build runs in a copy of the tree (the checkout's tracked and untracked,
# not ignored files) under build-pkg/ARCH[-VERSION]/: the checkout gets
# build-pkg/ and dist/, both ignored by git, and nothing else. Missing build
# dependencies are installed with apt-get when run as root (for arm64 also
# the arm64 architecture, crossbuild-essential-arm64 and qemu-user-static);
# otherwise they are listed and the script stops.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HOST_ARCH=$(dpkg --print-architecture)
ARCH=$HOST_ARCH
CHECK=1
VERSION=
LINT=0
DIST=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:?--arch needs amd64 or arm64}; shift 2 ;;
    --arch=*) ARCH=${1#*=}; shift ;;
    --no-check) CHECK=0; shift ;;
    --version) VERSION=${2:?--version needs a Debian version}; shift 2 ;;
    --version=*) VERSION=${1#*=}; shift ;;
    --lint) LINT=1; shift ;;
    --out) DIST=${2:?--out needs a directory}; shift 2 ;;
    --out=*) DIST=${1#*=}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$ARCH" in
  amd64|arm64) ;;
  *) echo "package.sh: --arch takes amd64 or arm64, not '$ARCH'" >&2; exit 2 ;;
esac

say() { printf '\033[1m[package]\033[0m %s\n' "$*"; }
t0=$(date +%s)

missing=
CROSS=0
[ "$ARCH" != "$HOST_ARCH" ] && CROSS=1
PROFILES=()
[ $CROSS -eq 1 ] && PROFILES+=(cross)
[ $CHECK -eq 0 ] && PROFILES+=(nocheck)
PROFILE_LIST=$(IFS=,; echo "${PROFILES[*]}")

# ---- the build's copy of the tree -------------------------------------------
SRC_VERSION=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Version)
OUT="$ROOT/build-pkg/$ARCH${VERSION:+-$VERSION}"
DIST=$(mkdir -p "${DIST:-$ROOT/dist}" && cd "${DIST:-$ROOT/dist}" && pwd)
SRC="$OUT/carehub-${VERSION:-$SRC_VERSION}"
rm -rf "$OUT"
mkdir -p "$SRC"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # tracked and untracked files that are not ignored, less those deleted
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done | tar --null --no-recursion -T - -cf - | tar -xf - -C "$SRC")
else
  (cd "$ROOT" && tar --exclude='./build*' --exclude=./dist --exclude=./.git -cf - .) |
    tar -xf - -C "$SRC"
fi
if [ -n "$VERSION" ] && [ "$VERSION" != "$SRC_VERSION" ]; then
  maint=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Maintainer)
  dist=$(dpkg-parsechangelog -l "$ROOT/debian/changelog" -S Distribution)
  { printf 'carehub (%s) %s; urgency=medium\n\n  * Built by deploy/package.sh --version %s.\n\n -- %s  %s\n\n' \
      "$VERSION" "$dist" "$VERSION" "$maint" "$(date -R)"
    cat "$ROOT/debian/changelog"; } >"$SRC/debian/changelog"
fi

# ---- build dependencies -----------------------------------------------------
checkdeps() {
  (cd "$SRC" && dpkg-checkbuilddeps -a"$ARCH" ${PROFILE_LIST:+-P"$PROFILE_LIST"} 2>&1)
}
if ! command -v dpkg-checkbuilddeps >/dev/null || ! command -v dh >/dev/null ||
    { [ $CROSS -eq 1 ] && ! command -v "$(dpkg-architecture -a"$ARCH" -qDEB_HOST_GNU_TYPE 2>/dev/null)-gcc" >/dev/null; } ||
    ! missing=$(checkdeps); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "package.sh: build dependencies are missing${missing:+: ${missing##*: }}" >&2
    echo "package.sh: installing them needs root (apt-get). Run as root, or install" >&2
    echo "  dpkg-dev debhelper and the Build-Depends of debian/control" >&2
    [ $CROSS -eq 1 ] && echo "  (for $ARCH: dpkg --add-architecture $ARCH; crossbuild-essential-$ARCH, the :$ARCH -dev packages)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ $CROSS -eq 1 ] && ! dpkg --print-foreign-architectures | grep -qx "$ARCH"; then
    say "adding the $ARCH architecture to dpkg"
    dpkg --add-architecture "$ARCH"
  fi
  say "installing the build dependencies (apt-get)"
  apt-get update -qq
  tools=(dpkg-dev debhelper)
  [ $CROSS -eq 1 ] && tools+=("crossbuild-essential-$ARCH")
  apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
  # the Build-Depends of debian/control, for the target architecture
  (cd "$SRC" && apt-get build-dep -y -qq --no-install-recommends -a"$ARCH" \
    ${PROFILE_LIST:+-P"$PROFILE_LIST"} ./ >/dev/null)
  checkdeps >/dev/null || { checkdeps >&2; exit 1; }
fi

# ---- build --------------------------------------------------------------------
opts="parallel=$(nproc)"
[ $CHECK -eq 0 ] && opts="nocheck $opts"
say "building $ARCH packages ${VERSION:-$SRC_VERSION}${PROFILE_LIST:+ (profiles $PROFILE_LIST)} in ${OUT#"$ROOT"/}"
cross_args=()
[ $CROSS -eq 1 ] && cross_args=(-a"$ARCH")
if ! (cd "$SRC" && DEB_BUILD_OPTIONS="$opts ${DEB_BUILD_OPTIONS:-}" nice \
    dpkg-buildpackage -us -uc -b "${cross_args[@]}" ${PROFILE_LIST:+-P"$PROFILE_LIST"}) \
    >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log" >&2
  echo "package.sh: the build failed; the whole log: ${OUT#"$ROOT"/}/build.log" >&2
  exit 1
fi

# ---- results ------------------------------------------------------------------
# the previous build's files of this architecture go (and arch "all")
rm -f "$DIST/"*_"$ARCH".deb "$DIST/"*_all.deb "$DIST/"*_"$ARCH".buildinfo "$DIST/"*_"$ARCH".changes
cp "$OUT"/*.deb "$OUT"/*.buildinfo "$OUT"/*.changes "$DIST/"
say "packages in ${DIST#"$ROOT"/} after $(($(date +%s) - t0)) s:"
for f in "$OUT"/*.deb; do
  printf '  %-44s %6s KiB, installed %6s KiB\n' "$(basename "$f")" "$(($(stat -c %s "$f") / 1024))" \
    "$(dpkg-deb -f "$f" Installed-Size)"
done
if [ $LINT -eq 1 ]; then
  command -v lintian >/dev/null || { echo "package.sh: --lint needs lintian (apt-get install lintian)" >&2; exit 1; }
  say "lintian"
  # errors and warnings fail; info and pedantic tags are printed
  lintian --info --display-info --fail-on error,warning "$OUT"/*.changes
fi
