"""Smaller truths the command line tells: the CA rotation's progress, a second rollback, logs
of several tasks in time order, and the push hint without a local engine."""
from __future__ import annotations

from provision.rotation import rotate_ca


class RotatingSwarm:
    """The states a 4-node swarm goes through in a root rotation, one per poll: first still the
    old root everywhere, then the new root with no node on it, then node by node."""

    def __init__(self, states):
        self.states, self.i = states, -1

    def swarm(self):
        self.i = min(self.i + 1, len(self.states) - 1)
        root, busy, _ = self.states[self.i]
        return {"Spec": {"CAConfig": {}}, "TLSInfo": {"TrustRoot": root},
                "RootRotationInProgress": busy}

    def nodes(self):
        _, _, roots = self.states[self.i]
        return [{"ID": f"n{i}", "Description": {"Hostname": f"h{i}", "TLSInfo": {"TrustRoot": r}},
                 "Status": {"State": "ready"}} for i, r in enumerate(roots)]

    def update_swarm(self, **kw):
        pass


def test_ca_rotate_progress_only_grows_and_says_which_phase():
    old, new = "OLD", "NEW"
    states = [(old, False, [old] * 4),          # read before the update
              (old, False, [old] * 4),          # swarm has not started yet
              (old, True, [old] * 4),           # issuing certificates
              (new, True, [old] * 4),
              (new, True, [new, new, old, old]),
              (new, False, [new, new, new, old]),
              (new, False, [new] * 4)]
    lines = []
    t = [0.0]
    res = rotate_ca(RotatingSwarm(states), on_progress=lines.append, clock=lambda: t[0],
                    sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert res.exit_code == 0
    counts = [int(line.split(": ", 1)[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 4     # never 4/4 -> 0/4 -> 4/4
    assert lines[0] == ("CA rotation: 0/4 nodes on the new root (waiting for swarm to start "
                        "the rotation)")
    assert any("issuing node certificates" in line for line in lines)
    assert any("waiting for nodes to report it" in line for line in lines)
    assert lines[-1] == "CA rotation: 4/4 nodes on the new root (done)"
