"""LMS integrations: result formats (base.py, gradescope.py, prairielearn.py; registered by
builtin.py) and the container flow that grades an upload and writes the platform's file
(container.py)."""
