"""Table-driven watch tests: scripted polls in, outcome, reason and exit code out."""
from __future__ import annotations

import json

import pytest

from stacks.watch.outcomes import Outcome
from stacks.watch.watcher import WatchPolicy, watch_stack
from tests.fakes.clock import FakeClock
from tests.fakes.swarm import STACK, FakeSwarm, node, svc, task

OLD, NEW = "app:1", "app:2"


def _update(states_new, update, *, old_running=0, **kw):
    """Service web updated from OLD to NEW: old tasks still running, new tasks in states_new."""
    s = svc("web", image=NEW, previous_image=OLD, update=update, **kw)
    # slots 1.. are updated first; the old tasks run in the slots after them
    tasks = [task(s, len(states_new) + i + 1, "running", image=OLD) for i in range(old_running)]
    tasks += [task(s, i + 1, st) for i, st in enumerate(states_new)]
    return [s], tasks


def converge_after_update():
    return [
        _update([], None, old_running=3),                   # apply done, updater not started
        _update(["running"], "updating", old_running=2),
        _update(["running", "running"], "updating", old_running=1),
        _update(["running"] * 3, "updating"),
        _update(["running"] * 3, "completed"),
    ]


def rollback_after_exit_1():
    s = svc("web", image=NEW, previous_image=OLD, update="updating")
    bad = task(s, 1, "failed", err="task: non-zero exit (1)", exit_code=1,
               desired="shutdown", tid="badtask000000001")
    old = [task(s, i, "running", image=OLD) for i in (1, 2, 3)]
    s2 = svc("web", image=OLD, update="rollback_started",
             message="update rolled back due to failure or early termination of task badtask000000001")
    bad2 = dict(bad, Spec={"ContainerSpec": {"Image": NEW}, "ForceUpdate": 0})
    s3 = svc("web", image=OLD, update="rollback_completed", message="rollback completed")
    return [([s], old + [bad]), ([s2], old + [bad2]), ([s3], old + [bad2])]


def crash_loop_first_deploy():
    s = svc("web", replicas=1)
    polls = []
    failed = []
    for n in range(4):
        failed.append(task(s, 1, "failed", err="task: non-zero exit (1)", exit_code=1,
                           desired="shutdown", ts=f"2026-01-01T00:00:0{n}Z",
                           tid=f"crash{n:011d}"))
        polls.append(([s], failed[-4:] + [task(s, 1, "starting", desired="ready")]))
    return polls


def insufficient_resources():
    s = svc("big", replicas=1)
    pend = task(s, 1, "pending", err="no suitable node (insufficient resources on 3 nodes)",
                node="")
    return [([s], [pend])]


def missing_image():
    s = svc("web", replicas=1, image="app:404")
    r1 = task(s, 1, "rejected", err="No such image: app:404", desired="shutdown",
              ts="2026-01-01T00:00:01Z")
    r2 = task(s, 1, "rejected", err="No such image: app:404", desired="shutdown",
              ts="2026-01-01T00:00:06Z")
    return [([s], [r1]), ([s], [r1, task(s, 1, "pending", desired="ready")]), ([s], [r1, r2])]


def stuck_two_of_three():
    s = svc("web")
    return [([s], [task(s, 1, "running"), task(s, 2, "running"), task(s, 3, "preparing")])]


def replicated_job():
    s = svc("migrate", mode="replicated-job", total=2, job_iteration=7)
    old = task(s, 1, "complete", desired="complete", iteration=6)
    return [
        ([s], [old, task(s, 1, "running", desired="complete", iteration=7)]),
        ([s], [old, task(s, 1, "complete", desired="complete", iteration=7),
               task(s, 2, "running", desired="complete", iteration=7)]),
        ([s], [old, task(s, 1, "complete", desired="complete", iteration=7),
               task(s, 2, "complete", desired="complete", iteration=7)]),
    ]


def global_service():
    s = svc("agent", mode="global")
    on = lambda n, st: task(s, 0, st, node=n)  # noqa: E731
    lost = task(s, 0, "running", node="n9")     # on a node that is down: does not count
    return [
        ([s], [on("n1", "running"), on("n2", "preparing"), on("n3", "pending"), lost]),
        ([s], [on("n1", "running"), on("n2", "running"), on("n3", "starting"), lost]),
        ([s], [on("n1", "running"), on("n2", "running"), on("n3", "running"), lost]),
    ]


def paused_update():
    s = svc("web", image=NEW, previous_image=OLD, update="paused",
            message="update paused due to failure or early termination of task pausedtask00001")
    bad = task(s, 1, "rejected", err="No such image: app:2", desired="shutdown",
               tid="pausedtask00001")
    return [([s], [bad] + [task(s, i, "running", image=OLD) for i in (1, 2, 3)])]


def stuck_updating():
    s = svc("web", image=NEW, previous_image=OLD, update="updating")
    return [([s], [task(s, 1, "running"), task(s, 2, "running", image=OLD),
                   task(s, 3, "running", image=OLD)])]


# name, script, extra kwargs, outcome, reason substring, exit code, max seconds
CASES = [
    ("converge after update", converge_after_update(), {}, Outcome.CONVERGED, "", 0, 30),
    ("rollback is exit 11", rollback_after_exit_1(), {}, Outcome.ROLLED_BACK,
     "task exited with code 1", 11, 30),
    ("rollback allowed is exit 0", rollback_after_exit_1(), {"allow_rollback": True},
     Outcome.ROLLED_BACK, "task exited with code 1", 0, 30),
    ("crash loop", crash_loop_first_deploy(), {}, Outcome.FAILED, "task exited with code 1", 10, 30),
    ("insufficient resources", insufficient_resources(), {}, Outcome.FAILED,
     "no suitable node (insufficient resources on 3 nodes)", 10, 20),
    ("missing image", missing_image(), {}, Outcome.FAILED, "No such image: app:404", 10, 30),
    ("timeout", stuck_two_of_three(), {}, Outcome.TIMED_OUT, "timed out after 120.0 s (updated 2/3, running 2/3), waiting for task st_web.3 preparing", 12, 120),
    ("replicated job", replicated_job(), {}, Outcome.DONE, "", 0, 30),
    ("global service", global_service(), {}, Outcome.CONVERGED, "", 0, 30),
    ("paused update", paused_update(), {}, Outcome.PAUSED, "update paused: No such image: app:2", 10, 5),
    ("update stuck in updating", stuck_updating(), {}, Outcome.FAILED,
     "update stuck in 'updating' with no task progress", 10, 100),
]


def run(script, **kwargs):
    api = FakeSwarm(script, nodes=[node("n1"), node("n2"), node("n3"), node("n9", state="down")],
                    logs=kwargs.pop("logs", None))
    clock = FakeClock()
    policy = kwargs.pop("policy", WatchPolicy(timeout=120))
    report = watch_stack(api, STACK, policy=policy, clock=clock, sleep=clock.sleep, **kwargs)
    return api, clock, report


@pytest.mark.parametrize("name,script,kwargs,outcome,reason,code,max_s", CASES,
                         ids=[c[0] for c in CASES])
def test_outcome_table(name, script, kwargs, outcome, reason, code, max_s):
    api, clock, report = run(script, **kwargs)
    (svc_report,) = report.services
    assert svc_report.outcome is outcome, svc_report.reason
    assert reason in svc_report.reason
    assert report.exit_code == code
    assert svc_report.seconds <= max_s
    json.dumps(report.to_dict())  # the report is plain JSON


def test_converges_only_when_new_tasks_run_and_update_completed():
    api, clock, report = run(converge_after_update())
    assert api.poll == 4  # five polls: not before UpdateStatus completed
    (r,) = report.services
    assert (r.updated, r.running, r.desired, r.update_state) == (3, 3, 3, "completed")


def test_old_spec_tasks_never_count_before_update_starts():
    # only the first poll repeats: 3 old tasks running, UpdateStatus reset to nothing
    api, clock, report = run(converge_after_update()[:1], policy=WatchPolicy(timeout=10))
    (r,) = report.services
    assert r.outcome is Outcome.TIMED_OUT and r.updated == 0 and r.running == 3


def test_rollback_report_names_task_error_and_log_lines():
    logs = {"badtask000000001": ["starting", "config missing: DB_URL"]}
    api, clock, report = run(rollback_after_exit_1(), logs=logs)
    (r,) = report.services
    assert r.reason == "rolled back after: task exited with code 1"
    assert r.log_tail == ["starting", "config missing: DB_URL"]
    assert api.log_requests[0][1]["details"] is True
    assert report.to_dict()["services"][0]["log_tail"][-1] == "config missing: DB_URL"


def test_crash_loop_log_tail_of_the_latest_failed_task():
    # the third failure in slot 1 decides; its logs are the ones shown
    logs = {"crash00000000002": ["boom"], "crash00000000001": ["older"]}
    api, clock, report = run(crash_loop_first_deploy(), logs=logs)
    (r,) = report.services
    assert r.log_tail == ["boom"]
    assert "3 failures in a row" in r.reason


def test_insufficient_resources_fails_at_the_bound_not_the_timeout():
    api, clock, report = run(insufficient_resources(),
                             policy=WatchPolicy(timeout=300, unschedulable_after=15))
    (r,) = report.services
    assert 15 <= r.seconds < 25
    assert r.reason == "no suitable node (insufficient resources on 3 nodes)"


def test_timeout_hits_exactly_at_the_deadline():
    api, clock, report = run(stuck_two_of_three(), policy=WatchPolicy(timeout=20))
    (r,) = report.services
    assert r.outcome is Outcome.TIMED_OUT
    assert r.seconds == pytest.approx(20)
    assert clock.t - 1000.0 == pytest.approx(20)
    assert report.exit_code == 12


def test_backoff_grows_while_nothing_changes_and_caps():
    api, clock, report = run(stuck_two_of_three(),
                             policy=WatchPolicy(timeout=60, poll_min=0.5, poll_max=4, backoff=2,
                                                early=0))
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(clock.sleeps) == 4


def test_the_first_seconds_are_polled_at_least_every_second():
    """New tasks start in a watch's first seconds: a backed-off poll would see them late."""
    api, clock, report = run(stuck_two_of_three(),
                             policy=WatchPolicy(timeout=60, poll_min=0.5, poll_max=4, backoff=2,
                                                early=10, poll_max_early=1.0))
    assert clock.sleeps[:4] == [0.5, 1.0, 1.0, 1.0]
    assert max(clock.sleeps) == 4          # past the early seconds the backoff goes on


def test_by_default_the_first_seconds_are_polled_every_quarter_second():
    api, clock, report = run(stuck_two_of_three(), policy=WatchPolicy(timeout=60))
    assert clock.sleeps[:4] == [0.25] * 4
    early = clock.sleeps[:120]
    assert set(early) == {0.25} and clock.sleeps[121] > 0.25 and max(clock.sleeps) == 5.0


def test_global_counts_one_task_per_ready_node():
    api, clock, report = run(global_service())
    (r,) = report.services
    assert (r.running, r.desired, r.mode) == (3, 3, "global")


def test_unchanged_service_keeps_no_old_rollback():
    s = svc("web", update="rollback_completed", version=42)
    script = [([s], [task(s, i, "running") for i in (1, 2, 3)])]
    api, clock, report = run(script, baseline={"id_web": 42})
    assert report.services[0].outcome is Outcome.CONVERGED
    api, clock, report = run(script, baseline={"id_web": 41})
    assert report.services[0].outcome is Outcome.ROLLED_BACK


def test_several_services_worst_exit_code_and_names():
    ok = svc("web")
    bad = svc("db", image="db:404", replicas=1)
    tasks = [task(ok, i, "running") for i in (1, 2, 3)]
    tasks += [task(bad, 1, "rejected", err="No such image: db:404", desired="shutdown")
              for _ in range(2)]
    api, clock, report = run([([ok, bad], tasks)])
    outcomes = {r.name: r.outcome for r in report.services}
    assert outcomes == {"st_web": Outcome.CONVERGED, "st_db": Outcome.FAILED}
    assert report.exit_code == 10


def test_select_services_by_short_name():
    ok, other = svc("web"), svc("db", replicas=1)
    tasks = [task(ok, i, "running") for i in (1, 2, 3)]
    api, clock, report = run([([ok, other], tasks)], services=["web"])
    assert [r.name for r in report.services] == ["st_web"]
    assert report.exit_code == 0


def test_service_removed_during_watch_is_failed():
    s = svc("web")
    api, clock, report = run([([s], [task(s, 1, "pending")]), ([], [])])
    assert report.services[0].outcome is Outcome.FAILED
    assert "removed" in report.services[0].reason


def test_progress_callback_sees_every_poll():
    seen = []
    run(converge_after_update(),
        on_progress=lambda rep: seen.append([(s.updated, s.running, s.desired, s.update_state)
                                             for s in rep.services]))
    assert seen[0] == [(0, 3, 3, None)]
    assert seen[2] == [(2, 3, 3, "updating")]
    assert seen[-1] == [(3, 3, 3, "completed")]


def test_job_that_keeps_failing_stops_as_failed():
    s = svc("migrate", mode="replicated-job", total=1, job_iteration=1)
    bad = task(s, 1, "failed", desired="shutdown", err="task: non-zero exit (2)", exit_code=2,
               iteration=1)
    api, clock, report = run([([s], [bad])], policy=WatchPolicy(timeout=120, stopped_after=10))
    (r,) = report.services
    assert r.outcome is Outcome.FAILED
    assert r.reason.startswith("task exited with code 2")
    assert r.seconds < 20


def test_no_logs_fetched_for_tasks_that_never_had_a_container():
    api, clock, report = run(missing_image(), logs={"x": ["never"]})
    assert api.log_requests == [] and report.services[0].log_tail == []


def _engine_adds_fields(t):
    t = dict(t, Spec=dict(t["Spec"], Runtime="container"))  # a spec that never compares equal
    return t


def test_fresh_service_converges_without_spec_comparison():
    s = svc("web")
    api, clock, report = run([([s], [_engine_adds_fields(task(s, i, "running")) for i in (1, 2, 3)])])
    assert report.services[0].outcome is Outcome.CONVERGED


def test_completed_update_converges_without_spec_comparison():
    s = svc("web", image=NEW, previous_image=OLD, update="completed")
    tasks = [_engine_adds_fields(task(s, i, "running")) for i in (1, 2, 3)]
    tasks += [task(s, i, "shutdown", image=OLD, desired="shutdown") for i in (1, 2, 3)]
    api, clock, report = run([([s], tasks)])
    assert report.services[0].outcome is Outcome.CONVERGED


def test_log_fetch_that_hangs_is_bounded():
    import threading
    gate = threading.Event()

    def hanging(service, task_id, tail):
        gate.wait(5)
        return ["late"]

    api = FakeSwarm(crash_loop_first_deploy())
    clock = FakeClock()
    report = watch_stack(api, STACK, policy=WatchPolicy(timeout=60, log_timeout=0.05),
                         clock=clock, sleep=clock.sleep, log_fetcher=hanging)
    gate.set()
    assert report.services[0].log_tail == ["(logs unavailable: no answer within 0.05 s)"]



def test_rollback_is_reported_once_the_old_spec_runs_at_full_strength():
    """Swarm says rollback_completed while the last rolled-back task is still starting (seen on
    the lab): the watcher waits until all replicas of the previous spec run again."""
    s = svc("web", image=OLD, update="rollback_completed", message="rollback completed")
    two_and_starting = [task(s, 1, "running", image=OLD), task(s, 2, "running", image=OLD),
                        task(s, 3, "starting", image=OLD)]
    three = [task(s, i, "running", image=OLD) for i in (1, 2, 3)]
    polls = [([s], two_and_starting), ([s], two_and_starting), ([s], three)]
    api, clock, report = run(polls)
    web = report.services[0]
    assert web.outcome == Outcome.ROLLED_BACK
    assert (web.running, web.desired) == (3, 3)
    assert report.polls >= 3


def test_job_counts_completed_as_updated_and_running_apart():
    seen = []
    api, clock, report = run(replicated_job(), on_progress=lambda rep: seen.append(
        (rep.services[0].updated, rep.services[0].running)))
    assert seen == [(0, 1), (1, 1), (2, 0)]
    assert report.services[0].progress_text() == "completed 2/2, running 0"
