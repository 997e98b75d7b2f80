#!/usr/bin/env bash
# Builds carehub with warnings as errors and runs every test (unit and
# integration, through ctest), then does the same with the address and
# undefined-behaviour sanitizers, and runs every fuzz target for a bounded
# number of libFuzzer iterations. Installs missing Debian packages first
# (as root). Usage: tests/run.sh [--no-sanitize]
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=1
[ "${1:-}" = "--no-sanitize" ] && sanitize=0

deploy/install-deps.sh --tests

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  echo "==> configure $dir ($*)"
  cmake -S . -B "$dir" -DCAREHUB_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  echo "==> build $dir"
  cmake --build "$dir" -j"$jobs"
  echo "==> test $dir"
  ctest --test-dir "$dir" --output-on-failure --timeout 300 -j2
}

start=$(date +%s)
echo "==> clang-format"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run -Werror
run_suite build
if [ $sanitize -eq 1 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
  run_suite build-asan -DCAREHUB_SANITIZE=ON
  # every fuzz target under libFuzzer (with ASan+UBSan), a bounded number of
  # runs from its corpus: the corpora replay in ctest, this mutates them; an
  # input that takes over 10 s is a hang, and fails the run. 20000 runs or
  # 20 s, whichever comes first: a file loader's run costs a millisecond or
  # more (fuzz_rulepack loads a site, its profiles and the pack; fuzz_spool
  # recovers a spool), so the cap keeps 17 targets near the time 11 took
  # with runs alone (~1.5 min); the two HTTP servers' (a connection per
  # run, a few hundred a second) stop at 20 s each
  echo "==> fuzz targets, 20000 runs or 20 s each"
  targets=$(sed -n 's/^targets=\${\*:-\(.*\)}$/\1/p' tests/fuzz/run.sh)
  CC=clang cmake -S . -B build-fuzz -DCAREHUB_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  # shellcheck disable=SC2086
  cmake --build build-fuzz -j"$jobs" --target $targets >/dev/null
  for t in $targets; do
    work=$(mktemp -d)
    cp tests/fuzz/corpus/"${t#fuzz_}"/* "$work"/
    if ! build-fuzz/bin/"$t" -runs=20000 -max_total_time=20 -max_len=8192 -timeout=10 \
        "$work" >"$work.log" 2>&1; then
      tail -40 "$work.log"
      echo "==> $t failed" >&2
      exit 1
    fi
    echo "    $t: $(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$work.log" || echo done)"
    rm -rf "$work" "$work.log"
  done
fi
echo "==> all tests passed in $(( $(date +%s) - start ))s"
