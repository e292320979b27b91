"""Bring a ServiceSpec (ours, or one the daemon returns from `docker service
inspect`) to the *effective* form, so that two specs that make swarm do the
same thing compare equal.

What a 20.10 daemon and swarmkit add or default, and how it is undone here:
- Mode: Replicated.Replicas nil -> 1; ReplicatedJob MaxConcurrent nil -> 1,
  TotalCompletions nil -> MaxConcurrent; no Mode -> Replicated 1.
- RestartPolicy, UpdateConfig, RollbackConfig: filled with swarmkit defaults
  (any / 5s delay; parallelism 1, pause, 5s monitor, stop-first) when absent,
  and their unset fields likewise (inside a present UpdateConfig an unset
  Parallelism is 0, i.e. all at once, because the JSON omits 0).
- EndpointSpec: Mode "" -> vip; ports Protocol "" -> tcp, PublishMode "" -> ingress.
- ContainerSpec: Isolation "default", StopGracePeriod 10s, empty Privileges,
  DNSConfig {} and empty VolumeOptions mean nothing; image in familiar form.
- TaskTemplate: ForceUpdate (kept from the live service on update), Runtime
  "container", Placement.Platforms (added by image resolution), empty
  Resources/Limits/Reservations mean nothing.
- Networks: the daemon stores network IDs as Target (name given via
  `network_names`), and API < 1.29 clients put them in Spec.Networks.
- Secret/config references: IDs dropped (names compared), sorted by name.
Zero values, empty strings, lists and mappings are dropped everywhere else,
as Go's `omitempty` does; `ContainerSpec.Init: false` is kept (nil differs).
"""
from __future__ import annotations

import copy

from stacks.images.references import familiar_image

SEC = 10**9
_FILLED = ("Mode", "UpdateConfig", "RollbackConfig")


def _update_defaults(u: dict | None) -> dict:
    if u is None:
        return {"Parallelism": 1, "Delay": 0, "FailureAction": "pause", "Monitor": 5 * SEC,
                "MaxFailureRatio": 0, "Order": "stop-first"}
    return {"Parallelism": u.get("Parallelism") or 0, "Delay": u.get("Delay") or 0,
            "FailureAction": u.get("FailureAction") or "pause",
            "Monitor": u.get("Monitor") or 5 * SEC,
            "MaxFailureRatio": u.get("MaxFailureRatio") or 0,
            "Order": u.get("Order") or "stop-first"}


def _mode(m: dict | None) -> dict:
    m = m or {"Replicated": {}}
    if "Replicated" in m:
        r = (m["Replicated"] or {}).get("Replicas")
        return {"Replicated": {"Replicas": 1 if r is None else r}}
    if "ReplicatedJob" in m:
        j = m["ReplicatedJob"] or {}
        mc = j.get("MaxConcurrent")
        mc = 1 if mc is None else mc
        tc = j.get("TotalCompletions")
        return {"ReplicatedJob": {"MaxConcurrent": mc, "TotalCompletions": mc if tc is None else tc}}
    return {k: {} for k in m}


def strip_empty(v, keep_false=()):
    """Drop None, "", 0, False, [] and {} recursively (Go omitempty)."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k in keep_false and isinstance(x, bool):
                out[k] = x
                continue
            x = strip_empty(x, keep_false)
            if x not in (None, "", 0, False, [], {}) or isinstance(x, float) and x:
                out[k] = x
        return out
    if isinstance(v, list):
        return [strip_empty(x, keep_false) for x in v]
    return v


def effective_spec(spec: dict, *, network_names: dict | None = None,
                   config_names: dict | None = None) -> dict:
    s = copy.deepcopy(spec or {})
    nets = network_names or {}
    cfgs = config_names or {}
    s.pop("PreviousSpec", None)
    tt = s.setdefault("TaskTemplate", {})
    if s.get("Networks") and not tt.get("Networks"):
        tt["Networks"] = s["Networks"]
    s.pop("Networks", None)
    tt.pop("ForceUpdate", None)
    if tt.get("Runtime") in ("", "container"):
        tt.pop("Runtime")
    (tt.get("Placement") or {}).pop("Platforms", None)
    networks = []
    for n in tt.get("Networks") or []:
        n = dict(n)
        n["Target"] = nets.get(n.get("Target"), n.get("Target"))
        networks.append(n)
    tt["Networks"] = sorted(networks, key=lambda n: n["Target"] or "")
    cs = tt.setdefault("ContainerSpec", {})
    if cs.get("Image"):
        cs["Image"] = familiar_image(cs["Image"])
    if cs.get("Isolation") == "default":
        cs.pop("Isolation")
    if cs.get("StopGracePeriod") == 10 * SEC:
        cs.pop("StopGracePeriod")
    for key, id_key, name_key in (("Secrets", "SecretID", "SecretName"),
                                  ("Configs", "ConfigID", "ConfigName")):
        refs = [{k: v for k, v in r.items() if k != id_key} for r in cs.get(key) or []]
        cs[key] = sorted(refs, key=lambda r: (r.get(name_key) or "", "Runtime" in r))
    cred = ((cs.get("Privileges") or {}).get("CredentialSpec") or {})
    if cred.get("Config"):
        ref = cred["Config"]
        cred["Config"] = ref[4:-1] if ref.startswith("<id:") else cfgs.get(ref, ref)
    rp = tt.get("RestartPolicy") or {}
    tt["RestartPolicy"] = {"Condition": rp.get("Condition") or "any",
                           "Delay": 5 * SEC if rp.get("Delay") is None else rp["Delay"],
                           "MaxAttempts": rp.get("MaxAttempts") or 0,
                           "Window": rp.get("Window") or 0}
    s["Mode"] = _mode(s.get("Mode"))
    s["UpdateConfig"] = _update_defaults(s.get("UpdateConfig"))
    s["RollbackConfig"] = _update_defaults(s.get("RollbackConfig"))
    ep = s.get("EndpointSpec") or {}
    ports = [{**p, "Protocol": p.get("Protocol") or "tcp",
              "PublishMode": p.get("PublishMode") or "ingress"} for p in ep.get("Ports") or []]
    s["EndpointSpec"] = {"Mode": ep.get("Mode") or "vip",
                         "Ports": sorted(ports, key=lambda p: (
                             p.get("PublishedPort") or 0, p.get("TargetPort") or 0,
                             p["Protocol"], p["PublishMode"]))}
    filled = {k: s.pop(k) for k in _FILLED}
    restart = tt.pop("RestartPolicy")
    out = strip_empty(s, keep_false=("Init",))
    out.update(filled)
    out.setdefault("TaskTemplate", {})["RestartPolicy"] = restart
    return out
