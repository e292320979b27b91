"""Service commands for operators: ps (tasks with node, state, error), logs (through the Engine
API, each line prefixed by task and node, optionally followed) and scale (watched like a deploy,
same outcomes and exit codes, recorded on the service so the next deploy's plan shows the drift).

Functions take an EngineAPI (provision/engine_api/adapter.py or a fake with its methods) and return typed
results; nothing here prints. Output of logs goes through a callback, one line at a time.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

from provision.base.errors import InputError
from stacks.watch import task_reasons as tr
from stacks.watch.outcomes import WatchReport

STACK_LABEL = "com.docker.stack.namespace"
SCALED_LABEL = "com.swarmsmith.scaled"     # "<replicas> <utc time>": a scale outside the files


# --- finding services -----------------------------------------------------------------

def resolve_services(api, target: str) -> tuple[str, list[dict]]:
    """(stack or "", services) for a STACK name or a SERVICE name (full, or stack_service)."""
    found = api.services()
    stack = [s for s in found if (s["Spec"].get("Labels") or {}).get(STACK_LABEL) == target]
    if stack:
        return target, sorted(stack, key=lambda s: s["Spec"]["Name"])
    one = [s for s in found if s["Spec"]["Name"] == target or s["ID"] == target]
    if one:
        return (one[0]["Spec"].get("Labels") or {}).get(STACK_LABEL, ""), one
    names = ", ".join(sorted(s["Spec"]["Name"] for s in found)) or "none"
    raise InputError(f"{target}: no stack or service of that name (services: {names})")


def one_service(api, name: str) -> dict:
    stack, services = resolve_services(api, name)
    if len(services) != 1 or services[0]["Spec"]["Name"] != name and services[0]["ID"] != name:
        raise InputError(f"{name}: a stack, not a service; name one of "
                         f"{', '.join(s['Spec']['Name'] for s in services)}")
    return services[0]


# --- ps -------------------------------------------------------------------------------

@dataclass
class TaskRow:
    task: str           # web.2 / web.<node id>
    id: str
    service: str
    node: str
    desired: str
    state: str
    since: str
    error: str

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def ps(api, target: str, *, all_tasks: bool = False, node_names=None) -> list[TaskRow]:
    """Tasks of a stack or service, newest first per slot. Without all_tasks: the tasks swarm
    still wants, and the latest ended one of each slot whose current task is not running (the
    error an operator looks for). `node_names` (provision.engine_api.node_names.NodeNames): a node is shown
    as `m1 (hostname)` where the cluster file names it otherwise."""
    from provision.engine_api.node_names import NodeNames
    from provision.swarm.status import task_name
    _, services = resolve_services(api, target)
    names = {s["ID"]: s["Spec"]["Name"] for s in services}
    listed = api.nodes()
    shown = (node_names or NodeNames()).bind(listed)
    nodes = {n["ID"]: shown.show(n) for n in listed}
    tasks = api.tasks(filters={"service": list(names)})
    slots: dict[tuple, list[dict]] = {}
    for t in tasks:
        key = (t["ServiceID"], t.get("Slot") or t.get("NodeID"))
        slots.setdefault(key, []).append(t)
    rows = []
    for key in sorted(slots, key=lambda k: (names[k[0]], str(k[1]))):
        ts = sorted(slots[key], key=tr.age_key, reverse=True)
        if not all_tasks:
            live = [t for t in ts if tr.is_live(t)]
            ended = [t for t in ts if not tr.is_live(t)]
            keep = live[:1]
            if not live or tr.state(live[0]) != "running":
                keep += ended[:1]
            ts = keep
        for t in ts:
            st = t.get("Status") or {}
            rows.append(TaskRow(task_name(names[t["ServiceID"]], t), t["ID"], names[t["ServiceID"]],
                                nodes.get(t.get("NodeID"), (t.get("NodeID") or "-")[:12]),
                                t.get("DesiredState", ""), st.get("State", ""),
                                st.get("Timestamp", ""), tr.describe(t) or st.get("Err", "")))
    return rows


# --- logs -----------------------------------------------------------------------------

@dataclass
class LogOptions:
    since: str | None = None        # "10m", "2h", "30s", or an RFC 3339 / unix time
    tail: int | None = None         # the last N lines of the service, all tasks merged by time
    follow: bool = False
    timestamps: bool = False


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def since_epoch(since: str | None, now: float) -> int:
    """--since as a unix time: a duration back from now, a unix time, or an RFC 3339 time."""
    if not since:
        return 0
    m = _DURATION.match(since)
    if m:
        return int(now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    if since.isdigit():
        return int(since)
    try:
        return int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise InputError(f"--since {since}: expected a duration (30s, 10m, 2h, 1d), a unix "
                         "time or an RFC 3339 time") from None


def logs(api, service_name: str, opts: LogOptions, emit: Callable[[str], None], *,
         now: Callable[[], float] = time.time) -> int:
    """Stream a service's logs to `emit`, one line at a time, each as `task@node | message`.
    Returns the number of lines emitted (follow: runs until the stream ends or is interrupted).

    With a tail, the engine's answer (the last N lines of each task) is merged by time and cut
    to the last N lines of the service; a follow then asks for the lines since the last one."""
    svc = one_service(api, service_name)
    name = svc["Spec"]["Name"]
    nodes = {n["ID"]: (n.get("Description") or {}).get("Hostname", n["ID"][:12])
             for n in api.nodes()}
    tasks = {t["ID"]: t for t in api.tasks(filters={"service": [svc["ID"]]})}
    tty = bool(((svc["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("TTY"))

    def read(**kw):
        stream = api.service_logs(svc["ID"], details=True, stdout=True, stderr=True,
                                  is_tty=tty, **kw)
        return _lines([stream] if isinstance(stream, (bytes, str)) else stream)

    def show(line: str) -> None:
        emit(prefix_line(line, name, tasks, nodes, api, svc["ID"]))

    since = since_epoch(opts.since, now())
    if opts.tail is None:
        count = 0
        for line in read(follow=opts.follow, since=since, timestamps=opts.timestamps, tail="all"):
            show(line)
            count += 1
        return count
    asked = now()
    stamped = sorted(((_stamp(line), line) for line in read(follow=False, since=since,
                                                            timestamps=True, tail=opts.tail)),
                     key=lambda pair: pair[0])
    last = stamped[-opts.tail:] if opts.tail else []
    for _, line in last:
        show(line if opts.timestamps else _unstamped(line))
    if not opts.follow:
        return len(last)
    after = _epoch(last[-1][0]) if last else asked
    shown = {line for key, line in last if key == last[-1][0]} if last else set()
    count = len(last)
    for line in read(follow=True, since=after, timestamps=True, tail="all"):
        if last and (_stamp(line) < last[-1][0] or line in shown):
            continue          # from before the tail's last line, or that line itself
        show(line if opts.timestamps else _unstamped(line))
        count += 1
    return count


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)? ")


def _stamp(line: str) -> tuple[str, str]:
    """A sortable key of a log line's leading RFC 3339 time (the engine's own clock, UTC)."""
    m = _STAMP.match(line)
    return (m.group(1), (m.group(2) or "").ljust(9, "0")) if m else ("", "")


def _unstamped(line: str) -> str:
    m = _STAMP.match(line)
    return line[m.end():] if m else line


def _epoch(key: tuple[str, str]) -> float:
    whole = datetime.strptime(key[0], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return whole.timestamp() + int(key[1] or 0) / 1e9


def _lines(chunks: Iterable) -> Iterable[str]:
    buf = ""
    for c in chunks:
        buf += c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            yield line
    if buf:
        yield buf


def prefix_line(raw: str, service: str, tasks: dict, nodes: dict, api=None,
                service_id: str = "") -> str:
    """`web.2@node-1 | message` from a details=True log line (timestamps stay in front of the
    message when asked for). A task started after the stream opened is looked up once."""
    from provision.swarm.status import task_name
    ts = ""
    head, sep, rest = raw.partition(" ")
    if re.match(r"^\d{4}-\d\d-\d\dT", head):      # timestamps=True puts the time first
        ts, raw = head + " ", rest
    tid, message = tr.split_log_line(raw)
    attrs = dict(p.partition("=")[::2] for p in raw.partition(" ")[0].split(",")) if tid else {}
    if tid and tid not in tasks and api is not None:
        for t in api.tasks(filters={"service": [service_id]}):
            tasks.setdefault(t["ID"], t)
    t = tasks.get(tid or "")
    label = task_name(service, t) if t else (f"{service}.{tid[:12]}" if tid else service)
    node = nodes.get(attrs.get("com.docker.swarm.node.id", "")) or \
        nodes.get((t or {}).get("NodeID", ""), "?")
    return f"{label}@{node} | {ts}{message}"


# --- scale ----------------------------------------------------------------------------

@dataclass
class ScaleResult:
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (old, new)
    unchanged: list[str] = field(default_factory=list)
    report: WatchReport | None = None
    stack: str = ""

    @property
    def exit_code(self) -> int:
        return self.report.exit_code if self.report else 0

    def to_dict(self) -> dict:
        return {"changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()},
                "unchanged": self.unchanged,
                "watch": self.report.to_dict() if self.report else None,
                "exit_code": self.exit_code}


def parse_scale_args(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, sep, num = item.partition("=")
        if not sep or not name or not num.isdigit():
            raise InputError(f"{item}: expected SERVICE=REPLICAS with REPLICAS a whole number")
        n = int(num)
        if n > 10000:
            raise InputError(f"{item}: {n} replicas is more than swarmsmith accepts (10000)")
        out[name] = n
    return out


def plan_scale(api, wanted: dict[str, int]) -> tuple[list[tuple[dict, int]], list[str], str]:
    """Validate before changing anything: every service exists and is replicated; one stack."""
    todo, same, stacks = [], [], set()
    for name, n in wanted.items():
        svc = one_service(api, name)
        mode = svc["Spec"].get("Mode") or {}
        if "Replicated" not in mode:
            raise InputError(f"{name}: a {next(iter(mode), 'unknown').lower()} service cannot be "
                             "scaled (only replicated services have a replica count)")
        stacks.add((svc["Spec"].get("Labels") or {}).get(STACK_LABEL, ""))
        if mode["Replicated"].get("Replicas", 1) == n:
            same.append(svc["Spec"]["Name"])
        else:
            todo.append((svc, n))
    if len(stacks) > 1:
        raise InputError("scale services of one stack at a time (its lock is taken): "
                         + ", ".join(sorted(s or "(no stack)" for s in stacks)))
    return todo, same, next(iter(stacks), "")


def scaled_spec(svc: dict, n: int, when: str) -> dict:
    spec = {**svc["Spec"]}
    spec["Mode"] = {"Replicated": {**spec["Mode"]["Replicated"], "Replicas": n}}
    spec["Labels"] = {**(spec.get("Labels") or {}), SCALED_LABEL: f"{n} {when}"}
    return spec


def scale(api, todo: list[tuple[dict, int]], *, stack: str = "", watch: bool = True,
          utcnow: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
          **watch_kwargs) -> ScaleResult:
    """Set the replica counts and watch the changed services (watch_kwargs go to
    stacks.watch.watch_services: policy, on_progress, log_fetcher, clock, sleep)."""
    from stacks.watch.watcher import watch_services
    res = ScaleResult(stack=stack)
    when = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    baseline = {}
    for svc, n in todo:
        fresh = api.service(svc["ID"])
        baseline[svc["ID"]] = fresh["Version"]["Index"]
        old = fresh["Spec"]["Mode"]["Replicated"].get("Replicas", 1)
        api.update_service(fresh["ID"], fresh["Version"]["Index"], scaled_spec(fresh, n, when))
        res.changed[fresh["Spec"]["Name"]] = (old, n)
    if watch and todo:
        res.report = watch_services(api, [s["ID"] for s, _ in todo], stack=stack,
                                    baseline=baseline, **watch_kwargs)
    return res


@dataclass
class ScaleOptions:
    timeout: float = 300          # seconds to wait for the services (a timed-out watch: exit 12)
    watch: bool = True            # False: set the counts and return
    lock_wait: float = 0          # seconds to wait for the stack's lock (exit 4 after)


def scale_services(cluster_file: str | None, wanted: dict[str, int],
                   options: ScaleOptions | None = None, *,
                   on_progress: Callable[[object], None] | None = None) -> ScaleResult:
    """Set replica counts (parse_scale_args gives `wanted`) under the stack's lock and watch
    them like a deploy. Progress: WatchStarted, WatchProgress, WatchFinished (stacks/events.py)
    and OperationWarning. The scale goes to the stack's audit history like a deploy's."""
    import contextlib

    from inventory.clusterfile import find
    from provision.engine_api.access import connect
    from provision.swarm.lock import SwarmLock
    from stacks.events import Notice, WatchFinished, WatchProgress, WatchStarted, emit
    from stacks.watch.watcher import WatchPolicy
    opts = options or ScaleOptions()
    with connect(find(cluster_file)) as m:
        todo, same, stack = plan_scale(m.api, wanted)
        kwargs = {"policy": WatchPolicy(timeout=opts.timeout), "watch": opts.watch}
        # taken even when every count is already right, as deploy does: a re-run after a
        # killed scale (whose update went through) clears that run's dead lock
        lock = SwarmLock(m.api.api, stack, ttl=max(1800, 2 * opts.timeout + 300),
                         wait=opts.lock_wait, notify=lambda line: emit(on_progress, Notice(line))
                         ) if stack else contextlib.nullcontext()
        with lock:
            if stack and todo:
                todo, same, _ = plan_scale(m.api, wanted)    # counts read under the lock
            if on_progress is None or not todo or not opts.watch:
                res = scale(m.api, todo, stack=stack, **kwargs)
            else:
                emit(on_progress, WatchStarted(stack, [s["Spec"]["Name"] for s, _ in todo]))
                try:
                    res = scale(m.api, todo, stack=stack,
                                on_progress=lambda r: emit(on_progress, WatchProgress(r)),
                                **kwargs)
                finally:
                    emit(on_progress, WatchFinished())
        res.unchanged = same
        _audit_scale(cluster_file, stack, res, m.api.api, on_progress)
    return res


def _audit_scale(cluster_file: str | None, stack: str, res: ScaleResult, api,
                 on_progress) -> None:
    """To the swarm, and audit.jsonl when the state folder exists."""
    from provision.base.clusters import state_path_if_any
    from provision.base.progress import OperationWarning, emit
    from stacks.operations.audit import audit_record, keep_record
    if not res.changed:
        return
    rec = audit_record("scale", stack or "-", res.report,
                       replicas={k: v[1] for k, v in res.changed.items()}, phase="end")
    rec["exit_code"] = res.exit_code
    keep_record(api, state_path_if_any(cluster_file), rec,
                lambda msg: emit(on_progress, OperationWarning(msg)))


def scaled_note(live_spec: dict) -> str:
    """For the deploy plan: the drift a `scale` left on a service, or ""."""
    mark = (live_spec.get("Labels") or {}).get(SCALED_LABEL)
    if not mark:
        return ""
    n, _, when = mark.partition(" ")
    return f"scaled by hand to {n} replicas at {when} (swarmsmith scale); this deploy sets the files' count"
