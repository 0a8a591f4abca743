#!/usr/bin/env bash
# Builds and runs every test: formatting, the CPU suite (GPU tests skip with a message where
# there is no GPU), then the CPU suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh

echo "== formatting (clang-format --dry-run)"
git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror

echo "== build and test"
tools/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"

echo "== build and test under ASan + UBSan (CPU tests; the install test builds an uninstrumented consumer)"
cmake -S . -B build-asan -G Ninja -DATTNJIT_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DATTNJIT_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-asan -j "$(nproc)" --target attnjit_tests attnjit_cli
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" -L cpu -E '^Install\.'
echo "== all tests passed"
