"""Checkers: a check kind is a class with a unique name and an options model (see base.py);
the built-ins (builtin.py) register through the same hook as a third-party checker."""
