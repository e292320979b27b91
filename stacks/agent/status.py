"""The agent's last reconcile, kept in the swarm so `agent status` reads it from any machine
with manager access: one small config per reconcile (`swarmsmith-agent-status-<time>`, the
newest few kept), like the audit history. It holds commits, times, outcomes and drift: never
a key, a password or the contents of a secret (the repository URL is checked to carry no
password when the cluster file is read, and userinfo is cut from it here anyway)."""
from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timezone

from provision.engine_api.adapter import as_engine

STATUS_PREFIX = "swarmsmith-agent-status-"
L_STATUS = "com.swarmsmith.agent.status"
KEEP = 3


def utc_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_url(url: str) -> str:
    """A repository URL without any user:password part of an https URL."""
    return re.sub(r"^(https?://)[^/@]*@", r"\1", url or "")


def write_status(api, status: dict, keep: int = KEEP) -> str:
    api = as_engine(api)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    name = f"{STATUS_PREFIX}{stamp}{os.urandom(2).hex()}"
    data = json.dumps(status, sort_keys=True, default=str).encode()
    cid = api.add_config(name, data, {L_STATUS: "1"})
    for old in _entries(api)[:-keep] if keep else []:
        try:
            api.remove_config(old["ID"], old["Spec"]["Name"])
        except Exception:
            pass    # pruning is best effort; the newest is what counts
    return cid


def _entries(api) -> list[dict]:
    out = [c for c in api.configs({"label": [L_STATUS]})
           if ((c.get("Spec") or {}).get("Name") or "").startswith(STATUS_PREFIX)]
    return sorted(out, key=lambda c: c["Spec"]["Name"])


def read_status(api) -> dict | None:
    """The newest status the agent wrote (None: none yet)."""
    api = as_engine(api)
    for c in reversed(_entries(api)):
        data = (c.get("Spec") or {}).get("Data")
        if data is None:
            data = (api.config(c["ID"]).get("Spec") or {}).get("Data", "")
        try:
            raw = data if isinstance(data, (bytes, bytearray)) else base64.b64decode(data)
            out = json.loads(raw)
        except ValueError:
            continue
        if isinstance(out, dict):
            return out
    return None


def remove_statuses(api) -> list[str]:
    api = as_engine(api)
    names = []
    for c in _entries(api):
        api.remove_config(c["ID"], c["Spec"]["Name"])
        names.append(c["Spec"]["Name"])
    return names
