"""swarmsmith command line: a thin layer over provision/, stacks/ and inventory/.

Heavy libraries (docker, paramiko, digitalocean, rich) are imported inside the commands so that
`swarmsmith --help` starts fast.
"""
from __future__ import annotations

import argparse
import json
import sys

from provision.errors import EXIT_FAILED, SwarmsmithError

EXIT_CODES_HELP = """exit codes:
  0  success (or nothing to change)
  1  an operation failed (remote command, API, engine)
  2  bad input (YAML, cluster file, compose file, flags); nothing was changed
  3  a host was unreachable, refused our key, or showed a changed host key
  4  another run holds the lock
  10 deploy: a service failed or was paused
  11 deploy: an update was rolled back (0 with --allow-rollback)
  12 deploy: timed out
"""


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _print_changes(changes: list[str], none_msg: str = "no changes") -> None:
    if not changes:
        print(none_msg)
    for c in changes:
        print(f"  ~ {c}")


# --- lab ------------------------------------------------------------------------------

def cmd_lab_up(args) -> int:
    from provision.lab.lab import Lab
    if args.nodes < 1:
        raise _flag_error("--nodes", "must be at least 1")
    lab = Lab(args.name)
    hosts, changes = lab.up([f"{args.name}-{i}" for i in range(1, args.nodes + 1)])
    extra = [h.name for h in lab.hosts() if h.name not in {x.name for x in hosts}]
    if args.json:
        _print_json({"changes": changes, "hosts": [_lab_host_json(h) for h in hosts]})
    else:
        _print_changes(changes, f"lab {args.name}: no changes ({len(hosts)} hosts up)")
        if extra:
            print(f"  note: the lab also has {', '.join(extra)} (not asked for; kept)")
    return 0


def _lab_host_json(h) -> dict:
    from provision.lab.lab import fingerprint
    return {"name": h.name, "public_address": h.public_address,
            "private_address": h.private_address, "user": h.user, "key_path": h.key_path,
            "host_key": fingerprint(h.host_key)}


def cmd_lab_down(args) -> int:
    from provision.lab.lab import Lab, list_labs
    names = list_labs() if args.all else [args.name]
    changes = []
    for name in names:
        changes += Lab(name).down()
    if args.json:
        _print_json({"changes": changes})
    else:
        _print_changes(changes, "no lab to remove")
    return 0


def cmd_lab_ls(args) -> int:
    from provision.lab.lab import Lab, list_labs
    names = [args.name] if args.name else list_labs()
    rows = [_lab_host_json(h) | {"lab": n} for n in names for h in Lab(n).hosts()]
    if args.json:
        _print_json([{k: v for k, v in r.items() if k != "lab"} for r in rows])
        return 0
    if not rows:
        print("no lab hosts")
        return 0
    print(f"{'LAB':<12} {'NAME':<20} {'PUBLIC':<16} {'PRIVATE':<16} HOST KEY")
    for r in rows:
        print(f"{r['lab']:<12} {r['name']:<20} {r['public_address']:<16} "
              f"{r['private_address']:<16} {r['host_key']}")
    return 0


# --- parser ---------------------------------------------------------------------------

class _FlagError(SwarmsmithError):
    exit_code = 2


def _flag_error(flag: str, msg: str) -> SwarmsmithError:
    return _FlagError(f"{flag}: {msg}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep our message format
        self.print_usage(sys.stderr)
        print(f"swarmsmith: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="swarmsmith", description="Bootstrap Docker Swarm clusters from a short "
                "YAML file and keep compose stacks deployed on them.",
                epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    lab = sub.add_parser("lab", help="local lab hosts on this machine (network namespaces)")
    lsub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", parser_class=_Parser)
    lsub.required = True
    up = lsub.add_parser("up", help="create (or repair) lab hosts; idempotent")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--name", default="lab")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_lab_up)
    down = lsub.add_parser("down", help="remove a lab and everything it made")
    down.add_argument("--name", default="lab")
    down.add_argument("--all", action="store_true", help="remove every lab on this machine")
    down.add_argument("--json", action="store_true")
    down.set_defaults(func=cmd_lab_down)
    ls = lsub.add_parser("ls", help="list lab hosts")
    ls.add_argument("--name", default=None)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_lab_ls)

    try:
        from provision import cluster_commands
        cluster_commands.add_commands(sub)
    except ImportError:
        pass
    try:
        from provision import image_commands
        image_commands.add_commands(sub)
    except ImportError:
        pass
    try:
        from stacks import commands as stack_commands
        stack_commands.add_commands(sub)
    except ImportError:
        pass
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SwarmsmithError as e:
        print(f"swarmsmith: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:   # `swarmsmith status --json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("swarmsmith: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
