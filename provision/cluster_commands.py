"""CLI commands for clusters: up, plan (cluster), down. Registered by cli.py."""
from __future__ import annotations

import json
import sys

def _cluster_path(args) -> str:
    from inventory.clusterfile import find
    return getattr(args, "cluster_file", None) or find(getattr(args, "cluster", None))


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    verb = "planned changes" if result.get("dry_run") else "changes"
    changes = result.get("changes", [])
    print(f"cluster {result.get('cluster')}: " + (f"{len(changes)} {verb}" if changes else
          ("nothing to do" if result.get("dry_run") else "no changes")))
    for c in changes:
        print(f"  {'+' if result.get('dry_run') else '~'} {c}")
    nodes = result.get("nodes") or []
    if nodes and not result.get("dry_run"):
        print(f"  {'NODE':<24} {'ROLE':<8} {'ADVERTISE':<16} NODE ID")
        for n in nodes:
            print(f"  {n['name']:<24} {n['role']:<8} {n['advertise_address'] or '-':<16} "
                  f"{(n['node_id'] or '-')[:25]}")


def cmd_up(args) -> int:
    from .bootstrap import Options, up
    opts = Options(dry_run=args.dry_run, force=args.force,
                   accept_host_keys=set(args.accept_host_key or []), concurrency=args.concurrency,
                   quiet=args.json, prune=args.prune)
    _report(up(_cluster_path(args), opts), args.json)
    return 0


def cmd_plan(args) -> int:
    if getattr(args, "compose_files", None):
        # `plan -c FILE STACK`: the positional is the stack, the cluster comes from --cluster
        from stacks import commands as stack_commands
        args.stack, args.cluster_file = args.cluster_file, None
        args.dry_run = True
        return stack_commands.run_plan(args)
    from .bootstrap import Options, up
    _report(up(_cluster_path(args), Options(dry_run=True, quiet=True, prune=args.prune)),
            args.json)
    return 0


def cmd_down(args) -> int:
    from .bootstrap import Options, down
    _report(down(_cluster_path(args), Options(dry_run=args.dry_run)), args.json)
    return 0


def cmd_status(args) -> int:
    from . import status
    from .dockerapi import cluster_client
    st = status.gather(cluster_client(_cluster_path(args)))
    if args.json:
        json.dump(st, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(status.render(st))
    return 0 if st["quorum"]["ok"] else 1


def cmd_image_load(args) -> int:
    """Put the busybox test image on every node (lab and tests: nothing can be pulled)."""
    from .commands import Command
    from .dockerapi import inventory_hosts, session_for
    from .images import IMAGE_NAME, build_busybox_tar, load_image
    from .parallel import each

    tar = build_busybox_tar()
    name = args.image or IMAGE_NAME

    def load(host):
        s = session_for(host)
        try:
            def transport(_host, command, stdin):
                r = s.run(Command.shell(command, stdin=stdin.read() if stdin else None), check=False)
                return r.exit_status, r.stdout, r.stderr
            return load_image(host, tar.path, name, transport=transport, sha256=tar.sha256)
        finally:
            s.close()

    done = each(load, inventory_hosts(_cluster_path(args)))
    changes = [f"{h}: imported {name}" for h, imported in sorted(done.items()) if imported]
    if args.json:
        json.dump({"image": name, "changes": changes}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"image {name}: " + (f"{len(changes)} changes" if changes else "no changes"))
        for c in changes:
            print(f"  ~ {c}")
    return 0


def _common(p, positional: bool = True) -> None:
    if positional:
        p.add_argument("cluster_file", nargs="?", metavar="CLUSTER.yml",
                       help="cluster file (else --cluster, $SWARMSMITH_CLUSTER, ./swarmsmith.yml)")
    p.add_argument("--cluster", metavar="FILE", help="cluster file")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def add_commands(sub) -> None:
    up = sub.add_parser("up", help="bootstrap or converge the cluster (idempotent)")
    _common(up)
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.add_argument("--force", action="store_true",
                    help="take over hosts that are in another swarm (they leave it first)")
    up.add_argument("--accept-host-key", action="append", metavar="HOST",
                    help="accept a changed SSH host key for HOST (after a rebuild)")
    up.add_argument("--concurrency", type=int, default=16, help="hosts handled at once")
    up.add_argument("--prune", action="store_true",
                    help="digitalocean: destroy the cluster's droplets the file no longer asks for")
    up.set_defaults(func=cmd_up)

    plan = sub.add_parser("plan", help="show what `up` (or, with -c, `deploy`) would change")
    _common(plan)
    plan.add_argument("-c", "--compose-file", dest="compose_files", action="append",
                      metavar="FILE", help="plan a stack deploy instead (see deploy)")
    plan.add_argument("--env-file", default=None)
    plan.add_argument("--prune", action="store_true")
    plan.add_argument("--strict", action="store_true")
    plan.add_argument("--no-versioned-names", action="store_true",
                      help="name secrets/configs <stack>_<key> like docker stack deploy")
    plan.add_argument("--no-update-defaults", action="store_true",
                      help="no default update_config for services without one")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser("status", help="nodes, quorum health and services of the cluster")
    _common(status)
    status.set_defaults(func=cmd_status)

    image = sub.add_parser("image-load", help="put the tiny busybox test image on every node")
    _common(image)
    image.add_argument("--image", default=None, help="image name (default swarmsmith/busybox:1)")
    image.set_defaults(func=cmd_image_load)

    down = sub.add_parser("down", help="remove what `up` made (lab: the hosts)")
    _common(down)
    down.add_argument("--dry-run", action="store_true")
    down.set_defaults(func=cmd_down)
