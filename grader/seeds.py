"""Seeds: every input the grader makes comes from the public seed, an optional secret, and a key.

Official grading (LMS, batch) reads a secret from ``GRADER_SECRET_SEED``, or from the file that
``GRADER_SECRET_SEED_FILE`` names (mode 0600: a batch system stores and shows job scripts and
their environment, so a Slurm job gets the secret by file). The worker's environment is
cleared, so the submission never sees either, and outputs hard-coded for the public seeds fail.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib

import numpy as np

from grader.errors import UsageError

SECRET_ENV = "GRADER_SECRET_SEED"
SECRET_FILE_ENV = "GRADER_SECRET_SEED_FILE"
DEFAULT_SEED = 20261122


class Seeds:
    """The seed of one grading run."""

    def __init__(self, public: int = DEFAULT_SEED, secret: str | None = None) -> None:
        self.public = public
        self.official = bool(secret)
        self._secret = int.from_bytes(hashlib.sha256(secret.encode()).digest()[:8], "little") if secret else 0
        # A short, non-reversible fingerprint that caches may key on.
        self.key = f"{public}:{self._secret % 9973 if secret else 0}"

    @classmethod
    def from_env(cls, public: int | None = None) -> Seeds:
        return cls(DEFAULT_SEED if public is None else public, secret_from_env())

    def rng(self, *key: str | int) -> np.random.Generator:
        entropy = [self.public & 0xFFFFFFFF, self._secret & 0xFFFFFFFF, self._secret >> 32]
        for part in key:
            entropy.append(part & 0xFFFFFFFF if isinstance(part, int) else zlib.crc32(str(part).encode()))
        return np.random.default_rng(np.random.SeedSequence(entropy))


def secret_from_env() -> str | None:
    """``GRADER_SECRET_SEED``, else the content of the file ``GRADER_SECRET_SEED_FILE`` names, else None."""
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret
    path = os.environ.get(SECRET_FILE_ENV)
    return secret_from_file(path, f"{SECRET_FILE_ENV}={path}") if path else None


def secret_from_file(path: str, name: str) -> str:
    """The secret seed in the file ``path`` (``name`` says where it came from, in errors); refused
    unless it is a regular file only its owner may read (no group or other bits)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(f"{name}: cannot read the secret seed file ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UsageError(f"{name}: not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if mode & 0o077:
            raise UsageError(f"{name}: others may read it (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        text = fh.read(1 << 16).decode("utf-8", errors="replace").strip()
    if not text:
        raise UsageError(f"{name}: the secret seed file is empty")
    return text
