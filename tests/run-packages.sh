#!/usr/bin/env bash
# The Debian packages as a site installs them (issue 12): builds the amd64
# packages (deploy/package.sh, lintian), installs them into a clean Debian 12
# root made by mmdebstrap from Debian's mirror, checks the configuration,
# the web console, the units, an upgrade and a purge
# (tests/integration/packages.py says what exactly). Needs root; installs
# debhelper, lintian and mmdebstrap when missing (install-deps.sh
# --packaging). Usage: tests/run-packages.sh
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
if [ "$(id -u)" -ne 0 ]; then
  echo "run-packages.sh: needs root (chroot, dpkg in the test's root, apt-get)" >&2
  exit 1
fi
deploy/install-deps.sh --packaging
python3 tests/integration/packages.py
echo "==> packages test passed in $(( $(date +%s) - start ))s"
