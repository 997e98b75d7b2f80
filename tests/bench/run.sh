#!/usr/bin/env bash
# Runs every benchmark against the build in build/ and prints the figures
# that the README reports. Takes about 35 minutes (the simulated care-home
# day alone 24).
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
export CAREHUB_BIN=$PWD/build/bin CAREHUB_SRC=$PWD
echo "== Modbus request coalescing"
build/bin/bench_coalesce deploy/profiles/*.yaml
echo "== spool"
build/bin/bench_spool
echo "== care-edge with 100 devices"
python3 tests/bench/bench_edge.py
echo "== Wi-Fi beds pushing: every message kept, CPU per reading (CAREHUB_BEFORE=<bin/ of an older build> adds it)"
python3 tests/bench/bench_wifi_bed.py ${CAREHUB_BEFORE:+--before "$CAREHUB_BEFORE"}
echo "== care-hub into InfluxDB, against curl"
python3 tests/bench/bench_hub.py
echo "== care-hub scaled out: one hub, two on a shared subscription, curl"
python3 tests/bench/bench_hub_scale.py
echo "== care-hub API on a month of one 120-resident site; sites per hub"; python3 tests/bench/bench_api.py
echo "== care rules: evaluation throughput"
build/bin/bench_rules "$PWD"
echo "== alarm latency: reading -> console, local broker, InfluxDB"
python3 tests/bench/bench_alarm.py
echo "== delivered means stored: ack traffic, delay, cost (CAREHUB_BEFORE=<bin/ of an older build> adds it)"
python3 tests/bench/bench_delivery.py ${CAREHUB_BEFORE:+--before "$CAREHUB_BEFORE"}
echo "== ingest isolation: another site's alarms while one gateway floods (CAREHUB_BEFORE adds the older build)"
python3 tests/bench/bench_isolation.py ${CAREHUB_BEFORE:+--before "$CAREHUB_BEFORE"}
echo "== InfluxDB for years: the disk a 120-resident site costs with retention and the hourly history"
python3 tests/bench/bench_retention.py
echo "== alarms to people: SOS -> phone webhook and sounder relay, WAN up and down"
python3 tests/bench/bench_notify.py
echo "== alarms per hour on a simulated care-home day against ISA-18.2 (the day at x60: 24 minutes)"
python3 tests/bench/bench_alarm_rate.py
