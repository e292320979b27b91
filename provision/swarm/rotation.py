"""Rotation of the swarm's credentials: join tokens, the root CA, autolock and its unlock key.

Tokens and the unlock key are secrets: functions here never return a token; the unlock key is
returned only by `read_unlock_key` / `rotate_unlock_key`, for the command that shows it on request.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..base.errors import EXIT_OK, EXIT_TIMED_OUT, InputError, SwarmsmithError
from ..base.progress import ProgressCallback, lines_to
from .quorum import node_name



@dataclass
class RotationResult:
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)     # nodes not yet on the new CA
    exit_code: int = EXIT_OK
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"changes": self.changes, "notes": self.notes, "pending": self.pending,
                "exit_code": self.exit_code, "seconds": round(self.seconds, 2)}


def rotate_tokens(api, *, worker: bool, manager: bool) -> RotationResult:
    """New join tokens; the old ones stop working at once (nodes already joined are unaffected)."""
    if not (worker or manager):
        raise InputError("tokens rotate: nothing to rotate")
    res = RotationResult()
    if manager and api.pin_secret_naming_key():
        # versioned secret names are keyed from the manager token: keep today's key, so the
        # next deploy renames no secret and restarts no service
        res.changes.append("key of versioned secret names pinned (config "
                           "swarmsmith-secret-names-key): secret names stay as they are")
    api.update_swarm(rotate_worker_token=worker, rotate_manager_token=manager,
                     what="rotate join tokens")
    for role, on in (("worker", worker), ("manager", manager)):
        if on:
            res.changes.append(f"{role} join token rotated (the old one no longer joins)")
    res.notes.append("tokens are fetched just in time by `swarmsmith up`; nothing to update")
    return res


def rotate_ca(api, *, timeout: float = 300.0, on_progress: ProgressCallback | None = None,
              clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> RotationResult:
    """A new root CA (swarm-generated) and new node certificates: forces a root rotation and
    waits until swarm reports it finished and every node's TLS trust root is the new one."""
    say = lines_to(on_progress)
    sw = api.swarm()
    spec = sw["Spec"]
    ca = dict(spec.get("CAConfig") or {})
    ca["ForceRotate"] = int(ca.get("ForceRotate") or 0) + 1
    old_root = (sw.get("TLSInfo") or {}).get("TrustRoot", "")
    api.update_swarm(spec={**spec, "CAConfig": ca}, what="rotate the root CA")
    res = RotationResult(changes=["root CA rotation started"])
    start = clock()
    last = None
    while True:
        sw = api.swarm()
        root = (sw.get("TLSInfo") or {}).get("TrustRoot", "")
        nodes = api.nodes()
        behind = sorted(node_name(n) for n in nodes
                        if ((n.get("Description") or {}).get("TLSInfo") or {}).get("TrustRoot") != root)
        in_progress = bool(sw.get("RootRotationInProgress"))
        # counted against the old root: until swarm switches to the new one, every node trusts
        # the swarm's (old) root, which is no progress
        on_new = sum(1 for n in nodes if ((n.get("Description") or {}).get("TLSInfo") or {})
                     .get("TrustRoot", old_root) != old_root)
        phase = _ca_phase(in_progress, root != old_root, len(behind))
        state = (phase, on_new)
        if state != last:
            say(f"CA rotation: {on_new}/{len(nodes)} nodes on the new root ({phase})")
            last = state
        if not in_progress and not behind and root != old_root:
            res.changes.append(f"every node ({len(nodes)}) trusts the new root CA")
            break
        if clock() - start >= timeout:
            res.pending = behind
            res.exit_code = EXIT_TIMED_OUT
            down = sorted(node_name(n) for n in nodes
                          if (n.get("Status") or {}).get("State") != "ready")
            res.notes.append(f"not finished after {timeout:g} s; nodes still on the old root: "
                             f"{', '.join(behind) or 'none'}" +
                             (f" (down: {', '.join(down)}: bring them back or remove them)"
                              if down else ""))
            break
        sleep(1.0)
    res.seconds = clock() - start
    return res


def _ca_phase(in_progress: bool, switched: bool, behind: int) -> str:
    """What a root rotation waits for, in the order swarm goes through it."""
    if not switched and not in_progress:
        return "waiting for swarm to start the rotation"
    if in_progress:
        return "swarm is issuing node certificates signed by the new root"
    if behind:
        return "swarm trusts the new root; waiting for nodes to report it"
    return "done"


def set_autolock(api, on: bool) -> RotationResult:
    sw = api.swarm()
    spec = sw["Spec"]
    enc = dict(spec.get("EncryptionConfig") or {})
    res = RotationResult()
    if bool(enc.get("AutoLockManagers")) == on:
        return res
    enc["AutoLockManagers"] = on
    api.update_swarm(spec={**spec, "EncryptionConfig": enc},
                     what=f"turn autolock {'on' if on else 'off'}")
    res.changes.append(f"autolock {'on' if on else 'off'}")
    if on:
        res.notes.append("a restarted manager now stays locked until `swarmsmith unlock-swarm`; get "
                         "the key once with `swarmsmith unlock-key` and keep it in a password "
                         "manager (swarmsmith never stores it)")
    return res


def read_unlock_key(api) -> str:
    key = api.unlock_key()
    if not key:
        raise SwarmsmithError("autolock is off: there is no unlock key (`swarmsmith autolock on`)")
    return key


def rotate_unlock_key(api) -> str:
    read_unlock_key(api)          # refuses when autolock is off
    api.update_swarm(rotate_unlock_key=True, what="rotate the unlock key")
    return read_unlock_key(api)
