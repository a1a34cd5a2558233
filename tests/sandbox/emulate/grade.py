"""Grade files officially, one JSON line per file on stdout: the driver that
``test_environments.py`` runs inside each emulated environment.

    python grade.py LAB_DIR FILE...

Uses the one grading path (``grader.session.Grader``) with ``official=True``, as ``grader
batch`` and the LMS containers do; the secret seed comes from ``GRADER_SECRET_SEED``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grader.manifest import load_manifest
from grader.plugins import default as default_plugins
from grader.session import Grader, GradingOptions


def main(argv: list[str]) -> int:
    lab, files = Path(argv[0]), [Path(f) for f in argv[1:]]
    grader = Grader(load_manifest(lab, default_plugins().checkers()), GradingOptions(official=True))
    for path in files:
        result = grader.grade(path)
        print(json.dumps({"file": path.name, "result": result.model_dump(mode="json")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
