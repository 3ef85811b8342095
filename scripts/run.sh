#!/usr/bin/env bash
# The main job from a fresh clone: set up, build, then train configs/tiny.json (a small
# U-Net) on the built-in synthetic images and write samples. Runs on the CPU when no GPU is
# present (a few minutes on 2 cores). Each run starts over in runs/tiny (--overwrite: the
# demo's folder is the demo's). Extra arguments go to `ddpm train`, e.g.
#   scripts/run.sh --set steps=1000
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/apps/ddpm device
build/apps/ddpm train --config configs/tiny.json --overwrite "$@"
