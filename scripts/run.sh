#!/usr/bin/env bash
# The main job from a fresh clone: set up (which installs Debian's dataset-fashion-mnist),
# build, then train configs/fashion.json (a 1.1M-parameter U-Net) on Fashion-MNIST and write
# samples, bits/dim and the HTML report to runs/fashion. Runs on the GPU when there is one,
# otherwise on the CPU's fast kernels (4 to 11 minutes on 2 cores). Each run starts over in
# runs/fashion (--overwrite: the demo's folder is the demo's). Extra arguments go to
# `ddpm train`, e.g.
#   scripts/run.sh --set steps=5000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/apps/ddpm device
build/apps/ddpm train --config configs/fashion.json --overwrite "$@"
