"""Typed outcomes of a stack watch, their exit codes and the JSON report.

Exit codes (provision/base/errors.py): converged/done 0; rolled back 11 (0 when the
caller allows rollbacks); failed or paused 10; timed out 12.  A stack's code is
that of its worst service, ranked failed > timed out > rolled back > ok: a
definite failure outranks "still unknown", which outranks "safely back on the
old spec".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from provision.base.errors import EXIT_DEPLOY_FAILED, EXIT_OK, EXIT_ROLLED_BACK, EXIT_TIMED_OUT


class Outcome(str, Enum):
    CONVERGED = "converged"      # running == desired, update completed
    DONE = "done"                # a job whose tasks completed
    ROLLED_BACK = "rolled_back"  # UpdateStatus rollback_completed
    PAUSED = "paused"            # UpdateStatus paused / rollback_paused
    FAILED = "failed"            # a state that will not resolve by itself
    TIMED_OUT = "timed_out"      # the deadline passed first

    def __str__(self) -> str:
        return self.value


_SEVERITY = {EXIT_OK: 0, EXIT_ROLLED_BACK: 1, EXIT_TIMED_OUT: 2, EXIT_DEPLOY_FAILED: 3}


def exit_code_for(outcome: Outcome | None, *, allow_rollback: bool = False) -> int:
    if outcome in (Outcome.CONVERGED, Outcome.DONE):
        return EXIT_OK
    if outcome is Outcome.ROLLED_BACK:
        return EXIT_OK if allow_rollback else EXIT_ROLLED_BACK
    if outcome is Outcome.TIMED_OUT:
        return EXIT_TIMED_OUT
    return EXIT_DEPLOY_FAILED  # failed, paused, or no outcome at all


def worst_exit_code(codes) -> int:
    return max(codes, key=lambda c: _SEVERITY.get(c, 3), default=EXIT_OK)


def elapsed(seconds: float) -> str:
    """Every time the watch shows (summary, table, log lines) goes through here: one clock
    (the watch's), one rounding."""
    return f"{seconds:.1f} s"


@dataclass
class ServiceReport:
    """What the watcher knows about one service; final once `outcome` is set."""

    name: str
    service_id: str
    mode: str = "replicated"           # replicated, global, replicated-job, global-job
    updated: int = 0                   # slots running the current spec; jobs: tasks completed
    running: int = 0                   # slots with a running task of any spec
    desired: int = 0                   # jobs: completions wanted
    update_state: str | None = None    # UpdateStatus.State, None when absent
    phase: str = ""                    # update_state in words: updating, rolling back, ...
    waiting: str = ""                  # what swarm waits for now, in words
    waiting_key: str = ""              # the same without ticking numbers (for "changed?")
    outcome: Outcome | None = None
    reason: str = ""
    log_tail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed_task_id: str | None = None  # the task the reason came from, for log lookup

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def progress_text(self) -> str:
        """`updated 2/4, running 3/4, updating`: tasks on the current spec and running tasks
        of any spec, apart (an update's old tasks serve while the new ones come)."""
        if self.mode.endswith("job"):
            text = f"completed {self.updated}/{self.desired}, running {self.running}"
        else:
            text = f"updated {self.updated}/{self.desired}, running {self.running}/{self.desired}"
        return f"{text}, {self.phase}" if self.phase else text

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode,
            "outcome": str(self.outcome) if self.outcome else None,
            "updated": self.updated,
            "running": self.running,
            "desired": self.desired,
            "update_state": self.update_state,
            "phase": self.phase,
            "waiting": self.waiting,
            "reason": self.reason,
            "log_tail": list(self.log_tail),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class WatchReport:
    stack: str
    services: list[ServiceReport]
    seconds: float = 0.0
    allow_rollback: bool = False
    api_calls: int = 0
    polls: int = 0

    def exit_code_of(self, svc: ServiceReport) -> int:
        return exit_code_for(svc.outcome, allow_rollback=self.allow_rollback)

    @property
    def exit_code(self) -> int:
        return worst_exit_code(self.exit_code_of(s) for s in self.services)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def failures(self) -> list[ServiceReport]:
        return [s for s in self.services if self.exit_code_of(s) != EXIT_OK]

    def summary(self) -> str:
        """One plain paragraph for the terminal and for error messages."""
        lines = [f"stack {self.stack}: exit {self.exit_code} after {elapsed(self.seconds)}"]
        for s in self.services:
            line = f"  {s.name}: {s.outcome or 'unknown'} ({s.progress_text()})"
            if s.reason:
                line += f": {s.reason}"
            lines.append(line)
            lines.extend(f"    | {ln}" for ln in s.log_tail)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "stack": self.stack,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 2),
            "polls": self.polls,
            "api_calls": self.api_calls,
            "services": [s.to_dict() for s in self.services],
        }
