"""Raft quorum arithmetic for swarm managers, and the checks that keep operations from losing it.

A swarm of N managers needs a majority, N // 2 + 1, reachable to make any change. The number of
further manager losses it survives is (reachable - majority), or none when it has no majority.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import EXIT_REFUSED, SwarmsmithError


class QuorumRefused(SwarmsmithError):
    """An operation would lose quorum or the last manager; nothing was changed."""

    exit_code = EXIT_REFUSED


@dataclass(frozen=True)
class Quorum:
    managers: int       # raft members (nodes with role manager)
    reachable: int      # of those, leader or reachable

    @property
    def majority(self) -> int:
        return self.managers // 2 + 1

    @property
    def ok(self) -> bool:
        return self.managers > 0 and self.reachable >= self.majority

    @property
    def degraded(self) -> bool:
        return self.ok and self.reachable < self.managers

    @property
    def survives(self) -> int:
        """How many more managers may be lost before the swarm loses quorum."""
        return max(0, self.reachable - self.majority) if self.ok else 0

    @property
    def state(self) -> str:
        return "lost" if not self.ok else ("degraded" if self.degraded else "healthy")

    def after_losing(self, reachable_lost: int, members_lost: int | None = None) -> "Quorum":
        """The quorum once `reachable_lost` reachable managers stop counting. A demote or rm
        also takes the member out of raft (members_lost, default the same number)."""
        members_lost = reachable_lost if members_lost is None else members_lost
        return Quorum(self.managers - members_lost, self.reachable - reachable_lost)

    def to_dict(self) -> dict:
        return {"managers": self.managers, "reachable": self.reachable,
                "majority": self.majority, "ok": self.ok, "state": self.state,
                "survives": self.survives}

    def text(self) -> str:
        if not self.ok:
            return (f"QUORUM LOST: {self.reachable}/{self.managers} managers reachable, "
                    f"{self.majority} needed")
        more = f"survives {self.survives} more manager loss{'es' if self.survives != 1 else ''}"
        return f"quorum {self.state} ({self.reachable}/{self.managers} managers reachable, {more})"


def manager_reachable(node: dict) -> bool:
    ms = node.get("ManagerStatus") or {}
    return bool(ms.get("Leader")) or ms.get("Reachability") == "reachable"


def is_manager(node: dict) -> bool:
    return (node.get("Spec") or {}).get("Role") == "manager"


def quorum_of(nodes: list[dict]) -> Quorum:
    """From the Engine API's node list."""
    managers = [n for n in nodes if is_manager(n)]
    return Quorum(len(managers), sum(1 for n in managers if manager_reachable(n)))


def check_manager_removal(nodes: list[dict], node: dict, verb: str) -> Quorum:
    """Refuse to demote/remove `node` when it is the last manager or when the swarm would have
    no majority afterwards (raft needs a majority of the remaining members reachable)."""
    if not is_manager(node):
        return quorum_of(nodes)
    q = quorum_of(nodes)
    name = node_name(node)
    if q.managers <= 1:
        raise QuorumRefused(f"refusing to {verb} {name}: it is the last manager (the swarm "
                            "would have no manager at all)")
    lost_reachable = 1 if manager_reachable(node) else 0
    after = q.after_losing(lost_reachable, 1)
    if not q.ok or not after.ok:
        raise QuorumRefused(
            f"refusing to {verb} {name}: {q.text()}; afterwards {after.reachable}/{after.managers} "
            f"managers would be reachable with {after.majority} needed. Bring the unreachable "
            "managers back first (or `swarmsmith recover` when quorum is already lost)")
    return after


def node_name(node: dict) -> str:
    return (node.get("Description") or {}).get("Hostname") or node["ID"][:12]
