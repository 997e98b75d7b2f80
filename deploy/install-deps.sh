#!/usr/bin/env bash
# Installs the Debian 12 packages carehub needs, by the role of the machine.
# Installs only what is missing; needs root for that (apt-get). Roles add up
# (--gateway --hub: both).
#   deploy/install-deps.sh            same as --dev
#   deploy/install-deps.sh --dev      build + run + test dependencies, the
#                                     demo's Mosquitto and InfluxDB
#   deploy/install-deps.sh --tests    --dev, and what only the tests need
#                                     (chromium and a Chinese font,
#                                     fonts-wqy-microhei, for the consoles' browser
#                                     tests, clang for libFuzzer,
#                                     victoria-metrics for the hub's
#                                     InfluxDB-compatible store test)
#   deploy/install-deps.sh --gateway  what care-edge (and care-sim) built
#                                     from source need to run: shared
#                                     libraries, no compiler, no servers
#   deploy/install-deps.sh --hub      what care-hub built from source needs to
#                                     run, with Mosquitto and InfluxDB servers
#   deploy/install-deps.sh --packaging  what deploy/package.sh and
#                                     tests/run-packages.sh need beside the
#                                     Build-Depends (debhelper, lintian,
#                                     mmdebstrap)
# The Debian packages (deploy/package.sh) need none of this on a site:
# apt installs their dependencies.
set -euo pipefail

# shared libraries of the programs (Depends of the packages)
GATEWAY=(
  libpaho-mqtt1.3 libmodbus5 libjansson4 libfyaml0 libmicrohttpd12 libcrypt1 zlib1g libsystemd0
  libcurl4 libssl3 ca-certificates procps
)
HUB=(
  libpaho-mqtt1.3 libjansson4 libfyaml0 libmicrohttpd12 libcurl4 libssl3 libcrypt1 zlib1g
  libsystemd0 ca-certificates procps mosquitto mosquitto-clients influxdb influxdb-client
)
DEV=(
  build-essential cmake pkg-config
  libpaho-mqtt-dev libmodbus-dev libjansson-dev libfyaml-dev libmicrohttpd-dev libcrypt-dev
  libcurl4-openssl-dev libssl-dev zlib1g-dev libsystemd-dev libcmocka-dev
  mosquitto mosquitto-clients influxdb influxdb-client socat
  python3 python3-jsonschema python3-yaml curl openssl
)
TESTS=(chromium fonts-wqy-microhei libnss3-tools clang victoria-metrics)
PACKAGING=(dpkg-dev debhelper lintian mmdebstrap systemd-container python3)

PACKAGES=()
[ $# -eq 0 ] && set -- --dev
for role in "$@"; do
  case "$role" in
    --dev) PACKAGES+=("${DEV[@]}") ;;
    --tests) PACKAGES+=("${DEV[@]}" "${TESTS[@]}") ;;
    --gateway) PACKAGES+=("${GATEWAY[@]}") ;;
    --hub) PACKAGES+=("${HUB[@]}") ;;
    --packaging) PACKAGES+=("${PACKAGING[@]}") ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps.sh: unknown role $role (--dev, --tests, --gateway, --hub, --packaging)" >&2
       exit 2 ;;
  esac
done

# installed for this machine's architecture (another's, e.g. libssl-dev:arm64
# for deploy/package.sh --arch arm64, does not count)
NATIVE=$(dpkg --print-architecture)
missing=()
for p in $(printf '%s\n' "${PACKAGES[@]}" | sort -u); do
  if ! dpkg-query -W -f='${Status} ${Architecture}\n' "$p" 2>/dev/null |
      grep -Eq "^install ok installed ($NATIVE|all)\$"; then
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
# another apt (a build, a second test run) may hold the lock: wait for it
lock=(-o DPkg::Lock::Timeout=600)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "carehub: packages installed" >&2
