"""Watch every service of a stack at once until each reaches an outcome.

One poll loop per stack.  Each poll makes a fixed number of Engine API calls,
whatever the number of services or tasks:

    services({"label": "com.docker.stack.namespace=STACK"})   (or {"id": [...]})
    tasks({"service": [ids of services not finished yet]})
    nodes()            only while a global service or job is being watched

through provision/engine_api/adapter.py's EngineAPI (`api` is one, or a client it wraps).  Clock and sleep
are injectable; polls back off from `poll_min` to `poll_max` while nothing
changes and never sleep past the deadline.  Decisions per service live in
stacks/watch/evaluate.py, outcomes and exit codes in stacks/watch/outcomes.py.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Mapping

from provision.engine_api.adapter import as_engine
from provision.base.errors import SwarmsmithError
from stacks.watch import task_reasons as tr
from stacks.watch.outcomes import Outcome, ServiceReport, WatchReport, elapsed
from stacks.watch.evaluate import IN_PROGRESS, Track, WatchPolicy, evaluate, service_mode

STACK_LABEL = "com.docker.stack.namespace"

# (service dict, task id, number of lines) -> last log lines of that task
LogFetcher = Callable[[dict, str, int], list]
# what the watch hands each poll: the whole report (stacks/events.py wraps it in WatchProgress)
ReportCallback = Callable[[WatchReport], None]

__all__ = ["WatchPolicy", "watch_stack", "watch_services",
           "api_log_fetcher", "stack_services", "STACK_LABEL"]


def stack_services(api, stack: str) -> list[dict]:
    return as_engine(api).services({"label": f"{STACK_LABEL}={stack}"})


def api_log_fetcher(api) -> LogFetcher:
    """Last lines of one task's logs, from the service log endpoint (details=True
    tags each line with its task id; tail applies per task)."""

    api = as_engine(api)

    def fetch(service: dict, task_id: str, tail: int) -> list:
        spec = (service.get("Spec") or {}).get("TaskTemplate") or {}
        tty = bool((spec.get("ContainerSpec") or {}).get("TTY"))
        chunks = api.service_logs(service["ID"], details=True, stdout=True, stderr=True,
                                  follow=False, tail=tail, is_tty=tty)
        return tr.tail_lines(chunks, task_id, tail)

    return fetch


def watch_stack(api, stack: str, *, services: Iterable[str] | None = None,
                policy: WatchPolicy | None = None, allow_rollback: bool = False,
                baseline: Mapping[str, int] | None = None,
                timeouts: Mapping[str, float] | None = None,
                on_progress: ReportCallback | None = None,
                log_fetcher: LogFetcher | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> WatchReport:
    """Watch the services of `stack` (all, or those named: "web" or "stack_web").

    baseline: service id -> Version.Index before the apply (a deploy's Plan.versions); a
      service whose version did not move keeps no rollback from an earlier run.
    timeouts: per-service deadlines in seconds (short or full names), else policy.timeout.
    Returns a WatchReport; `report.exit_code` is the code for the process.
    """
    api = as_engine(api)
    return _Watch(api, stack, lambda: stack_services(api, stack), services, policy,
                  allow_rollback, baseline, timeouts, on_progress, log_fetcher,
                  clock, sleep).run()


def watch_services(api, service_ids: list[str], *, stack: str = "",
                   policy: WatchPolicy | None = None, allow_rollback: bool = False,
                   baseline: Mapping[str, int] | None = None,
                   timeouts: Mapping[str, float] | None = None,
                   on_progress: ReportCallback | None = None,
                   log_fetcher: LogFetcher | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> WatchReport:
    """Same as watch_stack for a given list of service ids (e.g. after a rollback)."""
    ids = list(service_ids)
    api = as_engine(api)
    return _Watch(api, stack, lambda: api.services({"id": ids}), None, policy,
                  allow_rollback, baseline, timeouts, on_progress, log_fetcher,
                  clock, sleep).run()


def _short(name: str, stack: str) -> str:
    prefix = f"{stack}_"
    return name[len(prefix):] if stack and name.startswith(prefix) else name


class _Watch:
    def __init__(self, api, stack, list_services, names, policy, allow_rollback, baseline,
                 timeouts, on_progress, log_fetcher, clock, sleep):
        self.api = api
        self.stack = stack
        self.list_services = list_services
        self.names = set(names) if names else None
        self.policy = policy or WatchPolicy()
        self.baseline = dict(baseline or {})
        self.timeouts = dict(timeouts or {})
        self.on_progress = on_progress
        self.log_fetcher = log_fetcher if log_fetcher is not None else api_log_fetcher(api)
        self.clock, self.sleep = clock, sleep
        self.report = WatchReport(stack, [], allow_rollback=allow_rollback)
        self.reports: dict[str, ServiceReport] = {}
        self.tracks: dict[str, Track] = {}
        self.deadlines: dict[str, float] = {}
        self.services: dict[str, dict] = {}

    # -- API calls, counted ------------------------------------------------
    def _call(self, fn, *args, **kwargs):
        self.report.api_calls += 1
        return fn(*args, **kwargs)

    def _select(self, found: list[dict]) -> list[dict]:
        if self.names is None:
            return found
        chosen = [s for s in found
                  if s["Spec"]["Name"] in self.names
                  or _short(s["Spec"]["Name"], self.stack) in self.names]
        have = {s["Spec"]["Name"] for s in chosen} | {_short(s["Spec"]["Name"], self.stack)
                                                     for s in chosen}
        missing = sorted(self.names - have)
        if missing:
            raise SwarmsmithError(f"stack {self.stack}: no service named {', '.join(missing)}")
        return chosen

    def _start(self, found: list[dict], now: float):
        chosen = self._select(found)
        if not chosen:
            raise SwarmsmithError(f"stack {self.stack or '?'}: no services to watch")
        for s in sorted(chosen, key=lambda s: s["Spec"]["Name"]):
            sid, name = s["ID"], s["Spec"]["Name"]
            self.reports[sid] = ServiceReport(name, sid, mode=service_mode(s))
            self.report.services.append(self.reports[sid])
            self.tracks[sid] = Track(started=now, last_change=now)
            limit = self.timeouts.get(name, self.timeouts.get(_short(name, self.stack),
                                                              self.policy.timeout))
            self.deadlines[sid] = now + limit

    def run(self) -> WatchReport:
        p = self.policy
        start = None
        interval = p.poll_min
        while True:
            now = self.clock()
            # the stack's time and each service's are read from the same poll instants
            start = now if start is None else start
            found = self._call(self.list_services)
            if not self.reports:
                self._start(found, now)
            changed = self._poll(found, now)
            self.report.polls += 1
            self.report.seconds = now - start
            if self.on_progress:
                self.on_progress(self.report)
            pending = [r for r in self.report.services if not r.finished]
            if not pending:
                return self.report
            interval = p.poll_min if changed else min(interval * p.backoff, p.poll_max)
            if any(r.update_state in IN_PROGRESS for r in pending):
                interval = min(interval, p.poll_max_updating)
            if now - start < p.early:
                interval = min(interval, p.poll_max_early)
            next_deadline = min(self.deadlines[r.service_id] for r in pending)
            self.sleep(max(0.0, min(interval, next_deadline - self.clock())))

    def _poll(self, found: list[dict], now: float) -> bool:
        by_id = {s["ID"]: s for s in found}
        pending = [r for r in self.report.services if not r.finished]
        ids = [r.service_id for r in pending if r.service_id in by_id]
        tasks = self._call(self.api.tasks, {"service": ids}) if ids else []
        ready = None
        if any(r.mode.startswith("global") for r in pending):
            ready = {n["ID"] for n in self._call(self.api.nodes)
                     if ((n.get("Status") or {}).get("State") == "ready"
                         and (n.get("Spec") or {}).get("Availability", "active") != "drain")}
        per_service: dict[str, list[dict]] = {i: [] for i in ids}
        for t in tasks:
            per_service.setdefault(t.get("ServiceID"), []).append(t)

        changed = False
        for r in pending:
            sid = r.service_id
            r.seconds = now - self.tracks[sid].started
            svc = by_id.get(sid)
            if svc is None:
                r.outcome, r.reason = Outcome.FAILED, "the service was removed during the watch"
                changed = True
                continue
            self.services[sid] = svc
            track = self.tracks[sid]
            before = (r.updated, r.running, r.desired, r.update_state, r.waiting_key,
                      track.last_change)
            unchanged = sid in self.baseline and \
                (svc.get("Version") or {}).get("Index") == self.baseline[sid]
            v = evaluate(svc, per_service.get(sid, []), track, now, self.policy, ready,
                         ignore_rollback=unchanged)
            r.updated, r.running, r.desired = v.updated, v.running, v.desired
            r.update_state, r.phase = v.update_state, v.phase
            r.waiting, r.waiting_key = (v.waiting.text, v.waiting.key) if v.waiting else ("", "")
            r.reason, r.failed_task_id = v.reason, v.task_id
            if v.outcome is None and now >= self.deadlines[sid]:
                v.outcome = Outcome.TIMED_OUT
                waited = f"timed out after {elapsed(now - track.started)} ({r.progress_text()})"
                if r.waiting:
                    waited += f", waiting for {r.waiting}"
                r.reason = f"{waited}: {v.reason}" if v.reason else waited
            if v.outcome is not None:
                r.outcome = v.outcome
                r.waiting = r.waiting_key = ""
                changed = True
                culprit = next((t for t in per_service.get(sid, [])
                                if t.get("ID") == r.failed_task_id), None)
                if culprit is not None and tr.had_container(culprit) \
                        and r.outcome not in (Outcome.CONVERGED, Outcome.DONE):
                    r.log_tail = self._logs(svc, r.failed_task_id)
            elif before != (r.updated, r.running, r.desired, r.update_state, r.waiting_key,
                            track.last_change):
                changed = True
        return changed

    def _logs(self, service: dict, task_id: str) -> list:
        """Log tail of one task, bounded in time: a log call can hang on a lost node."""
        box: dict = {}

        def work():
            try:
                box["lines"] = list(self.log_fetcher(service, task_id, self.policy.log_tail))
            except Exception as exc:  # logs are a courtesy; never fail the watch for them
                box["lines"] = [f"(logs unavailable: {exc})"]

        self.report.api_calls += 1
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(self.policy.log_timeout)
        return box.get("lines", [f"(logs unavailable: no answer within {self.policy.log_timeout:g} s)"])
