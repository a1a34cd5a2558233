"""Leaves with os._exit(0) as its import starts, skipping every handler: the import's failure
(the worker is found and marked before anything of the student's runs), never "not gradable"."""
# verdict: * error "exited with status 0 while being imported"
# max-score: 0
import os

os._exit(0)
