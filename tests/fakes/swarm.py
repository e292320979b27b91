"""A scripted swarm API and object builders (services, tasks, nodes) for the watch and the
commands above it.

A FakeSwarm plays a script: entry i is what the i-th poll sees (services and
tasks); the last entry repeats.  It counts calls per method and per poll.
"""
from __future__ import annotations

import copy
import itertools
from collections import Counter

STACK = "st"
_ids = itertools.count(1)


def template(image: str, force: int = 0) -> dict:
    return {"ContainerSpec": {"Image": image}, "ForceUpdate": force}


def svc(name: str, *, image: str = "app:1", replicas: int = 3, mode: str = "replicated",
        update: str | None = None, message: str = "", version: int = 10,
        previous_image: str | None = None, job_iteration: int | None = None,
        total: int = 1, sid: str | None = None, stack: str = STACK) -> dict:
    modes = {"replicated": {"Replicated": {"Replicas": replicas}},
             "global": {"Global": {}},
             "replicated-job": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": total}},
             "global-job": {"GlobalJob": {}}}
    s = {"ID": sid or f"id_{name}", "Version": {"Index": version},
         "Spec": {"Name": f"{stack}_{name}", "Labels": {"com.docker.stack.namespace": stack},
                  "TaskTemplate": template(image), "Mode": modes[mode]}}
    if update:
        s["UpdateStatus"] = {"State": update, "Message": message}
    if previous_image:
        s["PreviousSpec"] = dict(s["Spec"], TaskTemplate=template(previous_image))
    if job_iteration is not None:
        s["JobStatus"] = {"JobIteration": {"Index": job_iteration}}
    return s


def task(service: dict, slot: int, state: str, *, image: str | None = None,
         desired: str = "running", err: str = "", exit_code: int | None = None,
         node: str = "n1", tid: str | None = None, ts: str = "2026-01-01T00:00:00Z",
         iteration: int | None = None) -> dict:
    spec = template(image) if image else copy.deepcopy(service["Spec"]["TaskTemplate"])
    status = {"State": state, "Message": state, "Timestamp": ts}
    if err:
        status["Err"] = err
    if exit_code is not None:
        status["ContainerStatus"] = {"ExitCode": exit_code}
    t = {"ID": tid or f"task{next(_ids):08d}xx", "ServiceID": service["ID"], "Slot": slot,
         "NodeID": node, "DesiredState": desired, "Spec": spec, "Status": status}
    if iteration is not None:
        t["JobIteration"] = {"Index": iteration}
    return t


def node(nid: str, state: str = "ready", availability: str = "active") -> dict:
    return {"ID": nid, "Status": {"State": state}, "Spec": {"Availability": availability}}


class FakeSwarm:
    """Scripted docker.APIClient stand-in: services/tasks/nodes/service_logs."""

    def __init__(self, script: list[tuple[list[dict], list[dict]]], *, nodes=None, logs=None):
        self.script = script
        self.poll = -1
        self.node_list = nodes if nodes is not None else [node("n1"), node("n2"), node("n3")]
        self.logs = logs or {}          # task id -> list of lines
        self.calls = Counter()
        self.calls_by_poll: list[Counter] = []
        self.task_filters: list[dict] = []
        self.log_requests: list[tuple] = []

    def _entry(self):
        return self.script[min(self.poll, len(self.script) - 1)]

    def _count(self, name):
        self.calls[name] += 1
        self.calls_by_poll[-1][name] += 1

    def services(self, filters=None):
        self.poll += 1
        self.calls_by_poll.append(Counter())
        self._count("services")
        found = copy.deepcopy(self._entry()[0])
        filters = filters or {}
        if "label" in filters:
            key, _, value = filters["label"].partition("=")
            found = [s for s in found if s["Spec"]["Labels"].get(key) == value]
        if "id" in filters:
            found = [s for s in found if s["ID"] in filters["id"]]
        return found

    def tasks(self, filters=None):
        self._count("tasks")
        self.task_filters.append(filters)
        wanted = set((filters or {}).get("service", []))
        return [copy.deepcopy(t) for t in self._entry()[1] if t["ServiceID"] in wanted]

    def nodes(self, filters=None):
        self._count("nodes")
        return copy.deepcopy(self.node_list)

    def service_logs(self, service, **kwargs):
        self.log_requests.append((service, kwargs))
        lines = []
        for tid, body in self.logs.items():
            attrs = f"com.docker.swarm.node.id=n1,com.docker.swarm.service.id={service}," \
                    f"com.docker.swarm.task.id={tid}"
            lines += [f"{attrs} {ln}\n".encode() for ln in body[-kwargs.get('tail', 20):]]
        return iter(lines)
