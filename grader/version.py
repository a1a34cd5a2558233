"""The grader's version (also pyproject.toml's): a leaf, so every layer may name it."""

__version__ = "0.1.0"
