"""`swarmsmith status` (exit 5 when degraded): nodes (engine version, manager reachability), quorum health with the
number of further manager losses it survives, services with running/desired replicas, published
ports and update state, and the tasks that are failing (error and node)."""
from __future__ import annotations

from dataclasses import dataclass

from ..engine_api.adapter import as_engine
from ..base.errors import EXIT_DEGRADED, EXIT_OK, SwarmsmithError
from ..engine_api.node_names import NodeNames, label
from .quorum import quorum_of


@dataclass
class ClusterStatus:
    """What `status --json` prints (nodes, quorum, services, failing tasks, problems)."""
    data: dict

    @property
    def nodes(self) -> list:
        return self.data["nodes"]

    @property
    def quorum(self) -> dict:
        return self.data["quorum"]

    @property
    def services(self) -> list:
        return self.data["services"]

    @property
    def problems(self) -> list:
        """Why the cluster is degraded; empty when it is not."""
        return self.data.get("problems") or []

    @property
    def exit_code(self) -> int:
        return EXIT_DEGRADED if self.problems else EXIT_OK

    def to_dict(self) -> dict:
        return self.data


def status(cluster_file: str, stack: str | None = None,
           accept_new_host_keys: bool = False) -> ClusterStatus:
    """Ask a reachable manager of the cluster (host key checked against what pins it); when
    none answers swarm calls, what SSH showed of each (quorum lost)."""
    from ..engine_api.access import connect
    from ..engine_api.manager import NoManagerError
    try:
        conn = connect(cluster_file, accept_new_host_keys=accept_new_host_keys)
    except NoManagerError as e:
        if e.all_unreachable:
            raise
        return ClusterStatus(unavailable(e.reasons, e.facts))
    try:
        return ClusterStatus(gather(conn.api, stack, names=conn.names))
    except SwarmsmithError as e:
        # a leader that just lost its majority answers some calls, then none
        return ClusterStatus(unavailable({conn.host.name: e.message},
                                         {conn.host.name: conn.facts}))
    finally:
        conn.close()

FAILING = ("failed", "rejected")
STACK_LABEL = "com.docker.stack.namespace"


def gather(api, stack: str | None = None, names=None) -> dict:
    """`names` (node_names.NodeNames): each node also shows the cluster file's name for it."""
    api = as_engine(api)
    raw_nodes = api.nodes()
    file_names = (names or NodeNames()).bind(raw_nodes)
    hostnames = {n["ID"]: (n.get("Description") or {}).get("Hostname", n["ID"][:12])
                 for n in raw_nodes}
    names = {n["ID"]: file_names.show(n) for n in raw_nodes}     # both, for the failing tasks
    nodes = []
    for n in raw_nodes:
        ms = n.get("ManagerStatus") or {}
        desc = n.get("Description") or {}
        nodes.append({
            "hostname": hostnames[n["ID"]], "name": file_names.name_of(n), "id": n["ID"],
            "role": n["Spec"].get("Role"), "availability": n["Spec"].get("Availability"),
            "state": n["Status"].get("State"), "addr": n["Status"].get("Addr"),
            "manager": ("leader" if ms.get("Leader") else ms.get("Reachability", "")) if ms else "",
            "engine": (desc.get("Engine") or {}).get("EngineVersion", ""),
            "labels": n["Spec"].get("Labels") or {},
        })
    q = quorum_of(raw_nodes)
    all_services = api.services()
    if stack:
        all_services = [s for s in all_services
                        if (s["Spec"].get("Labels") or {}).get(STACK_LABEL) == stack]
    ids = {s["ID"] for s in all_services}
    tasks = [t for t in api.tasks() if t.get("ServiceID") in ids]
    running: dict[str, int] = {}
    wanted: dict[str, int] = {}
    for t in tasks:
        if t.get("DesiredState", "running") != "running":
            continue
        wanted[t["ServiceID"]] = wanted.get(t["ServiceID"], 0) + 1
        if t["Status"]["State"] == "running":
            running[t["ServiceID"]] = running.get(t["ServiceID"], 0) + 1
    services = []
    for s in all_services:
        mode = s["Spec"].get("Mode", {})
        if "Replicated" in mode:
            desired = mode["Replicated"].get("Replicas", 1)
            kind = "replicated"
        elif "Global" in mode:
            desired = wanted.get(s["ID"], 0)   # one task per eligible node, as swarm decided
            kind = "global"
        else:
            kind, desired = next(iter(mode), "job"), None
        services.append({
            "name": s["Spec"]["Name"], "mode": kind, "running": running.get(s["ID"], 0),
            "desired": desired, "image": s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0],
            "stack": (s["Spec"].get("Labels") or {}).get(STACK_LABEL, ""),
            "update": (s.get("UpdateStatus") or {}).get("State", ""),
            "ports": published_ports(s),
        })
    svc_names = {s["ID"]: s["Spec"]["Name"] for s in all_services}
    st = {"nodes": sorted(nodes, key=lambda n: (n["role"] != "manager", n["hostname"])),
          "quorum": q.to_dict(),
          "services": sorted(services, key=lambda s: s["name"]),
          "failing": failing_tasks(tasks, svc_names, names, services)}
    st["problems"] = problems(st)
    return st


def problems(st: dict) -> list[str]:
    """What makes the cluster degraded (status exits 5 then, so cron can alert): quorum lost,
    a node not ready, a service with fewer running tasks than desired. A drained node is a
    choice, not a problem; neither is a job (no replica count to fall short of)."""
    out = []
    q = st["quorum"]
    if not q["ok"]:
        out.append(f"quorum lost: {q['reachable']}/{q['managers']} managers reachable")
    for n in st["nodes"]:
        if n["state"] != "ready":
            out.append(f"node {label(n.get('name', ''), n['hostname'])} is {n['state']}")
        elif n["role"] == "manager" and n["manager"] == "unreachable":
            out.append(f"manager {label(n.get('name', ''), n['hostname'])} is unreachable")
    for s in st["services"]:
        if s["desired"] is not None and s["running"] < s["desired"]:
            out.append(f"service {s['name']}: {s['running']}/{s['desired']} running")
    return out


def published_ports(service: dict) -> list[str]:
    ports = (service.get("Endpoint") or {}).get("Ports") or \
        ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
    out = []
    for p in ports:
        if not p.get("PublishedPort"):
            continue
        text = f"{p['PublishedPort']}:{p.get('TargetPort')}/{p.get('Protocol', 'tcp')}"
        if p.get("PublishMode") == "host":
            text += " (host)"
        out.append(text)
    return out


def failing_tasks(tasks: list[dict], svc_names: dict, node_names: dict, services: list[dict],
                  limit: int = 3) -> list[dict]:
    """The newest failed/rejected tasks of services that are short of replicas or updating,
    at most `limit` per service: what an operator needs to see first."""
    short = {s["name"] for s in services
             if (s["desired"] is not None and s["running"] < s["desired"])
             or s["update"] in ("paused", "rollback_started", "rollback_paused", "updating")}
    per: dict[str, list[dict]] = {}
    for t in tasks:
        name = svc_names.get(t.get("ServiceID"))
        st = t.get("Status") or {}
        if name not in short or st.get("State") not in FAILING:
            continue
        per.setdefault(name, []).append(t)
    out = []
    for name, ts in sorted(per.items()):
        ts.sort(key=lambda t: (t.get("Status") or {}).get("Timestamp", ""), reverse=True)
        for t in ts[:limit]:
            st = t["Status"]
            out.append({"service": name, "task": task_name(name, t), "id": t["ID"],
                        "node": node_names.get(t.get("NodeID"), (t.get("NodeID") or "")[:12]),
                        "state": st.get("State"),
                        "error": st.get("Err") or st.get("Message", ""),
                        "since": st.get("Timestamp", "")})
    return out


def task_name(service_name: str, task: dict) -> str:
    """`web.2` for a replicated task, `web.<node id>` for a global one (as docker service ps)."""
    slot = task.get("Slot")
    return f"{service_name}.{slot}" if slot else f"{service_name}.{(task.get('NodeID') or '')[:12]}"


def unavailable(reasons: dict[str, str], facts: dict[str, dict]) -> dict:
    """A status when no manager answers: what SSH showed of each manager."""
    return {"nodes": [{"hostname": h, "id": facts.get(h, {}).get("node_id", ""), "role": "manager",
                       "availability": "", "state": facts.get(h, {}).get("state", "unreachable"),
                       "addr": facts.get(h, {}).get("node_addr", ""), "manager": "unknown",
                       "engine": "", "labels": {}, "error": why}
                      for h, why in sorted(reasons.items())],
            "quorum": {"managers": len(reasons), "reachable": 0, "majority": len(reasons) // 2 + 1,
                       "ok": False, "state": "lost", "survives": 0},
            "services": [], "failing": [],
            "problems": [f"quorum lost: no manager answers swarm calls ({len(reasons)} tried)"],
            "error": "no manager answers swarm calls (quorum lost, engines down or swarm locked); "
                     "see `swarmsmith recover` or `swarmsmith unlock-swarm`"}
