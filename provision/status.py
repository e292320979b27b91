"""`swarmsmith status`: nodes with quorum health, and services with running/desired replicas."""
from __future__ import annotations


def gather(api) -> dict:
    nodes = []
    for n in api.nodes():
        ms = n.get("ManagerStatus") or {}
        nodes.append({
            "hostname": (n.get("Description") or {}).get("Hostname", n["ID"][:12]), "id": n["ID"],
            "role": n["Spec"].get("Role"), "availability": n["Spec"].get("Availability"),
            "state": n["Status"].get("State"), "addr": n["Status"].get("Addr"),
            "manager": ("leader" if ms.get("Leader") else ms.get("Reachability", "")) if ms else "",
            "labels": n["Spec"].get("Labels") or {},
        })
    managers = [n for n in nodes if n["role"] == "manager"]
    reachable = sum(1 for n in managers if n["manager"] in ("leader", "reachable"))
    tasks = api.tasks(filters={"desired-state": "running"})
    running: dict[str, int] = {}
    wanted: dict[str, int] = {}
    for t in tasks:
        wanted[t["ServiceID"]] = wanted.get(t["ServiceID"], 0) + 1
        if t["Status"]["State"] == "running":
            running[t["ServiceID"]] = running.get(t["ServiceID"], 0) + 1
    services = []
    for s in api.services():
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
            "stack": (s["Spec"].get("Labels") or {}).get("com.docker.stack.namespace", ""),
            "update": (s.get("UpdateStatus") or {}).get("State", ""),
        })
    st = {"nodes": sorted(nodes, key=lambda n: (n["role"] != "manager", n["hostname"])),
          "quorum": {"managers": len(managers), "reachable": reachable,
                     "ok": reachable > len(managers) // 2},
          "services": sorted(services, key=lambda s: s["name"])}
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
            out.append(f"node {n['hostname']} is {n['state']}")
        elif n["role"] == "manager" and n["manager"] == "unreachable":
            out.append(f"manager {n['hostname']} is unreachable")
    for s in st["services"]:
        if s["desired"] is not None and s["running"] < s["desired"]:
            out.append(f"service {s['name']}: {s['running']}/{s['desired']} running")
    return out


def render(st: dict) -> str:
    q = st["quorum"]
    lines = [f"managers: {q['reachable']}/{q['managers']} reachable "
             f"({'quorum ok' if q['ok'] else 'QUORUM LOST'})", "",
             f"{'NODE':<22} {'ROLE':<8} {'STATE':<7} {'AVAIL':<7} {'MANAGER':<10} {'ADDR':<15} LABELS"]
    for n in st["nodes"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))
        lines.append(f"{n['hostname']:<22} {n['role']:<8} {n['state']:<7} {n['availability']:<7} "
                     f"{n['manager'] or '-':<10} {n['addr']:<15} {labels}")
    lines += ["", f"{'SERVICE':<28} {'MODE':<11} {'REPLICAS':<9} {'UPDATE':<18} IMAGE"]
    for s in st["services"]:
        rep = f"{s['running']}/{s['desired']}" if s["desired"] is not None else f"{s['running']}"
        lines.append(f"{s['name']:<28} {s['mode']:<11} {rep:<9} {s['update'] or '-':<18} {s['image']}")
    if not st["services"]:
        lines.append("(no services)")
    if st.get("problems"):
        lines += ["", "DEGRADED:"] + [f"  {p}" for p in st["problems"]]
    return "\n".join(lines)
