"""The number of API calls per poll does not grow with tasks or services."""
from __future__ import annotations

from stacks.watch.watcher import WatchPolicy, watch_stack
from tests.fakes.clock import FakeClock
from tests.fakes.swarm import STACK, FakeSwarm, svc, task


def _script(n_history: int, n_services: int, global_too: bool):
    services = [svc(f"s{i}") for i in range(n_services)]
    if global_too:
        services.append(svc("agent", mode="global"))
    polls = []
    for p in range(3):
        tasks = []
        for s in services:
            # old tasks from earlier updates: they must not cost calls
            tasks += [task(s, 1, "shutdown", image="old:1", desired="shutdown")
                      for _ in range(n_history)]
            if s["Spec"]["Mode"].get("Global") is not None:
                tasks += [task(s, 0, "running", node=n) for n in ("n1", "n2", "n3")]
            else:
                tasks += [task(s, i, "running" if i <= p + 1 else "pending") for i in (1, 2, 3)]
        polls.append((services, tasks))
    return polls


def _calls(n_history, n_services, global_too=False):
    api = FakeSwarm(_script(n_history, n_services, global_too))
    clock = FakeClock()
    report = watch_stack(api, STACK, policy=WatchPolicy(timeout=60), clock=clock,
                         sleep=clock.sleep, log_fetcher=lambda *a: [])
    assert report.exit_code == 0
    return api, report


def test_calls_per_poll_constant_in_tasks_and_services():
    small, _ = _calls(1, 1)
    big, report = _calls(200, 20)
    assert len(small.calls_by_poll) == len(big.calls_by_poll) == 3
    for counter in small.calls_by_poll + big.calls_by_poll:
        assert dict(counter) == {"services": 1, "tasks": 1}
    assert report.api_calls == 6 and report.polls == 3


def test_one_task_listing_for_all_services():
    api, _ = _calls(5, 4)
    first = api.task_filters[0]
    assert sorted(first["service"]) == sorted(f"id_s{i}" for i in range(4))


def test_nodes_listed_once_per_poll_only_while_a_global_service_is_watched():
    api, _ = _calls(50, 3, global_too=True)
    # poll 1: the global service converges; later polls no longer need nodes
    assert dict(api.calls_by_poll[0]) == {"services": 1, "tasks": 1, "nodes": 1}
    assert dict(api.calls_by_poll[-1]) == {"services": 1, "tasks": 1}


def test_finished_services_are_no_longer_listed():
    api, _ = _calls(0, 2, global_too=True)
    assert "id_agent" in api.task_filters[0]["service"]
    assert "id_agent" not in api.task_filters[-1]["service"]


def test_stack_label_filter():
    calls = []

    class Spy(FakeSwarm):
        def services(self, filters=None):
            calls.append(filters)
            return super().services(filters)

    api = Spy(_script(0, 1, False))
    clock = FakeClock()
    watch_stack(api, STACK, clock=clock, sleep=clock.sleep, log_fetcher=lambda *a: [])
    assert calls[0] == {"label": "com.docker.stack.namespace=st"}
