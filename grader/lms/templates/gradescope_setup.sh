#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu; apt-get update
# has already run). Written by `grader lms gradescope build`.
#
# Everything is pinned to what the course tested with: the Python minor version, the CPU build of
# torch, and every other distribution (constraints.txt). Nothing falls back to an unpinned
# version: a step that cannot install says which and why, and fails the image build, so no
# student's upload ever meets a half-installed grader.
set -euo pipefail
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${AUTOGRADER_ROOT:-/autograder}"
# shellcheck source=/dev/null
. "$SOURCE/grader.env"
PYTHON="python${GRADER_PYTHON_VERSION}"
CPU_INDEX=https://download.pytorch.org/whl/cpu

fail() {  # $1: what could not be done
  echo "setup.sh: FAILED: $1" >&2
  exit 1
}

export DEBIAN_FRONTEND=noninteractive
apt-get install -y bubblewrap "$PYTHON" "$PYTHON-venv" \
  || fail "apt-get could not install bubblewrap, $PYTHON and $PYTHON-venv (see apt's message above; the zip was built and tested with Python $GRADER_PYTHON_VERSION)"
"$PYTHON" -m venv "$ROOT/grader-venv" || fail "$PYTHON could not make a virtual environment in $ROOT/grader-venv"
PIP=("$ROOT/grader-venv/bin/pip" --disable-pip-version-check)
# The CPU build of torch: no CUDA wheels (several GB) in an image that has no GPU.
"${PIP[@]}" install --index-url "$CPU_INDEX" "$GRADER_TORCH" \
  || fail "pip could not install $GRADER_TORCH from $CPU_INDEX (see pip's message above: no wheel for Python $GRADER_PYTHON_VERSION, or no network)"
PACKAGE="$SOURCE/package"
[ -n "${GRADER_EXTRAS:-}" ] && PACKAGE="$SOURCE/package[$GRADER_EXTRAS]"
"${PIP[@]}" install --constraint "$SOURCE/constraints.txt" "$PACKAGE" \
  || fail "pip could not install the grader with the pinned versions in constraints.txt (see pip's message above)"
# Prove the install now, at build time, rather than on the first student's upload.
GRADER_EXERCISES="$SOURCE/exercises" "$ROOT/grader-venv/bin/grader" validate || fail "grader validate rejected the bundled lab"
