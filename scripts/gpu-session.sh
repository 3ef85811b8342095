#!/usr/bin/env bash
# One call of a GPU session's device tool (/work/.library/device/README.md): run
# scripts/gpu-check.sh's stages within the call's time, then pack what they wrote into $OUT,
# the one folder the tool brings back (at most 8 files of 16 MiB: one tarball, the report
# beside it). A GPU session prepares deps/ first (scripts/prepare-gpu-deps.sh, on the machine
# with package access) and names it in the call's `carry`.
#
#   scripts/gpu-session.sh SECONDS STAGE...      e.g. scripts/gpu-session.sh 560 build test
#                                                bench train report
#
# SECONDS: what the call may take (its timeout_s, less a minute for the transfers); each
# stage then runs under what is left (gpu-check's DDPM_GPU_SECONDS, which also keeps 30 s for
# the report). Outputs accumulate in /tmp/gc (DDPM_GPU_SESSION_DIR) and the build in
# build-gpu/ across the calls of one warm machine, so a later call may run only `sanitize
# profile report`. The training runs' checkpoints and sample grids stay behind (their size);
# the sample stage's grids come back.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/gpu-session.sh SECONDS STAGE...}
shift
refuse() { echo "gpu-session: $*" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+$ ]] || refuse "SECONDS must be a whole number, got '$seconds'"
[ $# -gt 0 ] || refuse "name the stages (scripts/gpu-check.sh lists them)"
dest=${OUT:?gpu-session: OUT is not set (the folder the device tool brings back)}
work=${DDPM_GPU_SESSION_DIR:-/tmp/gc}
mkdir -p "$work"
# the packing below needs its own seconds: keep 20 of the call's
DDPM_GPU_SECONDS=$((seconds > 40 ? seconds - 20 : seconds)) scripts/gpu-check.sh "$work" "$@"
status=$?
tar -czf "$dest/gc.tgz" -C "$work" --exclude='*.safetensors' --exclude='train-run-*/samples*' .
[ -f "$work/report.md" ] && cp "$work/report.md" "$dest/report.md"
ls -l "$dest"
exit $status
