"""LMS platforms, each one plugin: ``base.py`` (what a platform is: :class:`LmsFormat`),
``container.py`` (a platform's grading container: folders and timeout), one file per built-in
platform (``gradescope.py``, ``prairielearn.py``), registered by ``builtin.py``."""
