#!/usr/bin/env bash
# The main job from a fresh clone: set up, build, run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/apps/ddpm device
build/apps/ddpm demo
