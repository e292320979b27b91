"""Audit trail: one record per deploy/redeploy/rollback run.

Kept in the swarm, one small config per record (append_audit_swarm, the last
KEEP per stack), so every machine that deploys appends to the same history and
`swarmsmith audit` reads it from anywhere (read_audit_swarm).  A copy goes to
`audit.jsonl` beside the inventory when that folder exists (append_audit).
Records are scrubbed: values under keys that look like secrets are replaced by
"***" before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import datetime, timezone

from provision.engine_api.adapter import as_engine

SECRET_HINTS = ("password", "passwd", "secret", "token", "auth", "credential", "apikey",
                "api_key", "private_key")
AUDIT_PREFIX = "swarmsmith-audit-"
L_AUDIT = "com.swarmsmith.audit.stack"
KEEP = 100
# where a run came from, when a CI system says so (values are URLs or ids, never secrets)
CI_VARS = ("CI_JOB_URL", "BUILD_URL", "GITHUB_RUN_ID", "GITHUB_REPOSITORY", "CI_PIPELINE_ID")


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
    from provision.swarm.lock import default_owner

    import socket
    rec = {"ts": _utc_now(), "command": command, "stack": stack, "by": default_owner(),
           "from": socket.gethostname()}
    ci = {k: os.environ[k] for k in CI_VARS if os.environ.get(k)}
    if ci:
        rec["ci"] = ci
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


def append_audit_swarm(api, stack: str, record: dict, keep: int = KEEP) -> str:
    """Store one entry as a swarm config (readable with `docker config inspect`); prune old ones."""
    data = _line(record)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    tag = stack if len(AUDIT_PREFIX + stack) + 26 <= 64 else \
        hashlib.sha256(stack.encode()).hexdigest()[:12]
    name = f"{AUDIT_PREFIX}{tag}-{stamp}{os.urandom(2).hex()}"
    api = as_engine(api)
    cid = api.add_config(name, data, {L_AUDIT: stack})
    entries = [c for c in api.configs({"label": [f"{L_AUDIT}={stack}"]})
               if ((c.get("Spec") or {}).get("Labels") or {}).get(L_AUDIT) == stack]
    entries.sort(key=lambda c: c["Spec"]["Name"])
    for old in entries[:-keep] if keep else []:
        try:
            api.remove_config(old["ID"], old["Spec"]["Name"])
        except Exception:
            pass  # pruning is best effort
    return cid


def read_audit_swarm(api, stack: str | None = None, since: str | None = None) -> list[dict]:
    """The records kept in the swarm (one stack, or all), oldest first; `since`: an ISO time
    (records at or after it)."""
    import base64
    since = parse_since(since) if since else None
    filters = {"label": [f"{L_AUDIT}={stack}" if stack else L_AUDIT]}
    out = []
    api = as_engine(api)
    for c in api.configs(filters):
        spec = c.get("Spec") or {}
        if not (spec.get("Name") or "").startswith(AUDIT_PREFIX):
            continue
        data = spec.get("Data")
        if data is None:
            data = (api.config(c["ID"]).get("Spec") or {}).get("Data", "")
        raw = data if isinstance(data, (bytes, bytearray)) else base64.b64decode(data)
        try:
            rec = json.loads(raw)
        except ValueError:
            continue       # not ours after all, or damaged: skip it rather than fail the listing
        if isinstance(rec, dict) and (since is None or str(rec.get("ts", "")) >= since):
            out.append(rec)
    return sorted(out, key=lambda r: str(r.get("ts", "")))


def audit_table(records: list[dict]) -> list[str]:
    """The text table `swarmsmith audit` prints: a header, then one line per record. COMMIT is
    the short id of the commit a git agent deployed, "-" for runs that name none."""
    lines = [f"{'TIME (UTC)':<20} {'STACK':<14} {'COMMAND':<9} {'PHASE':<7} {'EXIT':>4} "
             f"{'SECS':>7} {'CHANGES':>7}  {'COMMIT':<12}  BY"]
    for r in records:
        changes = r.get("changes", r.get("requested", []))
        code = r.get("exit_code")
        commit = str(r.get("commit") or "-")[:12]
        lines.append(f"{str(r.get('ts', ''))[:19].replace('T', ' '):<20} "
                     f"{str(r.get('stack', '')):<14} {str(r.get('command', '')):<9} "
                     f"{str(r.get('phase', '-')):<7} {'-' if code is None else code:>4} "
                     f"{str(r.get('seconds', '-')):>7} {len(changes or []):>7}  {commit:<12}  "
                     f"{r.get('by', '?')} from {r.get('from', '?')}")
    return lines


def parse_since(text: str, now: datetime | None = None) -> str:
    """`2h`, `30m`, `7d`, `90s` or an ISO date/time -> the ISO UTC form records carry.
    ValueError on anything else."""
    import re
    from datetime import timedelta
    now = now or datetime.now(timezone.utc)
    m = re.fullmatch(r"(\d{1,6})([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        when = now - timedelta(**{unit: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f'expected a duration like 2h, 30m, 7d or an ISO time, got "{text}"') \
                from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def live_images(api, stack: str) -> dict[str, str]:
    """service -> the image swarm runs now (with the digest swarm pinned, when it could)."""
    from stacks.specs.convert import STACK_LABEL
    out = {}
    for s in as_engine(api).services({"label": f"{STACK_LABEL}={stack}"}):
        spec = s.get("Spec") or {}
        out[spec.get("Name", "?")] = ((spec.get("TaskTemplate") or {}).get("ContainerSpec")
                                      or {}).get("Image", "")
    return out


def keep_record(api, state_path: str | None, record: dict, warn) -> None:
    """Append a run's record to the swarm's history and, when the local state folder exists, to
    its audit.jsonl. The run itself is over: a failure here is a warning, never its outcome."""
    if api is not None:
        try:
            append_audit_swarm(api, record["stack"], record)
        except Exception as e:
            warn(f"could not append to the audit history in the swarm: {e}")
    if state_path and os.path.isdir(state_path):
        try:
            append_audit(os.path.join(state_path, "audit.jsonl"), record)
        except OSError as e:
            warn(f"could not write {state_path}/audit.jsonl: {e}")
