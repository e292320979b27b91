"""Services of a stack that are not settled although this run changes nothing in them: an
update still rolling (a deploy killed half-way leaves one), paused, rolling back, or fewer
running tasks than desired. `deploy` watches these too, so "no changes" never hides a rollout
that is still going, or failing."""
from __future__ import annotations

import time
from typing import Iterable

from provision.engine_api.adapter import as_engine
from stacks.watch.evaluate import Track, WatchPolicy, evaluate, service_mode
from stacks.watch.outcomes import Outcome
from stacks.watch.watcher import stack_services


def unsettled(api, stack: str, names: Iterable[str], *, policy: WatchPolicy | None = None,
              now: float | None = None) -> list[tuple[str, str]]:
    """(service name, what is going on) for each of `names` that one look at its service and
    tasks does not find converged. Two API calls whatever the number of services. Jobs are
    left out: a finished job's tasks may be long gone."""
    wanted = set(names)
    if not wanted:
        return []
    policy = policy or WatchPolicy()
    now = time.monotonic() if now is None else now
    services = [s for s in stack_services(api, stack) if s["Spec"]["Name"] in wanted
                and not service_mode(s).endswith("job")]
    if not services:
        return []
    tasks = as_engine(api).tasks({"service": [s["ID"] for s in services]})
    out = []
    for s in sorted(services, key=lambda s: s["Spec"]["Name"]):
        mine = [t for t in tasks if t.get("ServiceID") == s["ID"]]
        # an old rollback whose spec now runs at full strength is settled: the files ask for
        # that spec (else the plan would update it)
        v = evaluate(s, mine, Track(started=now, last_change=now), now, policy,
                     ignore_rollback=True)
        if v.outcome in (Outcome.CONVERGED, Outcome.DONE):
            continue
        state = v.phase or "no update"
        out.append((s["Spec"]["Name"], f"{state}, updated {v.updated}/{v.desired}, "
                                       f"running {v.running}/{v.desired}"
                                       + (f": {v.reason}" if v.reason else "")))
    return out
