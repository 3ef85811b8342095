#!/usr/bin/env bash
# Configures and builds into build/ (Release). Environment:
#   DDPM_CUDA_ARCHS   CUDA architectures to build (default: the CMake default, sm_80 + sm_90)
#   DDPM_BUILD_DIR    build folder (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${DDPM_BUILD_DIR:-build}"
args=(-S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release)
[ -n "${DDPM_CUDA_ARCHS:-}" ] && args+=("-DCMAKE_CUDA_ARCHITECTURES=${DDPM_CUDA_ARCHS}")
cmake "${args[@]}" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
