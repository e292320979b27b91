"""Registers `config`, `deploy`, `plan`, `redeploy`, `rollback` and `rm` on the
swarmsmith command line.

Kept import-light (argparse only): the work happens in stacks/config_cmd.py
and stacks/apply.py, imported when a command runs, so `swarmsmith --help`
stays fast.  Flags mirror `docker stack deploy/config/rm` where they exist.
"""
from __future__ import annotations


def _compose_args(p, *, cluster: bool) -> None:
    if cluster:
        p.add_argument("--cluster", metavar="FILE", default=None,
                       help="cluster file (default: the lead's cluster lookup)")
    p.add_argument("-c", "--compose-file", dest="compose_files", action="append",
                   required=True, metavar="FILE",
                   help="compose file; repeat to merge several (later files override)")
    p.add_argument("--env-file", metavar="FILE", default=None,
                   help="variables for ${VAR} interpolation (default: .env beside the "
                        "first compose file, if any; the process environment wins)")
    p.add_argument("--strict", action="store_true",
                   help="refuse keys that swarm ignores (build, depends_on, restart, ...)")


def _deploy_args(p) -> None:
    _compose_args(p, cluster=True)
    p.add_argument("--prune", action="store_true",
                   help="remove services, secrets, configs and networks of the stack "
                        "that the files no longer have")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", action="store_true", help="print the plan (and result) as JSON")
    p.add_argument("--no-versioned-names", action="store_true",
                   help="name secrets/configs <stack>_<key> like docker stack deploy "
                        "(their content then cannot change)")
    p.add_argument("--no-update-defaults", action="store_true",
                   help="send no update_config/rollback_config where the file has none "
                        "(swarm's own defaults apply, as with docker stack deploy; "
                        "see docs/rollouts.md)")
    p.add_argument("stack", metavar="STACK")


def _lock_args(p, wait: float) -> None:
    p.add_argument("--lock-wait", type=float, default=wait,
                   help="seconds to wait for another run's lock on the stack (exit 4 after; "
                        f"default {wait:g})")
    p.add_argument("--lock-ttl", type=float, default=None,
                   help="seconds after which this run's lock counts as stale if the run "
                        "dies (default: max(1800, 2 x timeout + 300))")


def _watch_args(p, lock_wait: float = 0) -> None:
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the services to converge (exit 12 after)")
    p.add_argument("--allow-rollback", action="store_true",
                   help="a rolled-back update exits 0 instead of 11")
    p.add_argument("--detach", action="store_true",
                   help="apply and return without watching the services")
    _lock_args(p, lock_wait)


def cmd_config(args) -> int:
    from stacks.config_cmd import run_config
    return run_config(args)


def cmd_deploy(args) -> int:
    from stacks.apply import run_deploy
    return run_deploy(args)


def cmd_plan(args) -> int:
    from stacks.apply import run_plan
    return run_plan(args)


def run_plan(args) -> int:
    """Entry for other parsers' `plan -c FILE` (provision/cluster_commands.py)."""
    return cmd_plan(args)


def cmd_redeploy(args) -> int:
    from stacks.redeploy import run_redeploy
    return run_redeploy(args)


def cmd_rollback(args) -> int:
    from stacks.rollback import run_rollback
    return run_rollback(args)


def cmd_rm(args) -> int:
    from stacks.apply import run_rm
    return run_rm(args)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("config", help="print the merged, interpolated compose file "
                              "after validating it (no cluster needed)")
    _compose_args(p, cluster=False)
    p.set_defaults(func=cmd_config)

    p = subparsers.add_parser("deploy", help="deploy or update a stack: plan, apply, watch "
                              "until converged (exit codes: see swarmsmith --help)")
    _deploy_args(p)
    _watch_args(p)
    p.set_defaults(func=cmd_deploy)

    if "plan" not in subparsers.choices:  # provision/cluster_commands.py may own `plan`
        p = subparsers.add_parser("plan", help="show what deploy would change; change nothing")
        _deploy_args(p)
        p.set_defaults(func=cmd_plan, dry_run=True)

    p = subparsers.add_parser("redeploy", help="deploy again for cron/CI: image tags "
                              "re-resolved to digests (a new image behind the same tag is "
                              "rolled out), waits for the stack lock, audit line per run")
    _deploy_args(p)
    _watch_args(p, lock_wait=60)
    p.add_argument("--resolve-image", choices=("registry", "always", "never"),
                   default="registry",
                   help="which images to resolve: those naming a registry host (default), "
                        "also Docker Hub ones, or none")
    p.add_argument("--insecure-registry", action="append", metavar="HOST:PORT", default=[],
                   help="a registry spoken to over plain HTTP (repeat for several)")
    p.set_defaults(func=cmd_redeploy)

    p = subparsers.add_parser("rollback", help="roll services of a stack back to their "
                              "previous spec and watch them (default: every service that "
                              "has one)")
    p.add_argument("--cluster", metavar="FILE", default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the rollback to finish (exit 12 after)")
    _lock_args(p, 0)
    p.add_argument("stack", metavar="STACK")
    p.add_argument("services", metavar="SERVICE", nargs="*",
                   help="services to roll back (short or full names)")
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser("rm", help="remove a stack (services, networks, secrets, "
                              "configs carrying its label)")
    p.add_argument("--cluster", metavar="FILE", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("stack", metavar="STACK")
    p.set_defaults(func=cmd_rm)
