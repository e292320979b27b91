"""The cluster's state folder (`.swarmsmith/<name>/` beside the cluster file): inventory.json
written atomically with mode 0600, under a lock so two runs cannot interleave.

The inventory holds hosts, addresses, roles, node IDs and pinned host keys: never a token,
password or secret (tests grep for them).
"""
from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import json
import os
import struct
import time
from contextlib import contextmanager

from inventory.errors import InputError, LockedError

INVENTORY = "inventory.json"


class StateDir:
    def __init__(self, cluster_file: str, name: str):
        self.path = os.path.join(os.path.dirname(os.path.abspath(cluster_file)), ".swarmsmith", name)

    def file(self, leaf: str) -> str:
        return os.path.join(self.path, leaf)

    def _ensure(self) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def load(self) -> dict:
        """The inventory, or an empty one when there is none. A damaged file is refused (exit 2)
        with what is wrong and how to recover, never guessed around: pinned host keys are in it."""
        path = self.file(INVENTORY)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {"hosts": {}}
        except OSError as e:
            raise InputError(f"cannot read: {e.strerror}", file=path)
        return parse_inventory(raw, path)

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


_RECOVER = ("restore it from a backup, or move it aside and run `swarmsmith up`, which "
            "records the hosts again and pins the host keys they show")
_HOST_FIELDS = {"role": str, "public_address": str, "private_address": (str, type(None)),
                "user": str, "node_id": str, "host_key": str, "labels": list, "port": int,
                "key": (str, type(None)), "advertise_address": (str, type(None)),
                "hostname": str}
_TOP_FIELDS = {"hosts": dict, "name": str, "provider": str, "cluster_id": str,
               "init_started_on": str, "provider_state": dict}


def parse_inventory(raw: bytes, path: str) -> dict:
    """Decode and type-check inventory.json; unknown keys pass (newer versions may add some)."""
    def bad(what: str, where: str | None = None):
        return InputError(f"{what}: the inventory is damaged; {_RECOVER}", file=path, path=where)

    if not raw.strip():
        raise bad("empty file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise bad(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}; "
                  "a truncated write looks like this)")
    if not isinstance(data, dict):
        raise bad(f"expected a JSON object, got {type(data).__name__}")
    for key, kind in _TOP_FIELDS.items():
        if key in data and not isinstance(data[key], kind):
            raise bad(f"expected {_kind(kind)}, got {type(data[key]).__name__}", key)
    for name, rec in data.setdefault("hosts", {}).items():
        where = f"hosts.{name}"
        if not isinstance(rec, dict):
            raise bad(f"expected an object, got {type(rec).__name__}", where)
        for key, kind in _HOST_FIELDS.items():
            if key in rec and (not isinstance(rec[key], kind) or isinstance(rec[key], bool)):
                raise bad(f"expected {_kind(kind)}, got {type(rec[key]).__name__}",
                          f"{where}.{key}")
        problem = host_key_problem(rec.get("host_key", ""))
        if problem:
            raise InputError(f"the pinned SSH host key {problem}. Delete this host_key entry "
                             "and run `swarmsmith up`: it pins the key the host shows now "
                             "(compare its fingerprint with the host's own first)",
                             file=path, path=f"{where}.host_key")
    return data


def host_key_problem(line: str) -> str:
    """Why "ssh-ed25519 AAAA..." is not a usable public key, or "" when it is (or is empty)."""
    if not line:
        return ""
    parts = line.split()
    if len(parts) < 2:
        return 'is not "TYPE BASE64"'
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "is not valid base64"
    # an SSH key blob starts with its own type name, length-prefixed
    if len(blob) < 4:
        return "is too short to be a key"
    (n,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + n] != parts[0].encode():
        return f"does not decode as a {parts[0][:40]} key"
    return ""


def _kind(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "a number", list: "a list", dict: "an object",
             type(None): "null"}
    return " or ".join(names[k] for k in kinds)
