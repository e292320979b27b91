"""Plain-word reasons taken from swarm task objects (GET /tasks), and log tails.

Pure functions over the Engine API's task dicts; nothing here calls the API.
"""
from __future__ import annotations

import re

# Task states in the order swarm moves through them.
STATE_ORDER = ("new", "allocated", "pending", "assigned", "accepted", "preparing",
               "ready", "starting", "running", "complete", "shutdown", "failed",
               "rejected", "remove", "orphaned")
TERMINAL_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
BAD_STATES = frozenset({"failed", "rejected"})
# A task whose DesiredState is one of these is on its way out and no longer counts.
ENDING_DESIRED = frozenset({"shutdown", "remove", "orphaned", "failed", "rejected"})

_EXIT_RE = re.compile(r"non-zero exit \((\d+)\)(?::\s*(.*))?")
_NO_IMAGE_RE = re.compile(r"No such image: ?\S*")


def state(task: dict) -> str:
    return ((task.get("Status") or {}).get("State") or "").lower()


def desired_state(task: dict) -> str:
    return (task.get("DesiredState") or "").lower()


def error_text(task: dict) -> str:
    return ((task.get("Status") or {}).get("Err") or "").strip()


def exit_code(task: dict) -> int | None:
    cs = (task.get("Status") or {}).get("ContainerStatus") or {}
    code = cs.get("ExitCode")
    if code is None:
        m = _EXIT_RE.search(error_text(task))
        code = int(m.group(1)) if m else None
    return code


def is_live(task: dict) -> bool:
    """Swarm still wants this task (running, ready, or complete for jobs)."""
    return desired_state(task) not in ENDING_DESIRED


def had_container(task: dict) -> bool:
    """The task got as far as a container, so it may have logs."""
    cs = (task.get("Status") or {}).get("ContainerStatus") or {}
    return bool(cs.get("ContainerID")) or cs.get("ExitCode") is not None \
        or state(task) in ("starting", "running", "complete", "failed")


def is_unschedulable(task: dict) -> bool:
    return state(task) == "pending" and "no suitable node" in error_text(task)


def describe(task: dict) -> str:
    """Why this task is not running, in plain words; "" when nothing is wrong."""
    st, err = state(task), error_text(task)
    msg = ((task.get("Status") or {}).get("Message") or "").strip()
    if "no suitable node" in err:
        return err[err.index("no suitable node"):]
    m = _NO_IMAGE_RE.search(err)
    if m:
        return m.group(0)
    if st == "failed" or (st in TERMINAL_STATES and exit_code(task) not in (None, 0)):
        code = exit_code(task)
        if code is not None and code != 0:
            detail = ""
            em = _EXIT_RE.search(err)
            if em and em.group(2):
                detail = em.group(2).split(": ")[-1].strip()
            return f"task exited with code {code}" + (f" ({detail})" if detail else "")
        return f"task failed: {err or msg or 'no error given'}"
    if st == "rejected":
        return f"task rejected: {err or msg or 'no error given'}"
    if err:
        return err
    return ""


def age_key(task: dict) -> str:
    """Sort key for "most recent": the engine's RFC 3339 status timestamp (lexical order works)."""
    return (task.get("Status") or {}).get("Timestamp") or task.get("UpdatedAt") or ""


def split_log_line(line: str) -> tuple[str | None, str]:
    """A service-log line fetched with details=True starts with k=v,k=v attributes.

    Returns (task id or None, message).
    """
    head, sep, rest = line.partition(" ")
    if sep and "com.docker.swarm.task.id=" in head and "=" in head:
        for pair in head.split(","):
            key, _, value = pair.partition("=")
            if key == "com.docker.swarm.task.id":
                return value, rest
    return None, line


def tail_lines(chunks, task_id: str | None = None, tail: int = 20) -> list[str]:
    """Decode log chunks (bytes or str), keep the lines of one task, return the last `tail`."""
    text = "".join(c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                   for c in chunks)
    lines = []
    for raw in text.splitlines():
        tid, message = split_log_line(raw)
        if task_id and tid and not task_id.startswith(tid) and not tid.startswith(task_id):
            continue
        lines.append(message.rstrip())
    return lines[-tail:] if tail else lines
