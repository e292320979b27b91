"""Locks kept in the swarm itself: one per stack, for `redeploy` from cron and CI, and one for
the whole cluster held by every command that stops or re-forms managers (backup, restore,
recover, engine upgrade, node demote/rm; see MANAGERS_LOCK), so two of them never take two
managers down at once.

The lock is a swarm config named `swarmsmith-lock-<stack>`.  Creating it is
atomic (the managers' raft store refuses a second config of the same name:
HTTP 409), so whoever creates it holds the lock.  Its labels say who holds it,
since when and for how long (TTL, seconds).  A lock older than its TTL is stale
(a killed run): it is broken by removing *that config by id* and creating a
new one; two runs breaking the same stale lock cannot both win, since only one
create succeeds and a removal by id never touches the new lock.

The labels also record the holder's host name, that host's boot id and the
pid. A lock whose holder ran on this host and is gone (the pid no longer
exists, or the boot id changed: a reboot) is broken at once, with a line saying
so, instead of blocking everyone until the TTL. `swarmsmith unlock STACK`
(`swarmsmith unlock --managers` for the managers lock) shows the holder and
removes the lock (a live process on this host only with --force).

Ages use the acquirer's wall clock written into the labels; hosts running
swarmsmith are assumed to keep time with NTP (skew small next to the TTL).
A lock acquired in the future by this machine's clock is shown as such (the
clocks differ), never with a negative age. Pick a TTL longer than the longest
run (watch timeout plus margin): configs cannot be refreshed in place.

A lock whose time labels cannot be read (missing, not a number, not finite,
further in the future than its TTL) never expires by itself: it is shown as
unreadable, deploys refuse it with exit 4 saying how to clear it, and
`swarmsmith unlock` removes it (unless its holder is a live process here:
--force).
"""
from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ..base.errors import LockedError, SwarmsmithError
from ..engine_api.adapter import as_engine, is_conflict, is_not_found

PREFIX = "swarmsmith-lock-"
# not a PREFIX name, so no stack's lock can be this one
MANAGERS_LOCK = "swarmsmith-managers-lock"
MANAGERS_WHAT = "the cluster's managers"
MANAGERS_UNLOCK = "swarmsmith unlock --managers"
L_STACK = "com.swarmsmith.lock.stack"
L_OWNER = "com.swarmsmith.lock.owner"
L_ACQUIRED = "com.swarmsmith.lock.acquired"
L_TTL = "com.swarmsmith.lock.ttl"
L_HOST = "com.swarmsmith.lock.host"
L_BOOT = "com.swarmsmith.lock.boot-id"
L_PID = "com.swarmsmith.lock.pid"
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_MAX_NAME = 64


def lock_name(stack: str) -> str:
    name = PREFIX + stack
    if len(name) > _MAX_NAME:
        name = PREFIX + hashlib.sha256(stack.encode()).hexdigest()[:16]
    return name


def default_owner() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class Holder:
    """Who runs swarmsmith: the host (its name and this boot of it) and the process."""
    host: str
    boot_id: str
    pid: int

    @classmethod
    def this_process(cls) -> "Holder":
        try:
            with open(BOOT_ID_FILE) as f:
                boot = f.read().strip()
        except OSError:
            boot = ""
        return cls(socket.gethostname(), boot, os.getpid())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process: alive
        return True
    return True


def _iso(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):     # nan, inf, beyond year 9999
        return "an unreadable time"


def _seconds(labels: dict, key: str) -> tuple[float, str]:
    """(value, "") of a time label, or (0, what is wrong with it)."""
    raw = labels.get(key)
    short = key.rsplit(".", 1)[-1]
    if raw is None:
        return 0.0, f"{short} missing"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        return 0.0, f"{short}={str(raw)[:40]}"
    return value, ""


def _holder(labels: dict) -> Holder | None:
    try:
        pid = int(labels.get(L_PID, ""))
    except ValueError:
        return None
    return Holder(labels.get(L_HOST, ""), labels.get(L_BOOT, ""), pid)


@dataclass
class LockInfo:
    id: str
    name: str
    owner: str
    acquired: float
    ttl: float
    holder: Holder | None = None    # None: a lock written before holders were recorded
    unreadable: str = ""            # what is wrong with its time labels ("acquired=nan")

    def local_state(self, me: Holder, alive: Callable[[int], bool]) -> str:
        """"dead" (its host is this one and the process is gone, or the host rebooted since),
        "alive" (a live process here), "elsewhere" (another host: cannot tell)."""
        h = self.holder
        if h is None or not h.host or h.host != me.host or not h.boot_id or not me.boot_id:
            return "elsewhere"
        if h.boot_id != me.boot_id or not alive(h.pid):
            return "dead"
        return "alive"

    def age(self, now: float) -> float:
        return now - self.acquired

    def stale(self, now: float) -> bool:
        return not self.unreadable and self.age(now) > self.ttl

    def future(self, now: float) -> bool:
        """Acquired later than now by this machine's clock (the two clocks differ)."""
        return not self.unreadable and self.acquired > now + 1

    def describe(self, now: float) -> str:
        if self.unreadable:
            return (f"held by {self.owner}, with unreadable labels ({self.unreadable}): its "
                    "age is unknown and it never expires by itself")
        left = self.ttl - self.age(now)
        if self.future(now):
            return (f"held by {self.owner} since {_iso(self.acquired)}, "
                    f"{self.acquired - now:.0f} s in the future by this machine's clock (the "
                    f"clocks differ; check NTP); expires {self.ttl:.0f} s after that")
        return (f"held by {self.owner} since {_iso(self.acquired)} "
                f"({self.age(now):.0f} s ago, expires in {max(0, left):.0f} s)")


class SwarmLock:
    """with SwarmLock(engine, "web", ttl=1800, wait=120): ...   (engine: provision.engine_api.adapter's
    EngineAPI, or a client it wraps)

    wait: seconds to wait for a held lock before LockedError (exit 4); 0 = fail at once.
    """

    def __init__(self, api, stack: str, *, ttl: float = 1800.0, wait: float = 0.0,
                 poll: float = 2.0, owner: str | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 me: Holder | None = None, alive: Callable[[int], bool] = pid_alive,
                 notify: Callable[[str], None] | None = None, name: str | None = None,
                 what: str | None = None, unlock_hint: str | None = None):
        self.api, self.stack = as_engine(api), stack
        self.name = name or lock_name(stack)
        self.what = what or f"stack {stack}"
        self.unlock_hint = unlock_hint or f"swarmsmith unlock {stack}"
        self.ttl, self.wait, self.poll = float(ttl), float(wait), float(poll)
        self.owner = owner or default_owner()
        self.clock, self.sleep = clock, sleep
        self.id: str | None = None
        self.broke: list[LockInfo] = []  # stale locks this run removed
        self.me = me or Holder.this_process()
        self.alive = alive
        self.notify = notify or (lambda line: None)

    def holder(self) -> LockInfo | None:
        for c in self.api.configs({"name": [self.name]}):
            spec = c.get("Spec") or {}
            if spec.get("Name") != self.name:  # the name filter matches prefixes
                continue
            labels = spec.get("Labels") or {}
            acquired, bad_acquired = _seconds(labels, L_ACQUIRED)
            ttl, bad_ttl = _seconds(labels, L_TTL)
            unreadable = ", ".join(b for b in (bad_acquired, bad_ttl) if b)
            if not unreadable and acquired - self.clock() > ttl:
                # it would block for longer than any run may hold a lock
                unreadable = f"acquired {_iso(acquired)}, further ahead than its TTL"
            return LockInfo(c["ID"], self.name, labels.get(L_OWNER, "?"), acquired, ttl,
                            _holder(labels), unreadable)
        return None

    def _create(self) -> str:
        now = self.clock()
        labels = {L_STACK: self.stack, L_OWNER: self.owner,
                  L_ACQUIRED: f"{now:.3f}", L_TTL: f"{self.ttl:.0f}",
                  L_HOST: self.me.host, L_BOOT: self.me.boot_id, L_PID: str(self.me.pid)}
        body = json.dumps({"stack": self.stack, "owner": self.owner,
                           "acquired": _iso(now), "ttl": self.ttl}, sort_keys=True)
        return self.api.add_config(self.name, body.encode(), labels)

    def acquire(self) -> "SwarmLock":
        if self.id:
            return self
        deadline = self.clock() + self.wait
        vanished = 0
        waiting_for = None
        while True:
            try:
                self.id = self._create()
                return self
            except Exception as exc:
                if not is_conflict(exc):
                    raise SwarmsmithError(f"cannot create lock {self.name}: {exc}") from exc
            info = self.holder()
            now = self.clock()
            if info is None:  # released between our create and our look: try again
                vanished += 1
                if vanished > 5:
                    raise SwarmsmithError(f"lock {self.name} conflicts but cannot be found")
                continue
            if info.stale(now):
                self._break(info)
                self.notify(f"{self.what}: broke a stale lock ({info.describe(now)})")
                continue
            if info.local_state(self.me, self.alive) == "dead":
                # its holder was a process on this host that is gone (killed, or the host
                # rebooted): nobody will release it, and waiting for the TTL helps no one
                self._break(info)
                self.notify(f"{self.what}: broke the lock of a run that is gone "
                            f"({info.owner}, pid {info.holder.pid} on this host, "
                            f"since {_iso(info.acquired)})")
                continue
            if now >= deadline:
                if info.unreadable:
                    raise LockedError(f"{self.what} is locked: {info.describe(now)}. "
                                      f"{self.unlock_hint} removes it"
                                      + (" (--force when its holder still runs on this host)"
                                         if self.unlock_hint.startswith("swarmsmith unlock")
                                         else ""))
                raise LockedError(f"{self.what} is locked: {info.describe(now)}. If that "
                                  f"run is gone: {self.unlock_hint}")
            if waiting_for != info.id:
                waiting_for = info.id
                self.notify(f"{self.what}: waiting for the lock ({info.describe(now)})")
            self.sleep(max(0.0, min(self.poll, deadline - now)))

    def unlock(self, force: bool = False) -> LockInfo | None:
        """Remove the lock whoever holds it (`swarmsmith unlock`); the holder, or None
        when there was none. A live process on this host is refused without force (exit 4)."""
        info = self.holder()
        if info is None:
            return None
        if info.local_state(self.me, self.alive) == "alive" and not force:
            forced = self.unlock_hint.replace("swarmsmith unlock", "swarmsmith unlock --force", 1)
            raise LockedError(f"{self.what}: the lock is {info.describe(self.clock())}, "
                              f"a process that is still running on this host (pid "
                              f"{info.holder.pid}); stop it, or remove the lock anyway with "
                              f"{forced}")
        self._break(info)
        return info

    def _break(self, info: LockInfo) -> None:
        try:
            self.api.remove_config(info.id, self.name)
            self.broke.append(info)
        except Exception as exc:
            if not is_not_found(exc):  # another run broke it first: fine
                raise SwarmsmithError(f"cannot remove stale lock {self.name}: {exc}") from exc

    def release(self) -> bool:
        """Remove our lock; False when it was already gone (broken as stale by another run)."""
        if not self.id:
            return False
        lock_id, self.id = self.id, None
        try:
            self.api.remove_config(lock_id, self.name)
            return True
        except Exception as exc:
            if is_not_found(exc):
                return False
            raise SwarmsmithError(f"cannot release lock {self.name}: {exc}") from exc

    def __enter__(self) -> "SwarmLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()
        except SwarmsmithError:
            if exc_type is None:
                raise  # do not hide the run's own error behind a release error


# --- `swarmsmith unlock STACK`, `swarmsmith unlock --managers` ---------------------------------

@dataclass
class UnlockOptions:
    cluster_file: str | None = None
    accept_new_host_keys: bool = False
    force: bool = False         # also remove a lock whose holder still runs on this host


@dataclass
class UnlockResult:
    stack: str | None           # None: the cluster's managers lock
    holder: LockInfo | None     # None: it was not locked
    holder_state: str = ""      # dead | alive | elsewhere (see LockInfo.local_state)
    exit_code = 0

    def to_dict(self) -> dict:
        h = self.holder
        which = {"stack": self.stack} if self.stack is not None else {"lock": "managers"}
        return {**which, "removed": h is not None,
                "holder": None if h is None else {
                    "owner": h.owner,
                    "acquired": None if h.unreadable else _iso(h.acquired),
                    "ttl": None if h.unreadable else h.ttl,
                    "host": h.holder.host if h.holder else None,
                    "pid": h.holder.pid if h.holder else None, "state": self.holder_state,
                    **({"unreadable": h.unreadable} if h.unreadable else {})}}


def unlock_stack(stack: str, options: UnlockOptions | None = None, *, engine=None,
                 me: Holder | None = None, alive: Callable[[int], bool] = pid_alive,
                 clock: Callable[[], float] = time.time) -> UnlockResult:
    """Show and remove the stack's lock; a live holder on this host only with force (else
    LockedError, exit 4)."""
    return _unlock(stack, options, engine, dict(me=me, alive=alive, clock=clock))


def unlock_managers(options: UnlockOptions | None = None, *, engine=None,
                    me: Holder | None = None, alive: Callable[[int], bool] = pid_alive,
                    clock: Callable[[], float] = time.time) -> UnlockResult:
    """Show and remove the cluster's managers lock (left by a killed backup, restore, recover,
    engine upgrade or node demote/rm); the same refusal as unlock_stack."""
    return _unlock(None, options, engine, dict(me=me, alive=alive, clock=clock))


def _unlock(stack: str | None, options: UnlockOptions | None, engine, kw: dict) -> UnlockResult:
    options = options or UnlockOptions()
    if engine is None:
        from ..engine_api.access import connect
        engine = connect(options.cluster_file, accept_new_host_keys=options.accept_new_host_keys,
                         shared=True).api
    if stack is None:
        lock = SwarmLock(engine, "managers", name=MANAGERS_LOCK, what=MANAGERS_WHAT,
                         unlock_hint=MANAGERS_UNLOCK, **kw)
    else:
        lock = SwarmLock(engine, stack, **kw)
    info = lock.unlock(force=options.force)
    return UnlockResult(stack, info, info.local_state(lock.me, kw["alive"]) if info else "")
