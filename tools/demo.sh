#!/usr/bin/env bash
# The main job on built-in defaults: build attnjit, then run `attnjit demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
build/attnjit demo
