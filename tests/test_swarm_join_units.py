"""Joins go through the Engine API with the token in the request body, never in a command line
(a command's arguments are readable by every user of the host)."""
from __future__ import annotations

import pytest

from provision.errors import SwarmsmithError
from provision.hosts import Host
from provision.ssh import Result
from provision.swarm import SwarmStep

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"


class FakeSession:
    def __init__(self, log: list):
        self.log = log

    def run(self, cmd, check=True, timeout=300):
        self.log.append(cmd.wire())
        out = TOKEN + "\n" if "join-token" in cmd.wire() else ""
        return Result(out, "", 0)


class FakeEngine:
    def __init__(self, fail: str = ""):
        self.calls, self.closed, self.fail = [], False, fail

    def join_swarm(self, remote_addrs, join_token, listen_addr=None, advertise_addr=None):
        self.calls.append((remote_addrs, join_token, listen_addr, advertise_addr))
        if self.fail:
            raise RuntimeError(self.fail)

    def close(self):
        self.closed = True


def step(engine, log):
    m = Host("m1", "10.0.0.1", role="manager")
    w = Host("w1", "10.0.0.2", role="worker")
    sessions = {"m1": FakeSession(log), "w1": FakeSession(log)}
    return SwarmStep(sessions, [m, w], {"m1": "10.1.0.1", "w1": "10.1.0.2"}, {}, {"hosts": {}},
                     engine_api=lambda host: engine), m, w


def test_join_sends_token_in_the_api_body_not_in_a_command():
    log, engine = [], FakeEngine()
    s, m, w = step(engine, log)
    s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    assert engine.calls == [(["10.1.0.1:2377"], TOKEN, "10.1.0.2:2377", "10.1.0.2")]
    assert engine.closed
    assert any("join-token" in c for c in log)          # fetched from the leader...
    assert not any("SWMTKN-" in c for c in log)         # ...but never sent as an argument
    assert not any(c.startswith("docker swarm join ") for c in log)
    assert s.changes == ["w1: joined as worker (advertise 10.1.0.2)"]


def test_join_failure_names_host_and_operation_without_the_token():
    log, engine = [], FakeEngine(fail=f"rejected token {TOKEN}: connection refused")
    s, m, w = step(engine, log)
    with pytest.raises(SwarmsmithError) as e:
        s._join(w, m, "worker", "10.1.0.1", leave_first=False)
    text = str(e.value)
    assert text.startswith("w1: join the swarm as worker") and "connection refused" in text
    assert "SWMTKN-" not in text and engine.closed
