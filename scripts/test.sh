#!/usr/bin/env bash
# All tests from a fresh clone: set up, build, run every test with ctest. CUDA tests skip,
# saying why, when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd "${DDPM_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)"
