#!/usr/bin/env bash
# Installs what the build needs and is missing, from Debian's packages: a C++ compiler,
# CMake, Ninja, GoogleTest and nlohmann/json. The CUDA toolkit (nvcc, cuBLAS, cuDNN) is not
# installed here: with it the CUDA kernels build too; without it the CPU path builds alone.
set -euo pipefail

need=()
command -v g++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "setup: build dependencies present"
