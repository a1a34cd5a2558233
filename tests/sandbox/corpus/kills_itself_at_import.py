"""Kills its own process the moment its import starts: no answer, no traceback. Before the
worker waited for the grader's go-ahead, a busy machine let it vanish before the grader had
found it among its processes, and the grading ended not gradable (the grader's fault, retried in
every batch run). The worker now imports nothing of the student's until the grader has found it,
so this is the import's failure, graded: zero."""
# verdict: * error "killed by SIGKILL"
# max-score: 0
import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
