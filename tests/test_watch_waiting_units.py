"""What swarm waits for, in words: a table of facts (service, tasks, when each task was first
seen running or stopping, now) -> the phrase; then a whole stop-first rolling update of 4
replicas played through the watcher and its log lines."""
from __future__ import annotations

import io
import re

import pytest

from stacks.watch.render import PlainRenderer
from stacks.watch.waiting import Seen, phase, waiting_for
from stacks.watch.watcher import WatchPolicy, watch_stack
from tests.fakes.clock import FakeClock
from tests.fakes.swarm import STACK, FakeSwarm, svc, task

OLD, NEW = "app:1", "app:2"
S = 1_000_000_000
NOW = 100.0


def _svc(update="updating", *, order="stop-first", delay=0, monitor=5, replicas=4,
         rollback=None, **kw):
    s = svc("web", image=NEW, previous_image=OLD, update=update, replicas=replicas, **kw)
    s["Spec"]["UpdateConfig"] = {"Parallelism": 1, "Order": order, "Delay": delay * S,
                                 "Monitor": monitor * S}
    if rollback:
        s["Spec"]["RollbackConfig"] = rollback
    return s


def _old(s, slot, state="running", desired="running", grace=None):
    t = task(s, slot, state, image=OLD, desired=desired, tid=f"old{slot}")
    if grace is not None:
        t["Spec"]["ContainerSpec"]["StopGracePeriod"] = grace * S
    return t


def _new(s, slot, state="running", desired="running", **kw):
    return task(s, slot, state, desired=desired, tid=f"new{slot}", **kw)


def case_stopping():
    s = _svc()
    tasks = [_new(s, 1), _old(s, 2, desired="shutdown", grace=10), _new(s, 2, "pending", "ready"),
             _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(running={"new1": 90}, stopping={"old2": NOW - 3})


def case_stopping_default_grace_over():
    s = _svc()
    tasks = [_old(s, 1, desired="shutdown"), _new(s, 1, "ready", "ready"), _old(s, 2),
             _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(stopping={"old1": NOW - 12})


def case_two_stopping():
    s = _svc()
    tasks = [_old(s, 1, desired="shutdown", grace=2), _old(s, 2, desired="shutdown", grace=2),
             _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(stopping={"old1": NOW, "old2": NOW})


def case_stopping_before_port_pending():
    # stop-first with a host-mode port: the new task is unschedulable until the old one stops
    s = _svc()
    tasks = [_old(s, 1, desired="shutdown", grace=10),
             _new(s, 1, "pending", "ready", node="",
                  err="no suitable node (host-mode port already in use on 4 nodes)"),
             _old(s, 2), _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(stopping={"old1": NOW - 4})


def case_start_first_old_stopping_is_no_wait():
    # start-first moves on once the new task runs; the old one stops on its own time
    s = _svc(order="start-first")
    tasks = [_new(s, 1), _old(s, 1, desired="shutdown"), _new(s, 2, "preparing"), _old(s, 2),
             _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(running={"new1": NOW - 1}, stopping={"old1": NOW - 1})


def case_unschedulable():
    s = _svc()
    tasks = [_new(s, 1, "pending", err="no suitable node (host-mode port already in use on "
                                       "3 nodes)", node=""), _old(s, 2), _old(s, 3), _old(s, 4)]
    return s, tasks, Seen()


def case_health_check():
    s = _svc()
    s["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"] = {"Test": ["CMD", "true"]}
    return s, [_new(s, 1, "starting"), _old(s, 2), _old(s, 3), _old(s, 4)], Seen()


def case_pending_plain():
    s = _svc()
    return s, [_new(s, 1, "pending"), _old(s, 2), _old(s, 3), _old(s, 4)], Seen()


def case_delay():
    s = _svc(delay=2)
    tasks = [_new(s, 1), _new(s, 2), _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(running={"new1": 80, "new2": NOW - 0.5})


def case_next():
    s = _svc(delay=2)
    tasks = [_new(s, 1), _new(s, 2), _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(running={"new1": 80, "new2": NOW - 2.5})


def case_last_delay_then_monitor():
    # after the last slot the worker still waits its delay, then swarm monitors
    s = _svc(delay=2, monitor=5)
    tasks = [_new(s, i) for i in (1, 2, 3, 4)]
    return s, tasks, Seen(running={"new1": 70, "new2": 80, "new3": 90, "new4": NOW - 1})


def case_monitor():
    s = _svc(delay=2, monitor=5)
    tasks = [_new(s, i) for i in (1, 2, 3, 4)]
    return s, tasks, Seen(running={"new1": 70, "new2": 80, "new3": 90, "new4": NOW - 4})


def case_monitor_over():
    s = _svc(monitor=5)
    tasks = [_new(s, i) for i in (1, 2, 3, 4)]
    return s, tasks, Seen(running={"new1": 70, "new2": 80, "new3": 90, "new4": NOW - 5.5})


def case_rollback_delay():
    s = _svc("rollback_started", rollback={"Parallelism": 1, "Delay": 3 * S, "Monitor": S})
    tasks = [_new(s, 1), _old(s, 2), _old(s, 3), _old(s, 4)]
    return s, tasks, Seen(running={"new1": NOW - 1})


def case_paused():
    s = _svc("paused")
    return s, [_new(s, 1, "pending"), _old(s, 2), _old(s, 3), _old(s, 4)], Seen()


def case_settled_fresh():
    s = svc("web", replicas=2)
    return s, [task(s, 1, "running"), task(s, 2, "running")], Seen()


def case_update_not_started():
    # a new spec, the updater has not set UpdateStatus yet: only old tasks
    s = _svc(None)
    return s, [_old(s, i) for i in (1, 2, 3, 4)], Seen()


def case_job():
    s = svc("migrate", mode="replicated-job", total=2, job_iteration=3)
    return s, [task(s, 1, "running", desired="complete", iteration=3, tid="job1")], Seen()


CASES = [
    (case_stopping, 1, "task st_web.2 stopping (grace period 10s, 7s left)", "stopping:old2"),
    (case_stopping_default_grace_over, 0, "task st_web.1 stopping (grace period 10s, 2s over)",
     "stopping:old1"),
    (case_two_stopping, 0, "task st_web.1 stopping (grace period 2s, 2s left) (+1 more)",
     "stopping:old1"),
    (case_stopping_before_port_pending, 0, "task st_web.1 stopping (grace period 10s, 6s left)",
     "stopping:old1"),
    (case_start_first_old_stopping_is_no_wait, 1, "task st_web.2 preparing (image, networks, "
                                                  "mounts)", "starting:new2"),
    (case_unschedulable, 0, "st_web.1 pending: no suitable node (host-mode port already in use "
                            "on 3 nodes)", "pending:new1"),
    (case_health_check, 0, "task st_web.1 starting (waiting for its health check)",
     "starting:new1"),
    (case_pending_plain, 0, "task st_web.1 pending", "starting:new1"),
    (case_delay, 2, "update delay 2s (2s left)", "delay:new2"),
    (case_next, 2, "swarm to start the update of the next task", "next"),
    (case_last_delay_then_monitor, 4, "update delay 2s (1s left)", "delay:new4"),
    (case_monitor, 4, "monitoring task st_web.4 (3s left)", "monitor:new4"),
    (case_monitor_over, 4, "swarm to mark the update completed", "complete"),
    (case_rollback_delay, 1, "rollback delay 3s (2s left)", "delay:new1"),
    (case_paused, 0, None, None),
    (case_settled_fresh, 2, None, None),
    (case_update_not_started, 0, "swarm to start the update", "update-start"),
    (case_job, 0, "task st_migrate.1 running until it completes", "job:job1"),
]


@pytest.mark.parametrize("make,updated,text,key", CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_waiting_for(make, updated, text, key):
    s, tasks, seen = make()
    template = s["Spec"]["TaskTemplate"]
    current = {t["ID"] for t in tasks if t["Spec"] == template}
    desired = s["Spec"]["Mode"].get("Replicated", {}).get("Replicas", 2)
    w = waiting_for(s, tasks, current, seen, NOW, updated, desired)
    assert (w.text if w else None, w.key if w else None) == (text, key)


def test_phase_words():
    assert [phase(_svc(st)) for st in ("updating", "rollback_started", "paused",
                                       "rollback_paused", "completed", "rollback_completed",
                                       None)] == ["updating", "rolling back", "paused",
                                                  "rollback paused", "completed", "rolled back",
                                                  ""]


def test_seen_keeps_first_sight_and_forgets_dropped_tasks():
    s = _svc()
    seen = Seen()
    seen.note([_new(s, 1), _old(s, 2, desired="shutdown")], 10.0)
    seen.note([_new(s, 1), _old(s, 2, desired="shutdown")], 11.0)
    assert seen.running == {"new1": 10.0} and seen.stopping == {"old2": 10.0}
    seen.note([_new(s, 1)], 12.0)
    assert seen.stopping == {}


# --- a whole stop-first rolling update, through the watcher and the log lines ---------------

def rolling_update_script(replicas=4, grace=3, delay=2, monitor=2):
    """What 0.5 s polls of swarm show during a stop-first, parallelism-1 update of
    `replicas` tasks: per slot the old task stops (grace period), the new one starts and
    runs, the worker waits its delay; then the monitor period; then completed."""
    def poll(state, slots):
        s = _svc(state, delay=delay, monitor=monitor, replicas=replicas)
        tasks = []
        for slot, what in slots.items():
            if what == "old":
                tasks.append(_old(s, slot, grace=grace))
            elif what == "stopping":
                tasks += [_old(s, slot, desired="shutdown", grace=grace),
                          _new(s, slot, "pending", "ready")]
            elif what in ("preparing", "starting"):
                tasks += [_old(s, slot, "shutdown", "shutdown"), _new(s, slot, what)]
            else:
                tasks += [_old(s, slot, "shutdown", "shutdown"), _new(s, slot)]
        return [s], tasks

    slots = {i: "old" for i in range(1, replicas + 1)}
    polls = [poll(None, slots)]
    for slot in range(1, replicas + 1):
        for what, n in (("stopping", 2 * grace), ("preparing", 1), ("starting", 1),
                        ("new", 2 * delay)):
            slots[slot] = what
            polls += [poll("updating", slots)] * n
    polls += [poll("updating", slots)] * (2 * monitor) + [poll("completed", slots)]
    return polls


def test_rolling_update_lines_updated_rises_running_stays_and_waits_are_named():
    out = io.StringIO()
    clock = FakeClock()
    api = FakeSwarm(rolling_update_script())
    report = watch_stack(api, STACK, policy=WatchPolicy(timeout=120, poll_max_early=0.5),
                         clock=clock, sleep=clock.sleep, on_progress=PlainRenderer(out))
    assert report.exit_code == 0
    lines = out.getvalue().splitlines()
    counts = [tuple(map(int, m.groups())) for m in
              (re.search(r"updated (\d)/4, running (\d)/4", ln) for ln in lines)]
    updated = [u for u, _ in counts]
    assert updated == sorted(updated) and updated[0] == 0 and updated[-1] == 4
    assert set(updated) == {0, 1, 2, 3, 4}
    assert min(r for _, r in counts) == 3
    text = "\n".join(lines)
    assert "waiting for task st_web.1 stopping (grace period 3s, 3s left)" in text
    assert "waiting for task st_web.2 preparing" in text
    assert "waiting for update delay 2s (2s left)" in text
    assert "waiting for monitoring task st_web.4 (" in text
    assert lines[-1].endswith("-> converged after " + f"{report.seconds:.1f} s")
    assert report.summary().splitlines()[0] == f"stack st: exit 0 after {report.seconds:.1f} s"
    # the same poll cost as before: two listings per poll
    assert api.calls["services"] == api.calls["tasks"] == report.polls
    assert "nodes" not in api.calls


def test_a_task_pending_while_the_old_one_stops_is_not_failed_for_it():
    """stop-first, host-mode port: the new task is "no suitable node" for the old task's whole
    grace period (30 s here) and a little after; the 15 s bound counts from the stop."""
    port = "no suitable node (host-mode port already in use on 4 nodes)"

    def poll(old_stopping):
        s = _svc()
        old = _old(s, 1, desired="shutdown", grace=30) if old_stopping \
            else _old(s, 1, "shutdown", "shutdown")
        return [s], [old, _new(s, 1, "pending", "ready", node="", err=port),
                     _old(s, 2), _old(s, 3), _old(s, 4)]

    clock = FakeClock()
    script = [poll(True)] * 60 + [poll(False)]           # 30 s stopping at 0.5 s a poll
    report = watch_stack(FakeSwarm(script), STACK,
                         policy=WatchPolicy(timeout=120, poll_max_early=0.5),
                         clock=clock, sleep=clock.sleep)
    (r,) = report.services
    assert r.outcome.value == "failed" and r.reason == port
    assert 30 + 15 <= r.seconds < 30 + 17


def test_while_the_old_task_stops_its_port_is_no_problem_to_report():
    port = "no suitable node (host-mode port already in use on 4 nodes)"
    s = _svc()
    tasks = [_old(s, 1, desired="shutdown", grace=10),
             _new(s, 1, "pending", "ready", node="", err=port), _old(s, 2), _old(s, 3), _old(s, 4)]
    clock = FakeClock()
    seen = []
    watch_stack(FakeSwarm([([s], tasks)]), STACK, policy=WatchPolicy(timeout=3),
                clock=clock, sleep=clock.sleep,
                on_progress=lambda rep: seen.append((rep.services[0].waiting,
                                                     rep.services[0].reason)))
    waiting, reason = seen[0]
    assert waiting == "task st_web.1 stopping (grace period 10s, 10s left)" and reason == ""
