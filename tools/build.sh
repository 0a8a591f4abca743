#!/usr/bin/env bash
# Configures and builds attnjit into build/ (or $ATTNJIT_BUILD_DIR) after installing what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
build=${ATTNJIT_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
