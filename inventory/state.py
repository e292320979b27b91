"""The cluster's state folder (`.swarmsmith/<name>/` beside the cluster file): inventory.json
written atomically with mode 0600, under a lock so two runs cannot interleave.

The inventory holds hosts, addresses, roles, node IDs and pinned host keys: never a token,
password or secret (tests grep for them).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager

from provision.errors import LockedError

INVENTORY = "inventory.json"


class StateDir:
    def __init__(self, cluster_file: str, name: str):
        self.path = os.path.join(os.path.dirname(os.path.abspath(cluster_file)), ".swarmsmith", name)

    def file(self, leaf: str) -> str:
        return os.path.join(self.path, leaf)

    def _ensure(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def load(self) -> dict:
        try:
            with open(self.file(INVENTORY)) as f:
                return json.load(f)
        except FileNotFoundError:
            return {"hosts": {}}

    def save(self, inventory: dict) -> None:
        self._ensure()
        final = self.file(INVENTORY)
        tmp = final + f".tmp{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(inventory, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    @contextmanager
    def lock(self, wait: float = 0.0, clock=time.monotonic, sleep=time.sleep):
        """Exclusive lock for one run; released on exit even when the run fails."""
        self._ensure()
        fd = os.open(self.file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = clock() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if clock() >= deadline:
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                        raise LockedError(f"another swarmsmith run holds the lock on {self.path}"
                                          + (f" ({holder})" if holder else ""))
                    sleep(0.2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode(), 0)
            yield
        finally:
            os.close(fd)
