#!/usr/bin/env bash
# Builds the fuzz targets with clang + libFuzzer and runs each for a while
# (default 60 s), growing its corpus in a scratch copy. A crash leaves its
# input in build-fuzz/; add it to tests/fuzz/corpus/<target>/ once fixed.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}; shift || true
targets=${*:-fuzz_payload fuzz_alert fuzz_modbus_reply fuzz_rtu_framer fuzz_config fuzz_spool fuzz_radar_frame fuzz_ble_omg fuzz_ble_minew fuzz_ble_ingics fuzz_ble_decode fuzz_tokens fuzz_hub_config fuzz_sim_config fuzz_profile fuzz_rulepack fuzz_mqtt_json fuzz_http_console fuzz_http_hub fuzz_api_params}
CC=clang cmake -S . -B build-fuzz -DCAREHUB_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $targets >/dev/null
for t in $targets; do
  corpus=tests/fuzz/corpus/${t#fuzz_}
  work=build-fuzz/corpus-$t
  mkdir -p "$work"
  cp -n "$corpus"/* "$work"/ 2>/dev/null || true
  echo "== $t for ${secs}s"
  (cd build-fuzz && ASAN_OPTIONS=detect_leaks=1 ./bin/$t -max_total_time="$secs" -max_len=8192 \
     "corpus-$t" 2>&1 | grep -E "^Done|ERROR|SUMMARY|crash-|leak-" || true)
done
