# Sourced by the GPU scripts (gpu_session.sh, lab02_gpu.sh, lab06_gpu.sh): the steps' deadline
# and summary helpers, and the setup every GPU call needs. The caller sets SUMMARY, STARTED and
# DEADLINE_S first.
#
# The device image has torch and triton but not pydantic or nbformat, and no bubblewrap: the call
# carries wheels in .whl/ and Debian's bubblewrap .deb in .device/ (docs/lab-05-gpu.md says how).

note() { printf '%s\n' "$@" >>"$SUMMARY"; }
left() { echo $((DEADLINE_S - ($(date +%s) - STARTED))); }
# run a step's command under what is left of the deadline; its output goes to $1 and the terminal
timed() {
  local log=$1; shift
  local budget; budget=$(left)
  if [ "$budget" -le 20 ]; then note "- not run, the deadline is near: $*"; return 124; fi
  timeout --kill-after=10 "$budget" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && note "- **stopped at the deadline** ($DEADLINE_S s): $*"
  [ "$rc" -eq 0 ] || note "- exit status $rc: $*; the end of its output:" '```' "$(tail -n 3 "$log")" '```'
  return "$rc"
}

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/grader-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/grader-site:$PWD
else
  export PYTHONPATH=$PWD
fi
if ! command -v bwrap >/dev/null && compgen -G ".device/bubblewrap_*.deb" >/dev/null; then
  dpkg -x .device/bubblewrap_*.deb /tmp/grader-bw && export PATH=/tmp/grader-bw/usr/bin:$PATH
fi
