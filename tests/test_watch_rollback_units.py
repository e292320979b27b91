"""rollback_services: which services, the request sent, then the watch."""
from __future__ import annotations

import json

import pytest

from provision.base.errors import InputError
from stacks.watch.outcomes import Outcome
from stacks.operations.rollback import plan_rollback, rollback_services
from stacks.watch.watcher import WatchPolicy
from provision.engine_api.adapter import EngineAPI
from tests.fakes.engine import RequestRoutes
from tests.fakes.clock import FakeClock
from tests.fakes.swarm import STACK, FakeSwarm, svc, task


class RollbackSwarm(RequestRoutes, FakeSwarm):
    """Answers POST /services/{id}/update?rollback=previous like docker.APIClient would."""

    def __init__(self, script, **kw):
        super().__init__(script, **kw)
        self.posts = []

    def _post_json(self, url, data, **kwargs):
        self.posts.append((url, data, kwargs.get("params")))
        return {"Warnings": None}


def _stack():
    changed = svc("web", image="app:2", previous_image="app:1")
    same = svc("db", image="db:1", previous_image="db:1")
    fresh = svc("cache", image="redis:7")
    return changed, same, fresh


def test_plan_picks_services_with_a_different_previous_spec():
    chosen, skipped = plan_rollback(list(_stack()), STACK)
    assert [s["Spec"]["Name"] for s in chosen] == ["st_web"]
    assert skipped == {"st_db": "previous spec is the same as the current one",
                       "st_cache": "no previous spec"}


def test_plan_rejects_unknown_names():
    with pytest.raises(InputError, match="no service named nope"):
        plan_rollback(list(_stack()), STACK, ["web", "nope"])


def test_rollback_request_and_watch():
    changed, same, fresh = _stack()
    rolling = svc("web", image="app:1", update="rollback_started",
                  message="manually requested rollback", version=11)
    done = svc("web", image="app:1", update="rollback_completed",
               message="rollback completed", version=12)
    script = [
        ([changed, same, fresh], []),  # plan_rollback's listing
        ([rolling], [task(rolling, i, "running", image="app:2") for i in (1, 2, 3)]),
        ([done], [task(done, i, "running") for i in (1, 2, 3)]),
    ]
    api = RollbackSwarm(script)
    clock = FakeClock()
    result = rollback_services(EngineAPI(api), STACK, policy=WatchPolicy(timeout=60), clock=clock,
                               sleep=clock.sleep, log_fetcher=lambda *a: [])
    url, body, params = api.posts[0]
    assert url.endswith("/services/id_web/update")
    assert params == {"version": 10, "rollback": "previous"}
    assert body["TaskTemplate"]["ContainerSpec"]["Image"] == "app:2"  # the current spec
    assert result.requested == ["st_web"]
    (r,) = result.report.services
    assert r.outcome is Outcome.ROLLED_BACK and r.reason == "rolled back on request"
    assert result.exit_code == 0  # a completed rollback is what was asked for
    json.dumps(result.to_dict())


def test_rollback_that_pauses_is_exit_10():
    changed = svc("web", image="app:2", previous_image="app:1")
    paused = svc("web", image="app:1", update="rollback_paused",
                 message="rollback paused due to failure or early termination of task abcdefabcdef1")
    api = RollbackSwarm([([changed], []), ([paused], [])])
    clock = FakeClock()
    result = rollback_services(EngineAPI(api), STACK, ["web"], clock=clock, sleep=clock.sleep,
                               log_fetcher=lambda *a: [])
    assert result.report.services[0].outcome is Outcome.PAUSED
    assert result.exit_code == 10


def test_nothing_to_roll_back_is_a_no_op():
    _, same, fresh = _stack()
    api = RollbackSwarm([([same, fresh], [])])
    result = rollback_services(EngineAPI(api), STACK)
    assert result.requested == [] and result.report is None and result.exit_code == 0
    assert api.posts == []


@pytest.mark.parametrize("state, why", [
    ("rollback_completed", "already rolled back"), ("rollback_paused", "already rolled back"),
    ("rollback_started", "a rollback is already under way")])
def test_a_second_rollback_does_not_reapply_what_was_rolled_back(state, why):
    """After a rollback swarm's PreviousSpec is the spec rolled back from: rolling back again
    would deploy it again and report "rolled back on request"."""
    rolled = svc("web", image="app:1", previous_image="app:2", update=state)
    api = RollbackSwarm([([rolled], [])])
    clock = FakeClock()
    result = rollback_services(EngineAPI(api), STACK, clock=clock, sleep=clock.sleep)
    assert api.posts == [] and result.requested == [] and result.report is None
    assert why in result.skipped["st_web"] and result.exit_code == 0
    # a deploy since then (its update completed) makes it a rollback candidate again
    updated = svc("web", image="app:3", previous_image="app:1", update="completed")
    chosen, _ = plan_rollback([updated], STACK)
    assert [s["Spec"]["Name"] for s in chosen] == ["st_web"]
