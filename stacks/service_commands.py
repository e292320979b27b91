"""CLI commands `ps`, `logs` and `scale`: parsing and rendering only (stacks/operations/service_ops.py does
the work). Registered by cli.py; imports stay light so `swarmsmith --help` is fast."""
from __future__ import annotations

import contextlib
import json
import sys

from provision.errors import InputError


@contextlib.contextmanager
def _manager(args):
    from inventory.clusterfile import find
    from provision.managers import connect_manager
    conn = connect_manager(find(args.cluster))
    try:
        yield conn
    finally:
        conn.close()


def cmd_ps(args) -> int:
    from stacks.operations.service_ops import ps
    with _manager(args) as m:
        rows = ps(m.api, args.target, all_tasks=args.all)
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'TASK':<32} {'NODE':<22} {'DESIRED':<9} {'STATE':<10} {'SINCE':<21} ERROR")
    for r in rows:
        print(f"{r.task:<32} {r.node:<22} {r.desired:<9} {r.state:<10} {r.since[:19]:<21} {r.error}")
    if not rows:
        print(f"{args.target}: no tasks")
    return 0


def cmd_logs(args) -> int:
    from stacks.operations.service_ops import LogOptions, logs, since_epoch
    import time
    if args.tail is not None and not (0 <= args.tail <= 1_000_000):
        raise InputError(f"--tail {args.tail}: expected 0 to 1000000 lines")
    since_epoch(args.since, time.time())     # bad --since: exit 2 before connecting

    def emit(line: str) -> None:
        if args.json:
            sys.stdout.write(json.dumps({"line": line}) + "\n")
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    with _manager(args) as m:
        logs(m.api, args.service, LogOptions(since=args.since, tail=args.tail,
                                             follow=args.follow, timestamps=args.timestamps), emit)
    return 0


def cmd_scale(args) -> int:
    from provision.errors import EXIT_OK
    from stacks.operations.service_ops import parse_scale_args, plan_scale, scale
    from stacks.operations.lock import SwarmLock
    from stacks.watch.watcher import WatchPolicy
    wanted = parse_scale_args(args.pairs)
    if not (0 < args.timeout <= 86400):
        raise InputError(f"--timeout {args.timeout:g}: expected seconds between 0 and 86400")
    with _manager(args) as m:
        todo, same, stack = plan_scale(m.api, wanted)
        kwargs = {"policy": WatchPolicy(timeout=args.timeout), "watch": not args.detach}
        lock = SwarmLock(m.api.api, stack, ttl=max(1800, 2 * args.timeout + 300),
                         wait=args.lock_wait) if stack and todo else contextlib.nullcontext()
        with lock:
            if args.json or not todo or args.detach:
                res = scale(m.api, todo, stack=stack, **kwargs)
            else:
                from stacks.watch.render import progress_renderer
                with progress_renderer(sys.stderr) as show:
                    res = scale(m.api, todo, stack=stack, on_progress=show, **kwargs)
        res.unchanged = same
        _audit(args, stack, res, m.api.api)
    if args.json:
        json.dump(res.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for name, (old, new) in sorted(res.changed.items()):
            print(f"  ~ {name}: replicas {old} -> {new}")
        for name in same:
            print(f"  = {name}: already at {wanted.get(name, wanted.get(name.split('_', 1)[-1]))}")
        if res.report is not None:
            print(res.report.summary())
        if res.changed:
            print("  note: the compose files still say otherwise; the next deploy's plan shows "
                  "the difference and sets the files' count back")
    return res.exit_code if res.report else EXIT_OK


def _audit(args, stack: str, res, api) -> None:
    """The scale goes to the stack's audit history (in the swarm, and audit.jsonl when the state
    folder exists), like a deploy's."""
    from provision.clusters import state_path_if_any
    from stacks.operations.audit import audit_record, keep_record
    if not res.changed:
        return

    def warn(msg):
        print(f"warning: {msg}", file=sys.stderr)
    rec = audit_record("scale", stack or "-", res.report,
                       replicas={k: v[1] for k, v in res.changed.items()}, phase="end")
    rec["exit_code"] = res.exit_code
    keep_record(api, state_path_if_any(getattr(args, "cluster", None)), rec, warn)


def add_commands(sub) -> None:
    p = sub.add_parser("ps", help="tasks of a stack or service: node, state, error")
    p.add_argument("--cluster", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="every task swarm remembers, not only the "
                   "current one and the last failure of each slot")
    p.add_argument("target", metavar="STACK|SERVICE")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="a service's logs through the Engine API, each line "
                       "prefixed by task and node")
    p.add_argument("--cluster", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--since", default=None, help="30s, 10m, 2h, 1d, a unix time or RFC 3339")
    p.add_argument("--tail", type=int, default=None, help="last N lines of each task")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("service", metavar="SERVICE")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("scale", help="set replica counts and watch them like a deploy "
                       "(same exit codes); the next deploy's plan shows the drift")
    p.add_argument("--cluster", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the services (exit 12 after)")
    p.add_argument("--detach", action="store_true", help="do not watch")
    p.add_argument("--lock-wait", type=float, default=0,
                   help="seconds to wait for the stack's lock (exit 4 after)")
    p.add_argument("pairs", metavar="SERVICE=N", nargs="+")
    p.set_defaults(func=cmd_scale)
