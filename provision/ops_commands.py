"""CLI commands for day two on a cluster: node ls/drain/activate/pause/promote/demote/label/rm,
tokens rotate, ca rotate, autolock, unlock-key, unlock-swarm, backup, restore and recover.

Only parsing and rendering live here; the work is in provision/nodes.py, rotation.py, backup.py
and recover.py. Registered by cli.py; imports stay light so `swarmsmith --help` is fast.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time

from .errors import InputError, SwarmsmithError


def _cluster_path(args) -> str:
    from inventory.clusterfile import find
    return getattr(args, "cluster_file", None) or find(getattr(args, "cluster", None))


@contextlib.contextmanager
def _manager(args):
    from .managers import connect_manager
    conn = connect_manager(_cluster_path(args))
    try:
        yield conn
    finally:
        conn.close()


def _progress(args):
    if getattr(args, "json", False):
        return None
    t0 = time.monotonic()
    return lambda msg: print(f"[{time.monotonic() - t0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def _emit(args, result: dict, lines: list[str]) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for line in lines:
        print(line)


def _change_lines(res, none: str) -> list[str]:
    lines = [f"  ~ {c}" for c in res.changes] or [none]
    lines += [f"  note: {n}" for n in res.notes]
    return lines


# --- node -------------------------------------------------------------------------------

def cmd_node_ls(args) -> int:
    from .nodes import list_nodes
    from .quorum import Quorum
    with _manager(args) as m:
        out = list_nodes(m.api)
    q = out["quorum"]
    lines = [f"managers: {Quorum(q['managers'], q['reachable']).text()}", "",
             f"{'NODE':<22} {'ID':<13} {'ROLE':<8} {'STATE':<7} {'AVAIL':<7} {'MANAGER':<11} "
             f"{'ENGINE':<9} LABELS"]
    for n in out["nodes"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))
        lines.append(f"{n['hostname']:<22} {n['id'][:12]:<13} {n['role']:<8} {n['state']:<7} "
                     f"{n['availability']:<7} {n['manager'] or '-':<11} {n['engine'] or '-':<9} "
                     f"{labels}")
    _emit(args, out, lines)
    return 0


def cmd_node_drain(args) -> int:
    from .nodes import DrainOptions, drain_node
    _positive(args.timeout, "--timeout")
    with _manager(args) as m:
        res = drain_node(m.api, args.node, DrainOptions(timeout=args.timeout),
                         on_progress=_progress(args))
    lines = _change_lines(res, f"node {res.node}: already drained")
    if res.moved:
        lines.append(f"  tasks moved elsewhere: {', '.join(res.moved)}")
    for svc, why in sorted(res.unplaced.items()):
        lines.append(f"  could not be placed: {svc}: {why}")
    if res.remaining:
        lines.append(f"  timed out after {args.timeout:g} s; still on the node: "
                     f"{', '.join(res.remaining)}")
    if not res.remaining:
        lines.append(f"node {res.node}: drained, no service task runs on it")
    _emit(args, res.to_dict(), lines)
    return res.exit_code


def _simple(fn_name: str, none: str):
    def cmd(args) -> int:
        from . import nodes
        with _manager(args) as m:
            res = getattr(nodes, fn_name)(m.api, args.node, **_extra(args, fn_name))
        _emit(args, res.to_dict(), _change_lines(res, none.format(node=res.node)))
        return res.exit_code
    return cmd


def _extra(args, fn_name: str) -> dict:
    if fn_name == "promote_node":
        return {"force": args.force}
    if fn_name == "set_availability":
        return {"availability": args.availability}
    return {}


def cmd_node_label(args) -> int:
    from .nodes import label_node
    add, rm = {}, []
    for item in args.labels:
        if item.endswith("-") and "=" not in item:
            rm.append(item[:-1])
            continue
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InputError(f"label {item}: expected KEY=VALUE to add or KEY- to remove")
        add[k] = v
    with _manager(args) as m:
        res = label_node(m.api, args.node, add, rm)
    _emit(args, res.to_dict(), _change_lines(res, f"node {res.node}: labels unchanged"))
    return 0


def cmd_node_rm(args) -> int:
    from .command import Command
    from .dockerapi import inventory_hosts, session_for
    from .nodes import DrainOptions, RemoveOptions, remove_node
    _positive(args.timeout, "--timeout")
    path = _cluster_path(args)

    def leave(hostname: str) -> None:
        hosts = {h.name: h for h in inventory_hosts(path)}
        host = hosts.get(hostname)
        if host is None:
            raise SwarmsmithError(f"node {hostname}: not a host of this cluster's inventory, so "
                                  "swarmsmith cannot make it leave; use --force")
        s = session_for(host)
        try:
            s.run(Command.of("docker", "swarm", "leave", description="leave the swarm"))
        finally:
            s.close()

    with _manager(args) as m:
        res = remove_node(m.api, args.node, RemoveOptions(force=args.force,
                                                          drain=DrainOptions(timeout=args.timeout)),
                          leave=leave, on_progress=_progress(args))
    lines = _change_lines(res, f"node {res.node}: nothing to do")
    lines.append(f"  note: if the cluster file still lists {res.node}, the next `swarmsmith up` "
                 "joins it again")
    _emit(args, res.to_dict(), lines)
    return 0


def _positive(value: float, flag: str) -> None:
    if not (0 < value <= 86400):
        raise InputError(f"{flag} {value:g}: expected seconds between 0 and 86400")


# --- rotation ---------------------------------------------------------------------------

def cmd_tokens_rotate(args) -> int:
    from .rotation import rotate_tokens
    both = not (args.worker or args.manager)
    with _manager(args) as m:
        res = rotate_tokens(m.api, worker=args.worker or both, manager=args.manager or both)
    _emit(args, res.to_dict(), _change_lines(res, "no changes"))
    return 0


def cmd_ca_rotate(args) -> int:
    from .rotation import rotate_ca
    _positive(args.timeout, "--timeout")
    with _manager(args) as m:
        res = rotate_ca(m.api, timeout=args.timeout, on_progress=_progress(args))
    _emit(args, res.to_dict(), _change_lines(res, "no changes"))
    return res.exit_code


def cmd_autolock(args) -> int:
    from .rotation import set_autolock
    with _manager(args) as m:
        res = set_autolock(m.api, args.state == "on")
    _emit(args, res.to_dict(), _change_lines(res, f"autolock already {args.state}"))
    return 0


def cmd_unlock_key(args) -> int:
    from .rotation import read_unlock_key, rotate_unlock_key
    with _manager(args) as m:
        key = rotate_unlock_key(m.api) if args.rotate else read_unlock_key(m.api)
    if args.json:
        _emit(args, {"unlock_key": key, "rotated": args.rotate}, [])
        return 0
    if args.rotate:
        print("unlock key rotated; managers keep the old key valid until they restart. "
              "The new key (shown once, not stored):", file=sys.stderr)
    print(key)
    return 0


def _read_key(args) -> str:
    import os
    if args.key_file:
        try:
            with open(args.key_file) as f:
                key = f.read().strip()
        except OSError as e:
            raise InputError(f"{args.key_file}: cannot read the unlock key: {e.strerror}") from None
    elif os.environ.get("SWARMSMITH_UNLOCK_KEY"):
        key = os.environ["SWARMSMITH_UNLOCK_KEY"].strip()
    elif not sys.stdin.isatty():
        key = sys.stdin.readline().strip()
    else:
        import getpass
        key = getpass.getpass("unlock key: ").strip()
    if not key.startswith("SWMKEY-"):
        raise InputError("the unlock key should start with SWMKEY- (from `swarmsmith unlock-key`)")
    return key


def cmd_unlock(args) -> int:
    from .unlock import unlock_managers
    key = _read_key(args)
    res = unlock_managers(_cluster_path(args), key, on_progress=_progress(args))
    _emit(args, res.to_dict(), _change_lines(res, "no locked manager"))
    return res.exit_code


# --- registration -----------------------------------------------------------------------

def _common(p) -> None:
    p.add_argument("--cluster", metavar="FILE", help="cluster file")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def add_commands(sub) -> None:
    node = sub.add_parser("node", help="swarm nodes: ls, drain, activate, pause, promote, "
                          "demote, label, rm")
    nsub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND",
                               parser_class=sub._parser_class)
    nsub.required = True
    p = nsub.add_parser("ls", help="nodes with role, state, availability, engine and quorum")
    _common(p)
    p.set_defaults(func=cmd_node_ls)
    p = nsub.add_parser("drain", help="stop scheduling on a node and wait until its tasks run "
                        "elsewhere (names services that could not be placed: exit 10; "
                        "timeout: exit 12)")
    _common(p)
    p.add_argument("node", metavar="NODE", help="hostname or node ID")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait (default 300)")
    p.set_defaults(func=cmd_node_drain)
    for verb, fn, none, hlp in (
            ("activate", "set_availability", "node {node}: already active",
             "let swarm schedule tasks on the node again"),
            ("pause", "set_availability", "node {node}: already paused",
             "no new tasks on the node; running ones stay")):
        p = nsub.add_parser(verb, help=hlp)
        _common(p)
        p.add_argument("node", metavar="NODE")
        p.set_defaults(func=_simple(fn, none), availability="active" if verb == "activate"
                       else "pause")
    p = nsub.add_parser("promote", help="make a worker a manager (refused when the manager "
                        "count would become even, unless --force)")
    _common(p)
    p.add_argument("node", metavar="NODE")
    p.add_argument("--force", action="store_true", help="allow an even number of managers")
    p.set_defaults(func=_simple("promote_node", "node {node}: already a manager"))
    p = nsub.add_parser("demote", help="make a manager a worker (refused when it would lose "
                        "quorum or remove the last manager)")
    _common(p)
    p.add_argument("node", metavar="NODE")
    p.set_defaults(func=_simple("demote_node", "node {node}: already a worker"))
    p = nsub.add_parser("label", help="add (KEY=VALUE) or remove (KEY-) node labels")
    _common(p)
    p.add_argument("node", metavar="NODE")
    p.add_argument("labels", metavar="KEY=VALUE|KEY-", nargs="+")
    p.set_defaults(func=cmd_node_label)
    p = nsub.add_parser("rm", help="drain the node, make it leave, remove it (a manager is "
                        "demoted first, refused when that loses quorum); --force for a dead node")
    _common(p)
    p.add_argument("node", metavar="NODE")
    p.add_argument("--force", action="store_true",
                   help="remove a node that is down without it leaving (explains what it means)")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the drain")
    p.set_defaults(func=cmd_node_rm)

    tokens = sub.add_parser("tokens", help="join tokens: rotate")
    tsub = tokens.add_subparsers(dest="tokens_command", metavar="TOKENS_COMMAND",
                                 parser_class=sub._parser_class)
    tsub.required = True
    p = tsub.add_parser("rotate", help="new join tokens (both unless --worker/--manager); "
                        "tokens are never printed")
    _common(p)
    p.add_argument("--worker", action="store_true")
    p.add_argument("--manager", action="store_true")
    p.set_defaults(func=cmd_tokens_rotate)

    ca = sub.add_parser("ca", help="the swarm's root CA: rotate")
    csub = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", parser_class=sub._parser_class)
    csub.required = True
    p = csub.add_parser("rotate", help="new root CA and node certificates; waits until every "
                        "node trusts the new root (exit 12 after --timeout)")
    _common(p)
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(func=cmd_ca_rotate)

    p = sub.add_parser("autolock", help="turn manager autolock on or off")
    _common(p)
    p.add_argument("state", choices=("on", "off"))
    p.set_defaults(func=cmd_autolock)

    p = sub.add_parser("unlock-key", help="print the unlock key (on request only; never "
                       "stored); --rotate makes a new one")
    _common(p)
    p.add_argument("--rotate", action="store_true")
    p.set_defaults(func=cmd_unlock_key)

    p = sub.add_parser("unlock-swarm", help="unlock every locked manager (key from --key-file, "
                       "$SWARMSMITH_UNLOCK_KEY, stdin or a prompt; never an argument)")
    _common(p)
    p.add_argument("--key-file", metavar="FILE", default=None)
    p.set_defaults(func=cmd_unlock)

    try:
        from . import backup_commands
        backup_commands.add_commands(sub, _common)
    except ImportError:
        pass
