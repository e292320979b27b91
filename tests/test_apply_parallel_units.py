"""Services of a stack are sent to the manager in parallel (each is its own swarm object), the
steps still reported in plan order, and one refused create neither stops the others nor goes
unreported."""
from __future__ import annotations

import threading

import pytest

from provision.base.errors import SwarmsmithError
from stacks.plan_apply.apply import apply
from stacks.plan_apply.plan import CREATE, UNCHANGED, Action, Plan


class Engine:
    """Holds every create until `together` of them are in flight (or a second passes), so the
    test sees whether they overlap without measuring time."""

    def __init__(self, together: int, refuse: str = ""):
        self.together, self.refuse = together, refuse
        self.created, self.in_flight, self.most = [], 0, 0
        self.lock = threading.Lock()
        self.enough = threading.Event()

    def create_network(self, spec):
        return "net"

    create_secret = create_config = update_secret = update_config = create_network

    def create_service(self, spec):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.together:
                self.enough.set()
        self.enough.wait(1.0)
        with self.lock:
            self.in_flight -= 1
            if spec["Name"] == self.refuse:
                raise SwarmsmithError(f"create service {spec['Name']}: name conflicts")
            self.created.append(spec["Name"])
        return "id-" + spec["Name"]


def service(name: str, action: str = CREATE) -> Action:
    return Action("service", name, action,
                  spec={"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}})


def test_creates_overlap_and_steps_keep_plan_order():
    names = [f"st_s{i:02d}" for i in range(12)]
    plan = Plan("st", actions=[service(n) for n in names] + [service("st_same", UNCHANGED)])
    engine, steps = Engine(together=4), []
    result = apply(plan, engine, on_step=steps.append)
    assert engine.most >= 4
    assert sorted(engine.created) == names
    assert steps == result.done == [f"create service {n}" for n in names]


def test_one_refused_create_is_raised_after_the_others_are_made():
    names = [f"st_s{i}" for i in range(5)]
    plan = Plan("st", actions=[service(n) for n in names])
    engine, steps = Engine(together=5, refuse="st_s1"), []
    with pytest.raises(SwarmsmithError, match="st_s1: name conflicts"):
        apply(plan, engine, on_step=steps.append)
    assert sorted(engine.created) == [n for n in names if n != "st_s1"]
    assert "create service st_s1" not in steps
