"""The agent's decisions, as pure functions over facts (no engine, no git, no clock of their
own): what a poll does, and what happens to each stack. stacks/agent/loop.py gathers the
facts, asks here, and carries the answer out.

A poll:
- the fetch failed                        -> "fetch-failed" (reported; the next poll tries again)
- the branch's head is a commit not yet reconciled (nor refused) -> "commit"
- else, at least `interval` seconds since the last drift check  -> "drift"
- else                                    -> "idle"

A stack, when the poll plans:
- its files (or the cluster file) do not load -> "refuse": a commit is recorded as refused and
  nothing is changed, for any stack; on a drift check the stack is skipped
- its lock is held by a live run (a person's deploy) -> "wait": what that run changes is not
  drift, and a commit waits for the next poll
- a commit, or the lock of a killed agent found -> "apply" (deploy as redeploy does; the dead
  lock is broken by the deploy itself)
- a drift check whose plan has changes -> "correct" with correct_drift, else "report" (recorded
  once per distinct drift: the same drift every interval is one record, not hundreds)
- else -> "clean"

A stack the agent deployed from the cluster file that a later commit takes out of it (and that
still runs) is "gone" (gone_stacks): stacks it never deployed, such as one deployed by hand, are
never gone. Like a careful GitOps tool, by default it is only reported (recorded once, then
"known-gone"); with `agent: {prune: true}` it is removed ("prune"), unless a live run holds its
lock ("wait").
"""
from __future__ import annotations

from dataclasses import dataclass, field

COMMIT, DRIFT, IDLE, FETCH_FAILED = "commit", "drift", "idle", "fetch-failed"
APPLY, CORRECT, REPORT, KNOWN_DRIFT, WAIT, REFUSE, SKIP, CLEAN = (
    "apply", "correct", "report", "known-drift", "wait", "refuse", "skip", "clean")
GONE, KNOWN_GONE, PRUNE = "gone", "known-gone", "prune"
GONE_WHY = "deployed but no longer in the cluster file"
LOCK_FREE, LOCK_HELD, LOCK_DEAD = "free", "held", "dead"


@dataclass(frozen=True)
class PollFacts:
    now: float
    head: str | None                # the branch's commit as just fetched (None: fetch failed)
    reconciled: str = ""            # the last commit reconciled
    refused: str = ""               # the last commit refused (bad files)
    last_drift_check: float | None = None
    interval: float = 60.0


def poll_decision(f: PollFacts) -> str:
    if not f.head:
        return FETCH_FAILED
    if f.head not in (f.reconciled, f.refused):
        return COMMIT
    if f.last_drift_check is None or f.now - f.last_drift_check >= f.interval:
        return DRIFT
    return IDLE


@dataclass(frozen=True)
class StackFacts:
    name: str
    load_error: str = ""            # "FILE: KEY: message" when the files do not load
    lock: str = LOCK_FREE           # free | held (a live run) | dead (a killed agent's)
    changes: tuple = ()             # what a plan would change ("update service web_api: Env")
    reported_drift: tuple = ()      # the drift recorded last time for this stack


@dataclass(frozen=True)
class StackDecision:
    action: str
    why: str = ""
    drift: tuple = field(default_factory=tuple)


def stack_decision(reason: str, s: StackFacts, *, correct_drift: bool) -> StackDecision:
    if s.load_error:
        return StackDecision(REFUSE if reason == COMMIT else SKIP, s.load_error)
    if s.lock == LOCK_HELD:
        return StackDecision(WAIT, "the stack's lock is held by another run")
    if reason == COMMIT:
        return StackDecision(APPLY, "new commit")
    if s.lock == LOCK_DEAD:
        return StackDecision(APPLY, "a killed agent's run left the stack's lock")
    if not s.changes:
        return StackDecision(CLEAN)
    drift = tuple(sorted(s.changes))
    if correct_drift:
        return StackDecision(CORRECT, "drift", drift)
    if drift == tuple(sorted(s.reported_drift)):
        return StackDecision(KNOWN_DRIFT, "drift (already reported)", drift)
    return StackDecision(REPORT, "drift", drift)


def commit_refused(decisions: dict) -> bool:
    """A commit is refused as a whole when any stack's files do not load: nothing changes."""
    return any(d.action == REFUSE for d in decisions.values())


def commit_done(reason: str, decisions: dict) -> bool:
    """The commit counts as reconciled once no stack waits for a lock (else: next poll)."""
    return reason == COMMIT and not commit_refused(decisions) and \
        all(d.action != WAIT for d in decisions.values())


def gone_stacks(managed, wanted, deployed) -> list[str]:
    """Stacks the agent deployed from the cluster file (`managed`: named by a commit it
    reconciled) that the file no longer names (`wanted`) and that still run (`deployed`)."""
    return sorted((set(managed) - set(wanted)) & set(deployed))


@dataclass(frozen=True)
class GoneFacts:
    name: str
    lock: str = LOCK_FREE
    reported: bool = False          # already recorded as gone


def gone_decision(s: GoneFacts, *, prune: bool) -> StackDecision:
    if not prune:
        return StackDecision(KNOWN_GONE if s.reported else GONE, GONE_WHY)
    if s.lock == LOCK_HELD:
        return StackDecision(WAIT, "the stack's lock is held by another run")
    return StackDecision(PRUNE, GONE_WHY)
