#!/usr/bin/env bash
# Installs what the build needs and is missing, from Debian's packages: a C++ compiler,
# CMake, Ninja, GoogleTest, nlohmann/json, zlib, oneDNN and OpenBLAS (the fast CPU kernels;
# the OpenMP build, so one thread pool serves them and our own loops), OpenMPI (mpirun for
# data-parallel runs, and its tests), and the data the main job trains on
# (dataset-fashion-mnist: Fashion-MNIST under /usr/share/datasets). The CUDA toolkit (nvcc,
# cuBLAS, cuDNN) is not installed here: with it the CUDA kernels build too; without it the
# CPU path builds alone.
set -euo pipefail

need=()
command -v g++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need+=(libgtest-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -f /usr/include/dnnl.hpp ] || need+=(libdnnl-dev)
[ -d /usr/include/x86_64-linux-gnu/openblas-openmp ] || need+=(libopenblas-openmp-dev)
command -v mpirun >/dev/null || need+=(openmpi-bin)
[ -f /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h ] || need+=(libopenmpi-dev)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "setup: build dependencies present"
