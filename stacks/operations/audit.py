"""Audit trail: one JSON line per deploy/redeploy/rollback run.

Kept beside the inventory as `audit.jsonl` (append_audit), and optionally in
the swarm as one small config per entry (append_audit_swarm, pruned to the last
`keep`).  Records are scrubbed: values under keys that look like secrets are
replaced by "***" before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone

SECRET_HINTS = ("password", "passwd", "secret", "token", "auth", "credential", "apikey",
                "api_key", "private_key")
AUDIT_PREFIX = "swarmsmith-audit-"
L_AUDIT = "com.swarmsmith.audit.stack"


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scrub(value, key: str = ""):
    """A copy of `value` with secret-looking keys masked, recursively."""
    if key and any(h in key.lower().replace("-", "_") for h in SECRET_HINTS):
        return "***"
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def audit_record(command: str, stack: str, report=None, **extra) -> dict:
    """A record from a run: command, stack, who, outcome per service, exit code."""
    from stacks.operations.lock import default_owner

    rec = {"ts": _utc_now(), "command": command, "stack": stack, "by": default_owner()}
    if report is not None:
        rec["exit_code"] = report.exit_code
        rec["seconds"] = round(report.seconds, 2)
        rec["services"] = {s.name: {"outcome": str(s.outcome) if s.outcome else None,
                                    "reason": s.reason} for s in report.services}
    rec.update(extra)
    return rec


def _line(record: dict) -> bytes:
    rec = scrub(dict(record))
    rec.setdefault("ts", _utc_now())
    return (json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode()


def append_audit(path, record: dict) -> None:
    """Append one line with O_APPEND (one write: lines from parallel runs do not interleave)."""
    data = _line(record)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_audit(path, limit: int | None = None) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.strip()]
    except FileNotFoundError:
        return []
    lines = lines[-limit:] if limit else lines
    return [json.loads(ln) for ln in lines]


def append_audit_swarm(api, stack: str, record: dict, keep: int = 50) -> str:
    """Store one entry as a swarm config (readable with `docker config inspect`); prune old ones."""
    data = _line(record)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    tag = stack if len(AUDIT_PREFIX + stack) + 26 <= 64 else \
        hashlib.sha256(stack.encode()).hexdigest()[:12]
    name = f"{AUDIT_PREFIX}{tag}-{stamp}{os.urandom(2).hex()}"
    cid = api.create_config(name, data, labels={L_AUDIT: stack})["ID"]
    entries = [c for c in api.configs(filters={"label": [f"{L_AUDIT}={stack}"]})
               if ((c.get("Spec") or {}).get("Labels") or {}).get(L_AUDIT) == stack]
    entries.sort(key=lambda c: c["Spec"]["Name"])
    for old in entries[:-keep] if keep else []:
        try:
            api.remove_config(old["ID"])
        except Exception:
            pass  # pruning is best effort
    return cid
