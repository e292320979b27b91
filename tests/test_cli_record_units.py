"""Smaller truths the command line tells: the CA rotation's progress, a second rollback, logs
of several tasks in time order, and the push hint without a local engine."""
from __future__ import annotations

from provision.swarm.rotation import rotate_ca


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
    res = rotate_ca(RotatingSwarm(states), on_progress=lambda e: lines.append(e.message),
                    clock=lambda: t[0],
                    sleep=lambda s: t.__setitem__(0, t[0] + s))
    assert res.exit_code == 0
    counts = [int(line.split(": ", 1)[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 4     # never 4/4 -> 0/4 -> 4/4
    assert lines[0] == ("CA rotation: 0/4 nodes on the new root (waiting for swarm to start "
                        "the rotation)")
    assert any("issuing node certificates" in line for line in lines)
    assert any("waiting for nodes to report it" in line for line in lines)
    assert lines[-1] == "CA rotation: 4/4 nodes on the new root (done)"


class LogSwarm:
    """A service with two tasks on two nodes; service_logs answers as the engine does: the
    last `tail` lines of each task, task by task (not in time order), `since` honoured."""

    LINES = {"t1": [("2026-01-01T00:00:01.000000000Z", "a1"), ("2026-01-01T00:00:03.5Z", "a2"),
                    ("2026-01-01T00:00:05.000000000Z", "a3")],
             "t2": [("2026-01-01T00:00:02.000000000Z", "b1"), ("2026-01-01T00:00:04.25Z", "b2"),
                    ("2026-01-01T00:00:06.000000000Z", "b3")]}

    def __init__(self, later=()):
        self.requests, self.later = [], list(later)

    def services(self):
        return [{"ID": "s1", "Spec": {"Name": "st_web", "Labels": {}}}]

    def nodes(self):
        return [{"ID": "n1", "Description": {"Hostname": "h1"}},
                {"ID": "n2", "Description": {"Hostname": "h2"}}]

    def tasks(self, filters=None):
        return [{"ID": "t1", "ServiceID": "s1", "Slot": 1, "NodeID": "n1"},
                {"ID": "t2", "ServiceID": "s1", "Slot": 2, "NodeID": "n2"}]

    def service_logs(self, sid, **kw):
        self.requests.append(kw)
        out = []
        for tid, lines in self.LINES.items():
            if kw.get("follow"):
                lines = lines + [l for t, l in self.later if t == tid]
            if kw.get("tail") not in (None, "all"):
                lines = lines[-kw["tail"]:] if kw["tail"] else []
            node = "n1" if tid == "t1" else "n2"
            for ts, msg in lines:
                attrs = (f"com.docker.swarm.node.id={node},com.docker.swarm.service.id=s1,"
                         f"com.docker.swarm.task.id={tid}")
                out.append(((ts + " ") if kw.get("timestamps") else "") + f"{attrs} {msg}\n")
        return iter(x.encode() for x in out)


def _logs(api, **opts):
    from stacks.operations.service_ops import LogOptions, logs
    got = []
    logs(api, "st_web", LogOptions(**opts), got.append, now=lambda: 1767225600.0)
    return got


def test_logs_tail_is_the_last_lines_of_the_service_in_time_order():
    api = LogSwarm()
    assert _logs(api, tail=2) == ["st_web.1@h1 | a3", "st_web.2@h2 | b3"]
    assert _logs(api, tail=3) == ["st_web.2@h2 | b2", "st_web.1@h1 | a3", "st_web.2@h2 | b3"]
    assert api.requests[-1]["timestamps"] and api.requests[-1]["tail"] == 3
    assert _logs(api, tail=4, timestamps=True)[0] == \
        "st_web.1@h1 | 2026-01-01T00:00:03.5Z a2"
    assert _logs(api, tail=0) == []
    # without --tail, lines come as the engine sends them
    assert len(_logs(api)) == 6 and "timestamps" in api.requests[-1]


def test_logs_tail_then_follow_goes_on_after_the_tail_without_repeating_it():
    api = LogSwarm(later=[("t1", ("2026-01-01T00:00:07.000000000Z", "a4"))])
    got = _logs(api, tail=2, follow=True)
    assert got == ["st_web.1@h1 | a3", "st_web.2@h2 | b3", "st_web.1@h1 | a4"]
    follow = api.requests[-1]
    assert follow["follow"] and follow["since"] == 1767225606.0


def test_push_missing_without_a_local_engine_names_push_from(monkeypatch, tmp_path):
    import pytest

    from provision.images import local_engine
    from stacks.images.push_missing import LOCAL_ENGINE, push_missing
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(local_engine.NoLocalEngineError) as e:
        push_missing({"app:1": {"w1"}}, LOCAL_ENGINE, str(tmp_path / "c.yml"))
    msg = str(e.value)
    assert "--push-from" in msg and "images push --file" in msg and str(tmp_path) in msg
