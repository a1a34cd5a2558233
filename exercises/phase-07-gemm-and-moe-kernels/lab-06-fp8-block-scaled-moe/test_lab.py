"""This lab's checks as pytest tests, graded by the grader itself (one source of truth):

    pytest <this folder>                      # grades solution.py
    LAB_IMPL=starter pytest <this folder>     # grades starter.py (or LAB_IMPL=path/to/file.py)
"""

from grader.testing import pytest_generate_tests, test_check  # noqa: F401
