"""`swarmsmith unlock-swarm`: unlock every manager that restarted while autolock is on.

The key reaches `docker swarm unlock` on its standard input (never an argument, never logged).
"""
from __future__ import annotations

from typing import Callable

from ..remote import docker_cli
from ..base.errors import EXIT_FAILED, EXIT_OK, UnreachableError
from ..base.progress import ProgressCallback, lines_to
from .managers import host_swarm_facts, sessions_by_name
from .rotation import RotationResult


def unlock_managers(cluster_path: str, key: str, *,
                    on_progress: ProgressCallback | None = None) -> RotationResult:
    say = lines_to(on_progress)
    res = RotationResult()
    for name, (host, s) in sorted(sessions_by_name(cluster_path, "manager").items()):
        try:
            f = host_swarm_facts(s)
            if f.get("state") != "locked":
                say(f"{name}: not locked ({f.get('state')})")
                continue
            r = s.run(docker_cli.swarm_unlock(key, "unlock the swarm"), check=False)
            if r.exit_status == 0 and host_swarm_facts(s).get("state") == "active":
                res.changes.append(f"{name}: unlocked")
            else:
                res.exit_code = EXIT_FAILED
                detail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["still locked"]
                res.notes.append(f"{name}: not unlocked: {detail[0]}")
        except UnreachableError as e:
            res.notes.append(f"{name}: unreachable ({e.message})")
        finally:
            s.close()
    if res.exit_code == EXIT_OK and not res.changes:
        res.notes.append("no manager was locked")
    return res
