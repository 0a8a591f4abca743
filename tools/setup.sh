#!/usr/bin/env bash
# Installs what attnjit needs to build, from Debian packages, when it is missing.
# The CUDA toolkit (nvcc, NVRTC, headers) must already be installed, e.g. under /usr/local/cuda.
set -euo pipefail

packages=(cmake ninja-build g++ libfmt-dev libcli11-dev libgtest-dev libdlpack-dev libxxhash-dev libsqlite3-dev nlohmann-json3-dev clang-format llvm-16-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if ! command -v nvcc >/dev/null; then
  echo "setup: the CUDA toolkit (nvcc, NVRTC) was not found. Install CUDA 12 or 13 under /usr/local/cuda." >&2
  exit 1
fi
