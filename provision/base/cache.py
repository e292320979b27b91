"""A lock per cache folder, shared by every builder that writes there (lab host images, Debian
images): two builds of one cache never interleave."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager


@contextmanager
def cache_lock(cache: str):
    """One build at a time per cache folder (flock on the folder itself: nothing to leave
    behind); the kernel drops the lock when a killed build dies."""
    os.makedirs(cache, exist_ok=True)
    fd = os.open(cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
