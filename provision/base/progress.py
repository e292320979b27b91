"""Progress events: library code reports what it is doing to a callback and never prints.

The command line turns events into lines on stderr (cli.py); a script may log them, collect them
or ignore them (no callback: nothing is reported). Events are plain dataclasses so a callback can
dispatch on their type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class HostProgress:
    """One step of `up`/`down` on one host (or on the cluster, or a stack of the cluster)."""
    host: str
    message: str


@dataclass(frozen=True)
class Waiting:
    """What a long step waits for now (engines starting, joins, a manager to be reachable);
    "" when it waits for nothing. A renderer says it again after a silent second, so a
    terminal or a log never goes quiet for long."""
    message: str


@dataclass(frozen=True)
class Notice:
    """A line worth showing as it happens (e.g. a stale lock broken)."""
    message: str


@dataclass(frozen=True)
class OperationWarning:
    """Something the caller should know that did not stop the operation."""
    message: str


@dataclass(frozen=True)
class TransferProgress:
    """Bytes of an image archive compressed or sent to a node (images push, deploy
    --push-images)."""
    host: str
    phase: str              # "compress" | "send" | "done"
    done: int
    total: int


Event = object      # any of the dataclasses above, or of stacks/events.py
ProgressCallback = Callable[[Event], None]


def emit(on_progress: ProgressCallback | None, event) -> None:
    if on_progress is not None:
        on_progress(event)


def lines_to(on_progress: ProgressCallback | None) -> Callable[[str], None]:
    """What a step says, line by line, as Notice events to `on_progress` (nothing without
    one): the runbooks talk in lines, their callers hear events like every other command's."""
    return lambda message: emit(on_progress, Notice(message))
