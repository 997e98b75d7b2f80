#!/usr/bin/env bash
# arm64 (issue 12): cross-builds the Debian packages for arm64 gateways with
# deploy/package.sh --arch arm64, whose build runs the unit tests under
# qemu-user (qemu-aarch64-static as CMAKE_CROSSCOMPILING_EMULATOR: binfmt_misc
# need not be registered), then checks the result:
#   - every unit test passed under qemu, and how long they took is printed;
#   - `file` says "ARM aarch64" of every ELF file the packages install;
#   - `dpkg-deb -I` says "Architecture: arm64" of each package that
#     debian/control builds per architecture (Architecture: any), and "all"
#     of the others (carehub-pki).
# The .deb files go to build-pkg/dist-arm64/ (ARM64_OUT=DIR for another), not
# dist/: a package.sh of another architecture running at the same time (tests/
# run-packages.sh) replaces the *_all.deb files of its dist/. The build itself
# is in build-pkg/arm64/ (package.sh's own directory per architecture).
# Needs root: package.sh installs what is missing (the arm64 architecture,
# crossbuild-essential-arm64, qemu-user-static, the :arm64 -dev packages)
# with apt-get. About 1.5 minutes on 2 cores once they are installed.
#   tests/run-arm64.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

start=$(date +%s)
if [ "$(id -u)" -ne 0 ]; then
  echo "run-arm64.sh: needs root: deploy/package.sh --arch arm64 installs the arm64" >&2
  echo "  toolchain (dpkg --add-architecture arm64, crossbuild-essential-arm64," >&2
  echo "  qemu-user-static, the :arm64 -dev packages) with apt-get when missing" >&2
  exit 1
fi
for tool in file dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "run-arm64.sh: needs $tool" >&2; exit 1; }
done
OUT=${ARM64_OUT:-$ROOT/build-pkg/dist-arm64}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
fail=0
bad() { echo "run-arm64.sh: FAIL: $*" >&2; fail=1; }

# ---- build, unit tests under qemu ------------------------------------------
deploy/package.sh --arch arm64 --out "$OUT"
log=build-pkg/arm64/build.log
# ctest's summary in the build's log (dh_auto_test: ctest -L unit)
summary=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1 || true)
ttime=$(grep -E '^Total Test time \(real\)' "$log" | tail -1 | sed 's/.*= *//' || true)
if [ -z "$summary" ]; then
  bad "no ctest summary in $log: the unit tests did not run"
else
  case "$summary" in
    "100% tests passed"*) ;;
    *) bad "unit tests under qemu: $summary" ;;
  esac
fi
grep -q 'CMAKE_CROSSCOMPILING_EMULATOR=/usr/bin/qemu-aarch64-static' "$log" ||
  bad "the build did not configure qemu-aarch64-static as the test emulator"

# ---- the packages ------------------------------------------------------------
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Package -> Architecture, from debian/control
declare -A want
while read -r pkg arch; do
  want[$pkg]=$arch
done < <(awk '/^Package:/ { p = $2 } /^Architecture:/ && p { print p, $2; p = "" }' debian/control)
for pkg in "${!want[@]}"; do
  arch=${want[$pkg]}
  [ "$arch" = any ] && arch=arm64
  deb="$OUT/${pkg}_${version}_${arch}.deb"
  if [ ! -f "$deb" ]; then
    bad "$pkg: no ${deb#"$ROOT"/}"
    continue
  fi
  got=$(dpkg-deb -I "$deb" | sed -n 's/^ Architecture: *//p')
  [ "$got" = "$arch" ] || bad "$pkg: dpkg-deb -I says Architecture: $got, want $arch"
  printf '  %-40s Architecture: %s\n' "$(basename "$deb")" "$got"
  dpkg-deb -x "$deb" "$tmp/$pkg"
  nelf=0
  while IFS= read -r -d '' f; do
    desc=$(file -b "$f")
    case "$desc" in ELF*) ;; *) continue ;; esac
    nelf=$((nelf + 1))
    case "$desc" in
      *"ARM aarch64"*) printf '    %-38s %s\n' "${f#"$tmp/$pkg"}" "${desc%%, BuildID*}" ;;
      *) bad "$pkg: ${f#"$tmp/$pkg"} is not aarch64: $desc" ;;
    esac
  done < <(find "$tmp/$pkg" -type f -print0)
  if [ "$arch" = arm64 ] && [ $nelf -eq 0 ]; then
    bad "$pkg: an arm64 package without an ELF file"
  fi
done

if [ $fail -ne 0 ]; then
  echo "==> arm64 test FAILED after $(($(date +%s) - start))s" >&2
  exit 1
fi
echo "==> arm64: ${summary} under qemu-aarch64-static in ${ttime:-?}"
echo "==> arm64 test passed in $(($(date +%s) - start))s"
