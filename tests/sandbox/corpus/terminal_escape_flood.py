"""Floods its output with terminal escapes, carriage returns, bell characters, a megabyte
line and invalid UTF-8: the grader keeps a short, sanitised tail."""
# verdict: * error "defines no function"
# max-score: 0
import os
import sys

sys.stdout.write("\x1b[2J\x1b[H\x1b]0;pwned\x07" + "\r" * 100 + "\x1b[31mFAKE PASS\x1b[0m\n")
sys.stdout.write("A" * (1 << 20) + "\n")
sys.stdout.flush()
os.write(1, b"\xff\xfe\xfd invalid utf-8 \x1b[5m blink\n")
