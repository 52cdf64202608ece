#!/usr/bin/env bash
# Entrypoint of the toolcall-kit image (docker/Dockerfile). The kit lives in /opt/toolcall-kit and its runs/
# is a link to $TOOLCALL_KIT_RUNS on the volume; a RunPod volume is mounted over /workspace when the pod
# starts, after the image was built, so the link's target is made here. Then Unsloth's own entrypoint runs
# its GPU checks and `exec "$@"`.
set -euo pipefail
mkdir -p "${TOOLCALL_KIT_RUNS:?}" "${HF_HOME:?}"
exec /usr/local/bin/unsloth-entrypoint "$@"
