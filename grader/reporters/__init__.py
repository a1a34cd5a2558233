"""Reporters: one result rendered as a file or on the terminal (see base.py); the built-ins
(builtin.py) register through the same hook as a third-party reporter."""
