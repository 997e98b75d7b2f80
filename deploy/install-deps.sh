#!/usr/bin/env bash
# Installs the Debian 12 packages carehub needs to build, test and run its
# demo. Installs only what is missing; needs root for that (apt-get).
#   deploy/install-deps.sh          build + run + test dependencies
#   deploy/install-deps.sh --tests  also what only the tests need (chromium
#                                   for the console's browser tests, clang
#                                   for libFuzzer, victoria-metrics for the
#                                   hub's InfluxDB-compatible store test)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libpaho-mqtt-dev libmodbus-dev libjansson-dev libfyaml-dev libmicrohttpd-dev libcrypt-dev
  libcurl4-openssl-dev libssl-dev zlib1g-dev libcmocka-dev
  mosquitto mosquitto-clients influxdb influxdb-client socat
  python3 python3-jsonschema python3-yaml curl openssl
)

if [ "${1:-}" = "--tests" ]; then
  PACKAGES+=(chromium libnss3-tools clang victoria-metrics)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "carehub: these Debian packages are missing: ${missing[*]}" >&2
  echo "carehub: installing them needs root. Run as root, or:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "carehub: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "carehub: packages installed" >&2
