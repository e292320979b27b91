"""CLI commands `backup`, `restore` and `recover`: parsing and rendering only (the work is in
provision/backup.py and provision/restore.py)."""
from __future__ import annotations

import json
import sys
import time

from .errors import InputError


def _cluster_path(args) -> str:
    from inventory.clusterfile import find
    return find(args.cluster)


def _progress(args):
    if args.json:
        return None
    t0 = time.monotonic()
    return lambda msg: print(f"[{time.monotonic() - t0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def _out(args, d: dict, lines: list[str]) -> None:
    if args.json:
        json.dump(d, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(lines))


def cmd_backup(args) -> int:
    from .backup import BackupOptions, take_backup
    res = take_backup(_cluster_path(args), BackupOptions(out=args.out, node=args.node),
                      on_progress=_progress(args))
    m = res.manifest
    lines = [f"backup {res.path} (mode 0600) from {res.host}: {len(m['services'])} services, "
             f"{len(m['secrets'])} secrets, {len(m['configs'])} configs; engine stopped "
             f"{res.engine_stopped_seconds:.1f} s",
             "  the archive holds the swarm's keys and secrets: keep it like a password"]
    lines += [f"  note: {n}" for n in res.notes]
    _out(args, res.to_dict(), lines)
    return 0


def cmd_restore(args) -> int:
    import os

    from .restore import restore
    key = None
    if args.key_file:
        try:
            with open(args.key_file) as f:
                key = f.read().strip()
        except OSError as e:
            raise InputError(f"{args.key_file}: cannot read the unlock key: {e.strerror}") from None
    key = key or os.environ.get("SWARMSMITH_UNLOCK_KEY") or None
    res = restore(_cluster_path(args), args.file, args.to, force=args.force, unlock_key=key,
                  on_progress=_progress(args))
    lines = [f"  ~ {c}" for c in res.changes]
    lines += [f"restored swarm {res.swarm_id[:12]} on {res.host}: "
              f"{len(res.services)} services, {len(res.secrets)} secrets, "
              f"{len(res.configs)} configs"]
    lines += [f"  note: {n}" for n in res.notes]
    _out(args, res.to_dict(), lines)
    return res.exit_code


def cmd_recover(args) -> int:
    from .restore import recover
    res = recover(_cluster_path(args), force_new_cluster=args.force_new_cluster,
                  on_progress=_progress(args))
    lines = [f"  {h}: {what}" for h, what in sorted(res.managers.items())]
    lines += [f"  ~ {c}" for c in res.changes]
    lines += [f"  {n}" for n in res.notes]
    _out(args, res.to_dict(), lines)
    return res.exit_code


def add_commands(sub, common) -> None:
    p = sub.add_parser("backup", help="copy a manager's swarm state (a non-leader one; its "
                       "engine stopped only for the copy) into a 0600 archive with a manifest")
    common(p)
    p.add_argument("--out", metavar="FILE", default=None,
                   help="archive path or folder (default ./<cluster>-swarm-<time>.tar)")
    p.add_argument("--node", metavar="HOST", default=None,
                   help="the manager to copy (default: a non-leader one); a restore can grow "
                        "back to several managers only on a host with this manager's address")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="restore a backup onto a host of the cluster as the "
                       "only manager of the restored swarm; `up` then joins the others")
    common(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--to", required=True, metavar="HOST", help="a host of the cluster's inventory")
    p.add_argument("--force", action="store_true",
                   help="restore even when HOST is in a swarm with other ready nodes, or has "
                        "another address than the backed-up manager (it then stays one manager)")
    p.add_argument("--key-file", metavar="FILE", default=None,
                   help="unlock key of the backup's swarm when it was autolocked")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("recover", help="explain a swarm that lost quorum; with "
                       "--force-new-cluster re-form it on a surviving manager and join the "
                       "other managers again")
    common(p)
    p.add_argument("--force-new-cluster", action="store_true")
    p.set_defaults(func=cmd_recover)
