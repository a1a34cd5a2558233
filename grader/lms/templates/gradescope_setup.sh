#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu; apt-get update
# has already run). Written by `grader lms gradescope build`.
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${AUTOGRADER_ROOT:-/autograder}"
# shellcheck source=/dev/null
. "$SOURCE/grader.env"

export DEBIAN_FRONTEND=noninteractive
apt-get install -y bubblewrap python3 python3-venv
python3 -m venv "$ROOT/grader-venv"
"$ROOT/grader-venv/bin/pip" install --upgrade pip
# The CPU build of torch: no CUDA wheels (several GB) in an image that has no GPU. If the pinned
# version has no wheel for this image's Python, take the newest CPU build that has one (logged).
CPU_INDEX=https://download.pytorch.org/whl/cpu
if ! "$ROOT/grader-venv/bin/pip" install --index-url "$CPU_INDEX" "$GRADER_TORCH"; then
  echo "setup.sh: no CPU wheel of $GRADER_TORCH for $(python3 --version); installing the newest CPU torch instead" >&2
  "$ROOT/grader-venv/bin/pip" install --index-url "$CPU_INDEX" torch
fi
"$ROOT/grader-venv/bin/pip" install "$SOURCE/package"
# Prove the install now, at build time, rather than on the first student's upload.
GRADER_EXERCISES="$SOURCE/exercises" "$ROOT/grader-venv/bin/grader" validate
