#!/usr/bin/env bash
# Run on a machine WITH package access (this dev machine, after scripts/setup.sh): copies
# what the build needs from Debian's packages into deps/ (git-ignored), so that a GPU machine
# with nvcc, CMake, ninja and PyTorch but no registry can build: GoogleTest sources, the
# nlohmann/json headers, and zlib's headers with its static library (used there only if the
# machine has no zlib headers of its own: cmake/dependencies.cmake). Carry deps/ to the GPU
# machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f /usr/src/googletest/CMakeLists.txt ] || { echo "prepare-gpu-deps: /usr/src/googletest missing (apt-get install googletest)"; exit 1; }
rm -rf deps
mkdir -p deps/json/include
cp -r /usr/src/googletest deps/googletest
cp -r /usr/include/nlohmann deps/json/include/
zlib_a=$(dpkg -L zlib1g-dev | grep '/libz\.a$')
mkdir -p deps/zlib/include deps/zlib/lib
cp /usr/include/zlib.h /usr/include/zconf.h deps/zlib/include/
cp "$zlib_a" deps/zlib/lib/
du -sh deps
echo "prepare-gpu-deps: deps/ ready (googletest sources, nlohmann/json headers, zlib)"
