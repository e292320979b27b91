"""Issue 6 pieces that need no swarm: update defaults, image references, digest
pinning for redeploy, and two watcher cases first seen on the lab."""
from __future__ import annotations

import copy

import pytest

from stacks.specs.convert import StackSpec
from stacks.watch.outcomes import Outcome
from stacks.operations.redeploy import ImagePinner
from stacks.images.registry import parse_reference
from stacks.specs.update_defaults import MONITOR_NS, apply_update_defaults, with_update_defaults
from stacks.watch.watcher import WatchPolicy, watch_stack
from tests.fakes.clock import FakeClock
from tests.fakes.swarm import STACK, FakeSwarm, svc, task

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def spec(name="st_web", *, ports=None, mode=None, update=None, max_per_node=None):
    s = {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "app:1"}},
         "Mode": mode or {"Replicated": {"Replicas": 3}}}
    if ports:
        s["EndpointSpec"] = {"Ports": ports}
    if update is not None:
        s["UpdateConfig"] = update
    if max_per_node:
        s["TaskTemplate"]["Placement"] = {"MaxReplicas": max_per_node}
    return s


# --- update defaults -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,order", [
    ({}, "start-first"),
    ({"ports": [{"TargetPort": 80, "PublishedPort": 80, "PublishMode": "host"}]}, "stop-first"),
    ({"ports": [{"TargetPort": 80, "PublishedPort": 80}]}, "start-first"),  # ingress
    ({"max_per_node": 1}, "stop-first"),
])
def test_defaults_fill_both_configs_with_a_workable_order(kwargs, order):
    out, filled = with_update_defaults(spec(**kwargs))
    assert filled == ["update_config", "rollback_config"]
    assert out["UpdateConfig"] == {"Parallelism": 1, "FailureAction": "rollback",
                                   "Monitor": MONITOR_NS, "Order": order}
    assert out["RollbackConfig"]["FailureAction"] == "pause"
    assert out["RollbackConfig"]["Order"] == order


def test_defaults_keep_the_files_own_block_and_skip_jobs():
    mine = {"Parallelism": 2}
    out, filled = with_update_defaults(spec(update=mine))
    assert out["UpdateConfig"] == mine and filled == ["rollback_config"]
    job = spec(mode={"ReplicatedJob": {"TotalCompletions": 1}})
    assert with_update_defaults(job) == (job, [])


def test_defaults_switch_off():
    desired = StackSpec("st", services={"st_web": spec()})
    before = copy.deepcopy(desired.services)
    assert apply_update_defaults(desired, enabled=False) == {}
    assert desired.services == before
    assert apply_update_defaults(desired) == {"st_web": ["update_config", "rollback_config"]}


# --- image references and pins -------------------------------------------------------------

@pytest.mark.parametrize("ref,registry,repo,tag,explicit", [
    ("busybox", "docker.io", "library/busybox", "latest", False),
    ("swarmsmith/busybox:1", "docker.io", "swarmsmith/busybox", "1", False),
    ("198.18.3.2:5000/bb:v1", "198.18.3.2:5000", "bb", "v1", True),
    ("localhost/team/app", "localhost", "team/app", "latest", True),
    ("ghcr.io/o/app:2@" + DIGEST_A, "ghcr.io", "o/app", "2", True),
])
def test_parse_reference(ref, registry, repo, tag, explicit):
    r = parse_reference(ref)
    assert (r.registry, r.repository, r.tag, r.explicit_registry) == (registry, repo, tag, explicit)


def test_pinned_form_keeps_the_familiar_name():
    assert parse_reference("198.18.3.2:5000/bb:v1").pinned(DIGEST_A) == \
        f"198.18.3.2:5000/bb:v1@{DIGEST_A}"
    assert parse_reference("busybox").pinned(DIGEST_A) == f"busybox:latest@{DIGEST_A}"


def test_pinner_resolves_registry_images_once_and_skips_hub_ones():
    asked = []

    def resolve(ref):
        asked.append(ref.name())
        return DIGEST_A
    desired = StackSpec("st", services={
        "st_a": {"Name": "st_a", "TaskTemplate": {"ContainerSpec": {"Image": "reg.example/app:1"}}},
        "st_b": {"Name": "st_b", "TaskTemplate": {"ContainerSpec": {"Image": "reg.example/app:1"}}},
        "st_c": {"Name": "st_c", "TaskTemplate": {"ContainerSpec": {"Image": "busybox:1"}}}})
    pinner = ImagePinner(resolve=resolve)
    pinner(desired)
    assert asked == ["reg.example/app"]
    assert desired.services["st_a"]["TaskTemplate"]["ContainerSpec"]["Image"] == \
        f"reg.example/app:1@{DIGEST_A}"
    assert desired.services["st_c"]["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:1"
    assert "st_c" in pinner.skipped and set(pinner.pins) == {"st_a", "st_b"}


# --- watcher cases seen on the lab ----------------------------------------------------------

def _run(script, policy):
    api = FakeSwarm(script)
    clock = FakeClock()
    return watch_stack(api, STACK, policy=policy, clock=clock, sleep=clock.sleep)


def test_daemon_filled_runtime_does_not_hide_rejected_tasks_after_scaling():
    # 20.10 after an update: the service's TaskTemplate has Runtime "container", tasks do not
    s = svc("web", image="reg:5000/none:1", previous_image="reg:5000/none:1", replicas=3)
    s["Spec"]["TaskTemplate"]["Runtime"] = "container"
    bad = [task(s, i, "rejected", err="No such image: reg:5000/none:1", desired="shutdown")
           for i in (1, 2, 3)]
    for t in bad:
        t["Spec"].pop("Runtime")
    report = _run([([s], bad)], WatchPolicy(timeout=300))
    (r,) = report.services
    assert r.outcome is Outcome.FAILED and r.seconds < 5
    assert r.reason.startswith("No such image: reg:5000/none:1")


def test_update_that_keeps_getting_rejected_fails_before_the_timeout():
    s = svc("web", image="reg:5000/none:1", previous_image="app:1", update="updating")
    script = []
    tasks = [task(s, i, "running", image="app:1") for i in (2, 3)]
    for n in range(8):   # failure_action continue: a new rejected task every poll
        tasks = tasks + [task(s, 1, "rejected", err="No such image: reg:5000/none:1",
                              desired="shutdown")]
        script.append(([s], list(tasks)))
    report = _run(script, WatchPolicy(timeout=300))
    (r,) = report.services
    assert r.outcome is Outcome.FAILED
    assert "tasks rejected during the update" in r.reason and r.seconds < 60


def test_polls_stay_at_most_one_second_apart_while_an_update_runs():
    # nothing changes for a while during the update (monitor period): the end of the
    # update is not a task change, so backing off to 5 s would report it late
    s = svc("web", image="app:2", previous_image="app:1", update="updating")
    run = [task(s, i, "running") for i in (1, 2, 3)]
    done = svc("web", image="app:2", previous_image="app:1", update="completed")
    script = [([s], run)] * 12 + [([done], run)]
    api = FakeSwarm(script)
    clock = FakeClock()
    report = watch_stack(api, STACK, policy=WatchPolicy(timeout=300), clock=clock,
                         sleep=clock.sleep)
    assert report.services[0].outcome is Outcome.CONVERGED
    assert max(clock.sleeps) <= 1.0
