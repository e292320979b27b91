"""Roll services of a stack back to their previous spec, then watch them.

docker-py 7.1's `update_service` has no rollback parameter, so the request is
made the way the docker CLI makes it: POST /services/{id}/update with
`?version=N&rollback=previous` and the current spec as body; swarm swaps in
PreviousSpec, sets UpdateStatus to rollback_started and rolls the tasks back
with the service's RollbackConfig.  Only services with a PreviousSpec that
differs from their spec are touched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from provision.errors import EXIT_OK, InputError, SwarmsmithError
from stacks.watch.outcomes import WatchReport
from stacks.watch.watcher import _short, stack_services, watch_services


@dataclass
class RollbackResult:
    requested: list[str] = field(default_factory=list)      # service names rolled back
    skipped: dict[str, str] = field(default_factory=dict)   # name -> why not
    report: WatchReport | None = None

    @property
    def exit_code(self) -> int:
        return self.report.exit_code if self.report else EXIT_OK

    def to_dict(self) -> dict:
        return {"requested": self.requested, "skipped": self.skipped,
                "watch": self.report.to_dict() if self.report else None,
                "exit_code": self.exit_code}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_rollback(found: list[dict], stack: str, names=None) -> tuple[list[dict], dict[str, str]]:
    """Pick the services to roll back: (services, {name: reason skipped})."""
    wanted = set(names or ())
    chosen, skipped = [], {}
    seen = set()
    for s in sorted(found, key=lambda s: s["Spec"]["Name"]):
        name = s["Spec"]["Name"]
        if wanted and not {name, _short(name, stack)} & wanted:
            continue
        seen |= {name, _short(name, stack)}
        prev = s.get("PreviousSpec")
        if not prev:
            skipped[name] = "no previous spec"
        elif _same(prev, s.get("Spec")):
            skipped[name] = "previous spec is the same as the current one"
        else:
            chosen.append(s)
    missing = sorted(wanted - seen)
    if missing:
        raise InputError(f"stack {stack}: no service named {', '.join(missing)}")
    return chosen, skipped


def request_rollback(api, service: dict, headers: dict | None = None) -> dict:
    """One rollback request (docker.APIClient); retried once if the version moved.
    `headers`: the previous image's registry credentials (X-Registry-Auth), if any."""
    for attempt in (1, 2):
        url = api._url("/services/{0}/update", service["ID"])
        try:
            extra = {"headers": headers} if headers else {}
            resp = api._post_json(url, data=service["Spec"],
                                  params={"version": service["Version"]["Index"],
                                          "rollback": "previous"}, **extra)
            return api._result(resp, json=True)
        except Exception as exc:
            if attempt == 1 and "out of sequence" in str(exc):
                service = api.inspect_service(service["ID"])
                continue
            raise SwarmsmithError(f"rollback of {service['Spec']['Name']} refused: {exc}") from exc
    raise AssertionError("unreachable")


def rollback_services(api, stack: str, services=None, *, watch: bool = True,
                      auth_headers=None, **watch_kwargs) -> RollbackResult:
    """Roll back `services` of `stack` (names short or full; default: every service
    that has a previous spec) and watch them.  A completed rollback is success
    here (allow_rollback=True): exit 0; paused or failed 10; timed out 12.
    watch_kwargs go to watch_services (policy, on_progress, log_fetcher, clock, sleep).
    """
    chosen, skipped = plan_rollback(stack_services(api, stack), stack, services)
    result = RollbackResult(skipped=skipped)
    for s in chosen:
        prev_image = ((s.get("PreviousSpec") or {}).get("TaskTemplate") or {}).get(
            "ContainerSpec", {}).get("Image", "")
        request_rollback(api, s, auth_headers(prev_image) if auth_headers else None)
        result.requested.append(s["Spec"]["Name"])
    if watch and chosen:
        watch_kwargs.setdefault("allow_rollback", True)
        result.report = watch_services(api, [s["ID"] for s in chosen], stack=stack,
                                       **watch_kwargs)
    return result


def run_rollback(args, *, api=None, out=None) -> int:
    """`swarmsmith rollback [--cluster F] STACK [SERVICE...]` under the stack's lock."""
    import sys

    from stacks.operations.lock import SwarmLock
    from stacks.compose.validate import validate_stack_name
    from stacks.watch.watcher import WatchPolicy
    import time
    t0 = time.monotonic()
    out = out or sys.stdout
    validate_stack_name(args.stack)
    auth_headers = None
    if api is None:
        from stacks.operations.deploy import cluster_engine
        engine = cluster_engine(args)
        api, auth_headers = engine.api, engine.auth_headers
    kwargs_auth = {"auth_headers": auth_headers}
    as_json = getattr(args, "json", False)
    timeout = getattr(args, "timeout", None) or 300
    kwargs = {"policy": WatchPolicy(timeout=timeout)}
    renderer = None
    if not as_json:
        from stacks.watch.render import progress_renderer
        renderer = progress_renderer(sys.stderr)
    with SwarmLock(api, args.stack, ttl=getattr(args, "lock_ttl", None) or max(1800, 2 * timeout + 300),
                   wait=getattr(args, "lock_wait", 0) or 0,
                   notify=lambda line: print(line, file=sys.stderr, flush=True)):
        if renderer is not None:
            with renderer as show:
                result = rollback_services(api, args.stack, args.services or None,
                                           on_progress=show, **kwargs_auth, **kwargs)
        else:
            result = rollback_services(api, args.stack, args.services or None,
                                       **kwargs_auth, **kwargs)
    _audit_rollback(args, result, api, time.monotonic() - t0)
    if as_json:
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
    else:
        for name in result.requested:
            print(f"  rollback requested: {name}", file=out)
        for name, why in sorted(result.skipped.items()):
            print(f"  skipped {name}: {why}", file=out)
        if result.report is not None:
            print(result.report.summary(), file=out)
        elif not result.requested:
            print(f"stack {args.stack}: nothing to roll back", file=out)
    return result.exit_code


def _audit_rollback(args, result: RollbackResult, api=None, seconds: float | None = None) -> None:
    import sys

    from stacks.operations.deploy import _state_path
    from stacks.operations.audit import audit_record, keep_record, live_images

    def warn(msg):
        print(f"warning: {msg}", file=sys.stderr)
    try:
        images = live_images(api, args.stack) if api is not None else {}
    except Exception:
        images = {}
    rec = audit_record("rollback", args.stack, result.report, requested=result.requested,
                       skipped=result.skipped, images=images, phase="end")
    rec["exit_code"] = result.exit_code
    if seconds is not None:
        rec["seconds"] = round(seconds, 2)
    keep_record(api, _state_path(args), rec, warn)
