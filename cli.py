"""swarmsmith command line: every command's flags, and a thin layer over provision/, stacks/
and inventory/.

Heavy libraries (docker, paramiko, digitalocean, rich) are imported inside the commands so that
`swarmsmith --help` starts fast.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

from provision.base.errors import EXIT_FAILED, InputError, SwarmsmithError

EXIT_CODES_HELP = """exit codes:
  0  success (or nothing to change)
  1  an operation failed (remote command, API, engine)
  2  bad input (YAML, cluster file, compose file, flags); nothing was changed
  3  a host was unreachable, refused our key, showed a changed host key, or has
     no pinned key (--accept-new-host-keys trusts unpinned keys on first use); the
     swarm's cluster record disagrees with the cluster file on a host's address or key
  4  another run holds the lock (swarmsmith unlock STACK removes a dead run's, or
     one whose labels cannot be read), or the cluster's managers lock (backup,
     restore, recover, engine upgrade, node demote/rm; swarmsmith unlock --managers)
  5  status: degraded (a node down, quorum lost, a service short of replicas);
     refused because quorum, the last manager or a service's room would be lost
     (engine upgrade, node demote/rm/promote, backup); nothing changed
  10 deploy/scale: a service failed or was paused; node drain: a service could not be placed
     or run elsewhere
  11 deploy: an update was rolled back (0 with --allow-rollback)
  12 deploy/scale/node drain/ca rotate: timed out
"""


CLUSTER_HELP = "cluster file (default: $SWARMSMITH_CLUSTER, else ./swarmsmith.yml)"


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
    from provision.hosts.lab.lab import Lab
    if args.nodes < 1:
        raise _flag_error("--nodes", "must be at least 1")
    if args.engine_preinstalled and not args.vm:
        raise _flag_error("--engine-preinstalled", "applies to VM hosts only (--vm)")
    lab = Lab(args.name)

    def progress(what, msg):
        if not args.json:
            print(f"  {what}: {msg}", file=sys.stderr, flush=True)
    hosts, changes = lab.up([f"{args.name}-{i}" for i in range(1, args.nodes + 1)],
                            progress=progress, image=args.image, vm=args.vm or None,
                            engine_preinstalled=args.engine_preinstalled)
    extra = [h.name for h in lab.hosts() if h.name not in {x.name for x in hosts}]
    if args.json:
        _print_json({"changes": changes, "hosts": [_lab_host_json(h) for h in hosts]})
    else:
        _print_changes(changes, f"lab {args.name}: no changes ({len(hosts)} hosts up)")
        if extra:
            print(f"  note: the lab also has {', '.join(extra)} (not asked for; kept)")
    return 0


def _lab_host_json(h) -> dict:
    from provision.hosts.lab.lab import fingerprint
    # host_key as a pin takes it (static.hosts[].host_key), fingerprint as ssh shows it
    return {"name": h.name, "public_address": h.public_address,
            "private_address": h.private_address, "user": h.user, "key_path": h.key_path,
            "host_key": h.host_key, "fingerprint": fingerprint(h.host_key)}


def cmd_lab_down(args) -> int:
    from provision.hosts.lab.lab import Lab, list_labs
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
    from provision.hosts.lab.lab import Lab, list_labs
    names = [args.name] if args.name else list_labs()
    labs = [Lab(n) for n in names]
    # kind: "netns" (this machine's kernel), or "vm-kvm" / "vm-tcg" (QEMU, and how it runs)
    rows = [_lab_host_json(h) | {"lab": lab.name, "kind": f"vm-{lab.accel}" if lab.vm
                                 else "netns"} for lab in labs for h in lab.hosts()]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no lab hosts")
        return 0
    print(f"{'LAB':<12} {'NAME':<20} {'KIND':<7} {'PUBLIC':<16} {'PRIVATE':<16} HOST KEY")
    for r in rows:
        print(f"{r['lab']:<12} {r['name']:<20} {r['kind']:<7} {r['public_address']:<16} "
              f"{r['private_address']:<16} {r['fingerprint']}")
    return 0


# --- progress: events from the library -> the lines the commands print -------------------

class _Renderer:
    """The `on_progress` callback of every command: host steps and the watch table on stderr,
    the plan and applied steps on stdout; with --json only warnings and the watch's JSON lines
    (stderr)."""

    def __init__(self, as_json: bool = False):
        self.as_json = as_json
        self.clock = time.monotonic
        self.t0 = self.clock()
        self.watch = None
        self.transfer = None
        self.last = self.t0          # when the last host line was printed
        self.waiting = ""            # what the run waits for now (Waiting events)
        self.beat = None
        import threading
        # host steps arrive from many threads: a line is written whole, in one call (print
        # writes text and newline apart, and two threads' lines would run together)
        self.lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self.lock:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def __call__(self, event) -> None:
        from provision.base.progress import HostProgress, Notice, OperationWarning, Waiting
        if isinstance(event, Waiting):
            self.waiting = event.message
            if self.beat is None and not self.as_json and event.message:
                import threading
                self.beat = threading.Thread(target=self._heartbeat, daemon=True)
                self.beat.start()
        elif isinstance(event, OperationWarning):
            self._line(f"warning: {event.message}")
        elif isinstance(event, Notice):
            self._line(event.message)
        elif self.as_json:
            from stacks import events as ev
            if isinstance(event, (ev.WatchStarted, ev.WatchProgress, ev.WatchFinished)):
                self._stack_event(event)       # the watch as JSON lines on stderr
        elif isinstance(event, HostProgress):
            self._host_line(event.host, event.message)
        else:
            self._stack_event(event)

    def _host_line(self, host: str, message: str) -> None:
        self.last = self.clock()
        self._line(f"[{self.last - self.t0:6.2f}s] {host:<22} {message}")

    def _heartbeat(self, every: float = 1.0) -> None:
        """No silent second: what the run waits for, again, after a second without a line."""
        while True:
            time.sleep(0.2)
            waiting = self.waiting
            if waiting and self.clock() - self.last >= every:
                self._host_line("", f"... {waiting}")

    def _stack_event(self, event) -> None:
        from stacks import events as ev
        if isinstance(event, ev.PlanReady):
            from stacks.plan_apply.plan_render import render_text
            print(render_text(event.plan, show_unchanged=True))
        elif isinstance(event, ev.ImageResolved):
            print(f"  image {event.service}: {event.image} is {event.digest}")
        elif isinstance(event, ev.StepDone):
            print(f"  done: {event.text}")
        elif isinstance(event, ev.UnsettledService):
            print(f"  not settled, watching too: {event.service} ({event.reason})")
        elif isinstance(event, ev.ImagePush):
            print(event.message, file=sys.stderr, flush=True)
        elif isinstance(event, ev.TransferProgress):
            if self.transfer is None:
                self.transfer = ProgressPrinter(sys.stderr)
            self.transfer(event.host, event.phase, event.done, event.total)
        elif isinstance(event, ev.WatchStarted):
            from stacks.watch.render import progress_renderer
            self.watch = progress_renderer(sys.stderr, as_json=self.as_json)
            self.show = self.watch.__enter__()
        elif isinstance(event, ev.WatchProgress) and self.watch is not None:
            self.show(event.report)
        elif isinstance(event, ev.WatchFinished) and self.watch is not None:
            self.watch.__exit__(None, None, None)
            self.watch = None


# --- clusters: up, plan, status, image-load, down -------------------------------------

def _cluster_file(args) -> str | None:
    return getattr(args, "cluster_file", None) or getattr(args, "cluster", None)


def _report(result, as_json: bool) -> None:
    if as_json:
        _print_json(result.to_dict())
        return
    dry = result.dry_run
    verb = "planned changes" if dry else "changes"
    changes = result.changes
    print(f"cluster {result.cluster}: " + (f"{len(changes)} {verb}" if changes else
          ("nothing to do" if dry else "no changes")))
    for c in changes:
        print(f"  {'+' if dry else '~'} {c}")
    for w in getattr(result, "warnings", None) or []:
        print(f"  ! {w}")
    nodes = getattr(result, "nodes", None) or []
    if nodes and not dry:
        print(f"  {'NODE':<24} {'ROLE':<8} {'ADVERTISE':<16} NODE ID")
        from provision.engine_api.node_names import label
        for n in nodes:
            name = label(n["name"], n.get("hostname") or "")
            print(f"  {name:<24} {n['role']:<8} {n['advertise_address'] or '-':<16} "
                  f"{(n['node_id'] or '-')[:25]}")


def cmd_up(args) -> int:
    from stacks import api
    opts = api.UpOptions(dry_run=args.dry_run, force=args.force,
                         accept_host_keys=set(args.accept_host_key or []),
                         concurrency=args.concurrency, prune=args.prune,
                         destroy_services=args.destroy_services)
    if args.destroy_services and not args.force:
        raise _flag_error("--destroy-services", "goes with --force (it only allows what --force "
                          "would otherwise refuse)")
    _report(api.up(_cluster_file(args), opts, on_progress=_Renderer(as_json=args.json)),
            args.json)
    return 0


def cmd_plan(args) -> int:
    if args.compose_files:
        # `plan -c FILE STACK`: the positional is the stack, the cluster comes from --cluster
        args.stack, args.cluster_file = args.cluster_file, None
        return _stack_plan(args, _stack_options(args))
    from stacks import api
    _report(api.up(_cluster_file(args), api.UpOptions(dry_run=True, prune=args.prune)),
            args.json)
    return 0


def cmd_down(args) -> int:
    from stacks import api
    _report(api.down(_cluster_file(args), api.DownOptions(dry_run=args.dry_run)), args.json)
    return 0


def cmd_status(args) -> int:
    import os

    from stacks import api
    pos = args.cluster_file
    stack = None
    if pos and not pos.endswith((".yml", ".yaml")) and not os.path.isfile(pos):
        stack, args.cluster_file = pos, None       # `status STACK`
    st = api.status(_cluster_file(args), stack=stack,
                    accept_new_host_keys=args.accept_new_host_keys)
    _emit(args, st.to_dict(), _status_lines(st.to_dict()))
    return st.exit_code


def _quorum_line(q: dict) -> str:
    from provision.swarm.quorum import Quorum
    return f"managers: {Quorum(q['managers'], q['reachable']).text()}"


# node table columns: (header, width, value of a node row from the library)
_NODE = ("NODE", 22, lambda n: n["hostname"])
_NAME = ("NAME", 8, lambda n: n.get("name") or "-")     # the cluster file's name of the node


def _names_column(nodes: list[dict]) -> tuple:
    """NAME after NODE where the cluster file names a node otherwise than its hostname."""
    return (_NAME,) if any(n.get("name") and n["name"] != n["hostname"] for n in nodes) else ()
_ROLE = ("ROLE", 8, lambda n: n["role"])
_STATE = ("STATE", 7, lambda n: n["state"])
_AVAIL = ("AVAIL", 7, lambda n: n["availability"] or "-")
_MANAGER = ("MANAGER", 11, lambda n: n["manager"] or "-")
_ENGINE = ("ENGINE", 9, lambda n: n["engine"] or "-")


def _labels(n: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))


def _table(items: list[dict], columns) -> list[str]:
    """`node ls` and `status` draw their tables alike: a column is as wide as its widest value
    (an engine version like 20.10.24+dfsg1, a ReplicatedJob mode, several ports); the last one
    is not padded."""
    rows = [[str(get(n)) for _, _, get in columns] for n in items]
    widths = [max([w, len(h)] + [len(r[i]) for r in rows]) for i, (h, w, _) in enumerate(columns)]

    def line(cells):
        return " ".join(f"{c:<{w}}" for c, w in zip(cells, widths[:-1])) + f" {cells[-1]}"
    return [line([h for h, _, _ in columns])] + [line(r) for r in rows]


def _status_lines(st: dict) -> list[str]:
    lines = [_quorum_line(st["quorum"])]
    if st.get("error"):
        lines.append(st["error"])
    lines += [""] + _table(st["nodes"], (
        _NODE, *_names_column(st["nodes"]), _ROLE, _STATE, _AVAIL, _MANAGER, _ENGINE, ("ADDR", 15, lambda n: n["addr"] or "-"),
        ("LABELS", 0, lambda n: _labels(n) or n.get("error", ""))))
    if st.get("error"):
        return lines + ["", "DEGRADED:"] + [f"  {p}" for p in st.get("problems", [])]
    lines += [""] + _table(st["services"], (
        ("SERVICE", 28, lambda s: s["name"]), ("MODE", 11, lambda s: s["mode"]),
        ("REPLICAS", 9, lambda s: f"{s['running']}/{s['desired']}" if s["desired"] is not None
         else f"{s['running']}"),
        ("UPDATE", 18, lambda s: s["update"] or "-"),
        ("PORTS", 18, lambda s: ",".join(s.get("ports") or []) or "-"),
        ("IMAGE", 0, lambda s: s["image"])))
    if not st["services"]:
        lines.append("(no services)")
    if st.get("failing"):
        lines += ["", "failing tasks:"]
        for f in st["failing"]:
            lines.append(f"  {f['task']} on {f['node'] or '?'}: {f['state']}: {f['error']}")
    if st.get("problems"):
        lines += ["", "DEGRADED:"] + [f"  {p}" for p in st["problems"]]
    return lines


def cmd_engine_upgrade(args) -> int:
    from provision.base.clusters import find_cluster_file
    from provision.upgrade import UpgradeOptions, upgrade
    if args.batch is not None and args.batch < 1:
        raise _flag_error("--batch", "must be at least 1")
    if args.version is not None:
        from inventory.clusterfile import VERSION_RE
        if not VERSION_RE.match(args.version):
            raise _flag_error("--version", f'expected a version like "24.0", got "{args.version}"')
    opts = UpgradeOptions(version=args.version or "", dry_run=args.dry_run,
                          max_batch=args.batch or 0)
    # on stderr even with --json: a long run is never silent
    res = upgrade(find_cluster_file(_cluster_file(args)), opts, on_progress=_Renderer())
    if args.json:
        _print_json(res.to_dict())
        return 0
    target = res.version or "the newest the install method offers"
    if res.dry_run:
        print(f"cluster {res.cluster}: engine upgrade to {target}, in this order "
              "(worker batches are re-chosen from the live placement):")
        for i, batch in enumerate(res.order, 1):
            print(f"  {i}. " + ", ".join(f"{n} ({res.versions.get(n) or '?'})" for n in batch))
        return 0
    print(f"cluster {res.cluster}: engine upgraded to {target} on {len(res.done)} nodes")
    for c in res.changes:
        print(f"  ~ {c}")
    return 0


def cmd_image_load(args) -> int:
    """Put the busybox test image on every node (lab and tests: nothing can be pulled)."""
    from provision.base.clusters import find_cluster_file
    from provision.images.busybox import load_on_cluster
    result = load_on_cluster(find_cluster_file(_cluster_file(args)), args.image,
                             accept_new_host_keys=args.accept_new_host_keys)
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        changes = result.changes
        print(f"image {result.image}: " + (f"{len(changes)} changes" if changes else "no changes"))
        for c in changes:
            print(f"  ~ {c}")
    return 0


def cmd_hostkeys(args) -> int:
    """The cluster's pinned SSH host keys in known_hosts form, to commit beside the cluster file
    (`ssh: {known_hosts: FILE}`) so runners with no local state verify every host."""
    from inventory.hostkeys import known_hosts_line
    from provision.engine_api.access import access
    from provision.base.clusters import find_cluster_file
    acc = access(find_cluster_file(_cluster_file(args)), args.accept_new_host_keys)
    hosts = [h for h in acc.hosts() if h.host_key]
    if args.json:
        _print_json([{"name": h.name, "address": h.public_address, "port": h.port,
                      "host_key": h.host_key} for h in hosts])
        return 0
    print(f"# swarmsmith cluster {acc.cluster.name}: SSH host keys (known_hosts form)")
    for h in hosts:
        print(known_hosts_line(h.public_address, h.port, h.host_key, h.name))
    return 0


# Every command that reaches a cluster takes the same connection flags, defined once here and
# given to the top-level parser too (`swarmsmith --cluster F deploy ...`). Their default is
# SUPPRESS so that a subcommand that was not given one does not overwrite the value given before
# it; build_parser's parser fills the defaults in after parsing.
CONNECTION_DEFAULTS = {"cluster": None, "accept_new_host_keys": False}


@functools.cache
def _connection() -> argparse.ArgumentParser:
    """The parent parser of every command that talks to a cluster (one shared definition)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cluster", metavar="FILE", default=argparse.SUPPRESS, help=CLUSTER_HELP)
    p.add_argument("--accept-new-host-keys", action="store_true", default=argparse.SUPPRESS,
                   help="trust hosts whose SSH key nothing pins (cluster file, local state, "
                        "the swarm's record) on first use; a changed key is refused anyway")
    return p


def _cluster_parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that talks to a cluster: it takes the shared connection flags."""
    return sub.add_parser(name, parents=[_connection()], **kwargs)


def _cluster_args(p, positional: bool = True) -> None:
    if positional:
        p.add_argument("cluster_file", nargs="?", metavar="CLUSTER.yml",
                       help="cluster file (else --cluster, $SWARMSMITH_CLUSTER, ./swarmsmith.yml)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def add_cluster_commands(sub) -> None:
    up = _cluster_parser(sub, "up", help="bootstrap or converge the cluster (idempotent)")
    _cluster_args(up)
    up.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    up.add_argument("--force", action="store_true",
                    help="take over hosts that are in another swarm (they leave it first)")
    up.add_argument("--destroy-services", action="store_true",
                    help="with --force: also when a manager leaving would destroy a swarm that "
                         "runs services (refused otherwise, naming them)")
    up.add_argument("--accept-host-key", action="append", metavar="HOST",
                    help="accept a changed SSH host key for HOST (after a rebuild)")
    up.add_argument("--concurrency", type=int, default=16, help="hosts handled at once")
    up.add_argument("--prune", action="store_true",
                    help="digitalocean: destroy the cluster's droplets the file no longer asks for")
    up.set_defaults(func=cmd_up)

    plan = _cluster_parser(sub, "plan", help="show what `up` (or, with -c, `deploy`) would change")
    _cluster_args(plan)
    plan.add_argument("-c", "--compose-file", dest="compose_files", action="append",
                      metavar="FILE", help="plan a stack deploy instead (see deploy)")
    plan.add_argument("--env-file", metavar="FILE", default=None,
                      help="with -c: variables for ${VAR} interpolation (see deploy)")
    plan.add_argument("--prune", action="store_true",
                      help="with -c: also plan removing what the files no longer have; "
                           "without: digitalocean droplets the file no longer asks for")
    plan.add_argument("--strict", action="store_true",
                      help="with -c: refuse keys that swarm ignores (build, depends_on, ...)")
    plan.add_argument("--no-versioned-names", action="store_true",
                      help="name secrets/configs <stack>_<key> like docker stack deploy")
    plan.add_argument("--no-update-defaults", action="store_true",
                      help="no default update_config for services without one")
    plan.set_defaults(func=cmd_plan)

    status = _cluster_parser(sub, "status", help="nodes, quorum health (how many more manager "
                             "losses it survives), services, ports, failing tasks; exit 5 when "
                             "degraded")
    status.add_argument("cluster_file", nargs="?", metavar="STACK|CLUSTER.yml",
                        help="a stack to show (else every service), or the cluster file")
    _cluster_args(status, positional=False)
    status.set_defaults(func=cmd_status)

    eng = sub.add_parser("engine", help="the Docker engine on the cluster's nodes")
    esub = eng.add_subparsers(dest="engine_command", metavar="ENGINE_COMMAND", parser_class=_Parser)
    esub.required = True
    upg = _cluster_parser(esub, "upgrade", help="install an engine version node by node "
                          "(workers in safe batches, then managers one at a time keeping quorum)")
    _cluster_args(upg)
    upg.add_argument("--version", default=None,
                     help="engine version (default: engine.version of the cluster file, else "
                          "the newest available); the same version is re-installed")
    upg.add_argument("--dry-run", action="store_true", help="show the order, change nothing")
    upg.add_argument("--batch", type=int, default=None,
                     help="at most this many workers at once (default: half of them)")
    upg.set_defaults(func=cmd_engine_upgrade)

    image = _cluster_parser(sub, "image-load", help="put the tiny busybox test image on every node")
    _cluster_args(image)
    image.add_argument("--image", default=None, help="image name (default swarmsmith/busybox:1)")
    image.set_defaults(func=cmd_image_load)

    keys = _cluster_parser(sub, "hostkeys", help="print the cluster's pinned SSH host keys in "
                          "known_hosts form (commit them; see ssh.known_hosts)")
    _cluster_args(keys)
    keys.set_defaults(func=cmd_hostkeys)

    down = _cluster_parser(sub, "down", help="remove what `up` made (lab: the hosts)")
    _cluster_args(down)
    down.add_argument("--dry-run", action="store_true", help="list what would be removed, "
                      "remove nothing")
    down.set_defaults(func=cmd_down)


# --- stacks: config, deploy, plan -c, redeploy, rollback, rm ----------------------------
# Flags mirror `docker stack deploy/config/rm` where they exist.

def _compose_args(p) -> None:
    p.add_argument("-c", "--compose-file", dest="compose_files", action="append",
                   required=True, metavar="FILE",
                   help="compose file; repeat to merge several (later files override)")
    p.add_argument("--env-file", metavar="FILE", default=None,
                   help="variables for ${VAR} interpolation (default: .env beside the "
                        "first compose file, if any; the process environment wins)")
    p.add_argument("--strict", action="store_true",
                   help="refuse keys that swarm ignores (build, depends_on, restart, ...)")


def _deploy_args(p) -> None:
    _compose_args(p)
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
    p.add_argument("stack", metavar="STACK", help="stack name (prefix of its services)")


def _push_images_arg(p) -> None:
    p.add_argument("--push-images", action="store_true",
                   help="push images the image check finds missing on nodes (over SSH, from "
                        "the local engine unless --push-from), then deploy; the cluster "
                        "file's images: {push_missing: true} does the same")
    p.add_argument("--push-from", metavar="SOURCE", default=None,
                   help="where --push-images takes images from: a docker save archive or an "
                        "image file (swarmsmith images build); implies --push-images")


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


def _stack_options(args, kind=None):
    """Options for plan/deploy/redeploy from their flags (`kind`: the options class)."""
    from stacks import api
    kind = kind or api.StackOptions
    common = dict(cluster_file=args.cluster, accept_new_host_keys=args.accept_new_host_keys,
                  env_file=args.env_file, strict=args.strict,
                  prune=args.prune, versioned_names=not args.no_versioned_names,
                  update_defaults=not args.no_update_defaults)
    if kind is api.StackOptions:
        return kind(**common)
    extra = dict(timeout=args.timeout or 300, allow_rollback=args.allow_rollback,
                 detach=args.detach, lock_wait=args.lock_wait or 0, lock_ttl=args.lock_ttl,
                 push_images=args.push_images, push_from=args.push_from)
    if kind is api.RedeployOptions:
        extra.update(resolve_image=args.resolve_image or "registry")
    return kind(**common, **extra)


def _stack_plan(args, options) -> int:
    from stacks import api
    result = api.plan(args.stack, args.compose_files, options,
                      on_progress=_Renderer(as_json=args.json))
    if args.json:
        _print_json(result.to_dict())
    else:
        from stacks.plan_apply.plan_render import render_text
        print(render_text(result.plan, show_unchanged=True))
    if result.problems:
        raise InputError("the plan has problems; nothing was changed:\n  "
                         + "\n  ".join(result.problems))
    return 0


def _print_deploy(result, as_json: bool) -> int:
    if as_json:
        _print_json(result.to_dict())
        return result.exit_code
    for w in result.applied.warnings:
        print(f"  warning: {w}")
    if result.watch is not None:
        print(result.watch.summary())
    elif not result.plan.has_changes:
        print(f"stack {result.stack}: no changes")
    elif not result.changed_services:
        print(f"stack {result.stack}: no service changed; nothing to watch")
    return result.exit_code


def cmd_config(args) -> int:
    from stacks import api
    result = api.config(args.compose_files,
                        api.ConfigOptions(env_file=args.env_file, strict=args.strict))
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    sys.stdout.write(result.text())
    return 0


def cmd_deploy(args) -> int:
    from stacks import api
    return _deploy_like(args, api.DeployOptions, api.deploy)


def cmd_redeploy(args) -> int:
    from stacks import api
    return _deploy_like(args, api.RedeployOptions, api.redeploy)


def _deploy_like(args, options_class, run) -> int:
    options = _stack_options(args, options_class)
    if args.dry_run:
        return _stack_plan(args, options)
    result = run(args.stack, args.compose_files, options, on_progress=_Renderer(as_json=args.json))
    return _print_deploy(result, args.json)


def cmd_rollback(args) -> int:
    from stacks import api
    options = api.RollbackOptions(cluster_file=args.cluster,
                                  accept_new_host_keys=args.accept_new_host_keys,
                                  services=tuple(args.services),
                                  timeout=args.timeout or 300, lock_wait=args.lock_wait or 0,
                                  lock_ttl=args.lock_ttl)
    result = api.rollback(args.stack, options, on_progress=_Renderer(as_json=args.json))
    if args.json:
        _print_json(result.to_dict())
        return result.exit_code
    for name in result.requested:
        print(f"  rollback requested: {name}")
    for name, why in sorted(result.skipped.items()):
        print(f"  skipped {name}: {why}")
    if result.report is not None:
        print(result.report.summary())
    elif not result.requested:
        print(f"stack {args.stack}: nothing to roll back")
    return result.exit_code


def cmd_unlock(args) -> int:
    from stacks import api
    if bool(args.stack) == args.managers:
        raise _flag_error("STACK", "name a stack, or --managers for the cluster's managers lock"
                          if not args.stack else "give either a stack or --managers, not both")
    options = api.UnlockOptions(cluster_file=args.cluster,
                                accept_new_host_keys=args.accept_new_host_keys, force=args.force)
    if args.managers:
        result, which = api.unlock_managers(options), "the cluster's managers"
    else:
        result, which = api.unlock(args.stack, options), f"stack {args.stack}"
    if args.json:
        _print_json(result.to_dict())
    elif result.holder is None:
        print(f"{which}: not locked")
    else:
        where = {"dead": "a run on this host that is gone", "alive": "a RUNNING process on "
                 "this host (--force)", "elsewhere": "a run on another host"}
        print(f"{which}: removed the lock {result.holder.describe(time.time())}; "
              f"it was {where[result.holder_state]}")
    return result.exit_code


def cmd_audit(args) -> int:
    from provision.engine_api.access import connect
    from stacks.operations.audit import audit_table, parse_since, read_audit_swarm
    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError as e:
            raise _flag_error("--since", str(e)) from None
    if args.stack:
        from stacks.compose.validate import validate_stack_name
        validate_stack_name(args.stack)
    engine = connect(args.cluster, accept_new_host_keys=args.accept_new_host_keys, shared=True).api
    records = read_audit_swarm(engine.api, args.stack, since)
    if args.json:
        _print_json(records)
        return 0
    if not records:
        print("no audit records" + (f" for stack {args.stack}" if args.stack else "")
              + (f" since {since}" if since else ""))
        return 0
    print("\n".join(audit_table(records)))
    return 0


def cmd_rm(args) -> int:
    from stacks import api
    result = api.rm(args.stack, api.RmOptions(cluster_file=args.cluster,
                                              accept_new_host_keys=args.accept_new_host_keys))
    if not result.found:
        print(f"nothing found in stack: {args.stack}")
        return 0
    if args.json:
        _print_json(result.to_dict())
        return 0
    for s in result.applied.done:
        print(f"  {s}")
    for w in result.applied.warnings:
        print(f"  warning: {w}")
    return 0


def add_stack_commands(subparsers) -> None:
    p = subparsers.add_parser("config", help="print the merged, interpolated compose file "
                              "after validating it (no cluster needed)")
    _compose_args(p)
    p.set_defaults(func=cmd_config)

    p = _cluster_parser(subparsers, "deploy", help="deploy or update a stack: plan, apply, watch "
                              "until converged (exit codes: see swarmsmith --help)")
    _deploy_args(p)
    _push_images_arg(p)
    _watch_args(p)
    p.set_defaults(func=cmd_deploy)

    p = _cluster_parser(subparsers, "redeploy", help="deploy again for cron/CI: image tags "
                              "re-resolved to digests (a new image behind the same tag is "
                              "rolled out), waits for the stack lock, audit line per run")
    _deploy_args(p)
    _push_images_arg(p)
    _watch_args(p, lock_wait=60)
    p.add_argument("--resolve-image", choices=("registry", "always", "never"),
                   default="registry",
                   help="which images to resolve: those naming a registry host (default), "
                        "also Docker Hub ones, or none")
    p.add_argument("--insecure-registry", action="append", metavar="HOST:PORT", default=[],
                   help="accepted for compatibility and ignored: digests are resolved by the "
                        "manager's daemon, which uses its own insecure-registries list")
    p.set_defaults(func=cmd_redeploy)

    p = _cluster_parser(subparsers, "unlock", help="show who holds a stack's lock (or the "
                              "cluster's managers lock) and remove it (after a run that was killed)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--force", action="store_true",
                   help="remove it even when its holder is a process still running here")
    p.add_argument("--managers", action="store_true",
                   help="the cluster's managers lock (held by backup, restore, recover, engine "
                        "upgrade, node demote/rm) instead of a stack's")
    p.add_argument("stack", metavar="STACK", nargs="?", default=None,
                   help="stack whose lock to show and remove")
    p.set_defaults(func=cmd_unlock)

    p = _cluster_parser(subparsers, "rollback", help="roll services of a stack back to their "
                              "previous spec and watch them (default: every service that "
                              "has one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the rollback to finish (exit 12 after)")
    _lock_args(p, 0)
    p.add_argument("stack", metavar="STACK", help="stack to roll back")
    p.add_argument("services", metavar="SERVICE", nargs="*",
                   help="services to roll back (short or full names)")
    p.set_defaults(func=cmd_rollback)

    p = _cluster_parser(subparsers, "rm", help="remove a stack (services, networks, secrets, "
                              "configs carrying its label)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("stack", metavar="STACK", help="stack to remove")
    p.set_defaults(func=cmd_rm)

    p = _cluster_parser(subparsers, "audit", help="the deploy/redeploy/rollback history kept in "
                        "the swarm (from any machine; no local state needed)")
    p.add_argument("--json", action="store_true", help="the records as a JSON list")
    p.add_argument("--since", metavar="WHEN", default=None,
                   help="only records since WHEN: a duration (90s, 30m, 2h, 7d) or an ISO time")
    p.add_argument("stack", metavar="STACK", nargs="?", default=None,
                   help="one stack (default: every stack)")
    p.set_defaults(func=cmd_audit)


# --- images: push, build ----------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressPrinter:
    """Per-node lines on stderr, at most one per node per second, plus the last one."""

    def __init__(self, out=sys.stderr, clock=time.monotonic, every: float = 1.0):
        self.out, self.clock, self.every = out, clock, every
        self.last: dict[str, float] = {}
        self.start: dict[str, float] = {}

    def __call__(self, host: str, phase: str, done: int, total: int) -> None:
        now = self.clock()
        key = host or phase
        self.start.setdefault(key, now)
        final = phase == "done" or (phase == "compress" and done >= total)
        if phase == "send" and done == 0:      # the start: nothing to show yet
            self.start[key] = now
            self.last[key] = now
            return
        if not final and now - self.last.get(key, -1e9) < self.every:
            return
        self.last[key] = now
        secs = max(now - self.start[key], 1e-6)
        if phase == "compress":
            print(f"  compressing the archive: {_mb(done)} / {_mb(total)}", file=self.out)
        elif phase == "send":
            print(f"  {host}: sending {_mb(done)} / {_mb(total)}  {done / secs / 1e6:.1f} MB/s",
                  file=self.out)
        elif phase == "done":
            print(f"  {host}: {_mb(done)} sent, loaded and checked in {secs:.1f} s "
                  f"({done / secs / 1e6:.1f} MB/s)", file=self.out)
        self.out.flush()


def _found_cluster(args) -> str:
    """--cluster, else $SWARMSMITH_CLUSTER, else ./swarmsmith.yml (commands with --cluster only)."""
    from inventory.clusterfile import find
    return find(getattr(args, "cluster", None))


def _say(as_json: bool):
    """A line on stderr as it happens; nothing with --json."""
    if as_json:
        return None
    return lambda m: print(m, file=sys.stderr, flush=True)


def cmd_images_push(args) -> int:
    from provision.images.archive import read_images
    from provision.images.push import push_to_cluster

    if bool(args.file) == bool(args.images):
        raise InputError("images push: give IMAGE names (from the local engine) or --file "
                         "ARCHIVE.tar (from docker save), not both or neither")
    if args.file:
        read_images(args.file)        # a bad archive fails before any host is contacted
    result = push_to_cluster(_found_cluster(args), archive=args.file, images=args.images,
                             nodes=args.nodes, on_progress=None if args.json else _Renderer(),
                             compress_wire=not args.no_compress)
    if args.json:
        _print_json(result.to_dict())
        return 0
    _print_push(result)
    return 0


def cmd_images_build(args) -> int:
    """Build images from Debian packages (provision/images/debian.py), optionally push them."""
    from provision.images.debian import build, load
    load(args.file)                       # bad input fails before anything is built
    built = build(args.file, on_progress=None if args.json else _Renderer())
    report = {"build": built.to_dict()}
    if not args.json:
        how = "from the cache" if built.cached else f"built in {built.seconds:.1f} s"
        print(f"{os.path.basename(args.file)}: {len(built.images)} images {how}: {built.archive}")
        for i in built.images:
            print(f"  {', '.join(i.tags)}  {i.id[:19]}")
    if args.push:
        from provision.images.push import push_to_cluster
        result = push_to_cluster(_found_cluster(args), archive=built.archive, nodes=args.nodes,
                                 keep_compressed=True,
                                 on_progress=None if args.json else _Renderer())
        report["push"] = result.to_dict()
        if not args.json:
            _print_push(result)
    if args.json:
        _print_json(report)
    return 0


def _print_push(result) -> None:
    names = ", ".join(t for i in result.images for t in i.tags) or "images"
    changes = result.changes
    print(f"{names}: " + (f"{len(changes)} changes" if changes else "no changes "
                          "(every node has the same image IDs)"))
    for n in result.nodes:
        if n.action == "present":
            print(f"  = {n.host}: already there")
        elif n.action == "tagged":
            print(f"  ~ {n.host}: tagged (image already there)")
        else:
            rate = n.bytes_sent / n.seconds / 1e6 if n.seconds else 0
            print(f"  ~ {n.host}: loaded, {_mb(n.bytes_sent)} sent in {n.seconds:.1f} s "
                  f"({rate:.1f} MB/s)")


def add_image_commands(sub) -> None:
    images = sub.add_parser("images", help="put images on the nodes without a registry")
    isub = images.add_subparsers(dest="images_command", metavar="IMAGES_COMMAND")
    isub.required = True
    push = _cluster_parser(isub, "push", help="send images from the local engine (or a docker save "
                           "archive) to the nodes over SSH; nodes that have them are skipped")
    push.add_argument("images", nargs="*", metavar="IMAGE",
                      help="image names or IDs in the local engine (DOCKER_HOST)")
    push.add_argument("--file", metavar="ARCHIVE.tar", help="a `docker save` archive instead")
    push.add_argument("--nodes", nargs="+", metavar="NODE", default=["all"],
                      help="all (default), managers, workers, or node names (after the IMAGEs)")
    push.add_argument("--no-compress", action="store_true",
                      help="send the archive as it is (default: gzip on the wire)")
    push.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    push.set_defaults(func=cmd_images_push)

    build = _cluster_parser(isub, "build", help="build images from Debian packages (mmdebstrap, no "
                            "engine needed; cached), optionally push them to the nodes")
    build.add_argument("file", metavar="IMAGES.yml", help="image file (see "
                       "examples/tutorial/images.yml)")
    build.add_argument("--push", action="store_true", help="push the images to the nodes")
    build.add_argument("--nodes", nargs="+", metavar="NODE", default=["all"],
                       help="with --push: all (default), managers, workers, or node names")
    build.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    build.set_defaults(func=cmd_images_build)


# --- agent: install, status, remove, run (stacks/agent/) -----------------------------------

def cmd_agent_install(args) -> int:
    from stacks.agent.service import install
    result = install(_found_cluster(args), say=_say(args.json), wait=args.wait)
    if args.json:
        _print_json(result.to_dict())
        return 0
    print(f"agent ({result.image}): " + (f"{len(result.changes)} changes" if result.changes
                                         else "no changes"))
    _print_changes(result.changes, none_msg="  (the service runs as the cluster file says)")
    return 0


def agent_status_lines(result) -> list[str]:
    svc, st = result.service, result.status
    if svc is None:
        lines = ["agent: not installed (swarmsmith agent install)"]
    else:
        lines = [f"agent: {svc['task_state'] or 'no task'} ({svc['image']}), following "
                 f"{svc['repo']} branch {svc['branch']} every {svc['interval']} s, drift "
                 f"{'corrected' if svc['correct_drift'] else 'reported'}, stacks taken out of "
                 f"the file {'removed' if svc.get('prune') else 'reported'}"
                 + (f", {svc['restarts']} restarts" if svc["restarts"] else "")]
        if svc.get("task_error"):
            lines.append(f"  task error: {svc['task_error']}")
    if not st:
        return lines + ["  no reconcile yet"]
    lines.append(f"last reconcile: {st.get('time')} ({st.get('reason')}), commit "
                 f"{(st.get('commit') or '-')[:12]}, head {(st.get('head') or '-')[:12]}")
    if st.get("error"):
        lines.append(f"  error: {st['error']}")
    if st.get("refused"):
        lines.append(f"  refused commit {st['refused']['commit'][:12]}: {st['refused']['error']}")
    for name, s in sorted((st.get("stacks") or {}).items()):
        lines.append(f"  {name:<20} {s.get('outcome', '')}"
                     + (f": {s['detail']}" if s.get("detail") else ""))
        for d in s.get("drift") or []:
            lines.append(f"    drift: {d}")
    return lines


def cmd_agent_status(args) -> int:
    from stacks.agent.service import status
    result = status(_found_cluster(args))
    if args.json:
        _print_json(result.to_dict())
    else:
        print("\n".join(agent_status_lines(result)))
    return 0


def cmd_agent_remove(args) -> int:
    from stacks.agent.service import remove
    result = remove(_found_cluster(args))
    if args.json:
        _print_json(result.to_dict())
    else:
        _print_changes(result.changes, none_msg="agent: not installed, no changes")
    return 0


def cmd_agent_run(args) -> int:
    from provision.engine_api.adapter import connect_local
    from stacks.agent.loop import Agent, AgentConfig, exit_on_sigterm
    exit_on_sigterm()
    cfg = AgentConfig.from_env()
    Agent(cfg, connect_local(credentials=cfg.credentials()),
          say=lambda line: print(line, flush=True)).run_forever()
    return 0


def add_agent_commands(sub) -> None:
    agent = sub.add_parser("agent", help="an agent inside the swarm that keeps the stacks "
                           "equal to a git branch (install, status, remove)")
    asub = agent.add_subparsers(dest="agent_command", metavar="AGENT_COMMAND",
                                parser_class=_Parser)
    asub.required = True
    p = _cluster_parser(asub, "install", help="build its image, push it to the managers, create "
                        "or update its service from the cluster file's agent: (idempotent)")
    p.add_argument("--wait", type=float, default=120, metavar="SECONDS",
                   help="wait this long for its task to run (0: do not wait)")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.set_defaults(func=cmd_agent_install)
    for name, func, hlp in (
            ("status", cmd_agent_status, "its task and its last reconcile: commit, time, "
             "outcome per stack, drift found"),
            ("remove", cmd_agent_remove, "remove its service, secret and config (the audit "
             "history stays)")):
        p = _cluster_parser(asub, name, help=hlp)
        p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
        p.set_defaults(func=func)
    p = asub.add_parser("run", help="the agent's loop (what its service runs; settings from "
                        "SWARMSMITH_AGENT_* variables)")
    p.set_defaults(func=cmd_agent_run)


# --- day two: node, tokens, ca, autolock, unlock-key, unlock-swarm, backup, restore, recover --
# The work is in provision/swarm/nodes.py, rotation.py, unlock.py, backup.py and restore.py.

def _manager(args):
    from provision.engine_api.access import connect
    return connect(_found_cluster(args))


def _managers_lock(args, operation: str, m):
    """The cluster's managers lock (held while a manager is demoted or removed), taken through
    the manager `m` already connected."""
    from provision.swarm.managers import managers_lock
    return lambda: managers_lock(_found_cluster(args), operation, api=m.api,
                                 notify=_timed_lines(args))


def _timed_lines(args):
    """Progress events (or a lock's notices) as lines on stderr stamped with the seconds since
    the start, a host's steps after its name; none with --json."""
    if getattr(args, "json", False):
        return None
    t0 = time.monotonic()

    def line(event) -> None:
        text = event if isinstance(event, str) else getattr(event, "message", "")
        host = getattr(event, "host", None)
        if text:
            text = f"{host:<22} {text}" if host else text
            print(f"[{time.monotonic() - t0:6.2f}s] {text}", file=sys.stderr, flush=True)
    return line


def _emit(args, result: dict, lines: list[str]) -> None:
    if args.json:
        _print_json(result)
        return
    for line in lines:
        print(line)


def _change_lines(res, none: str) -> list[str]:
    lines = [f"  ~ {c}" for c in res.changes] or [none]
    lines += [f"  note: {n}" for n in res.notes]
    return lines


def _positive(value: float, flag: str) -> None:
    if not (0 < value <= 86400):
        raise InputError(f"{flag} {value:g}: expected seconds between 0 and 86400")


def _positive_or_zero(value: float, flag: str) -> None:
    if not (0 <= value <= 86400):
        raise InputError(f"{flag} {value:g}: expected seconds from 0 to 86400")


def cmd_node_ls(args) -> int:
    from provision.swarm.nodes import list_nodes
    with _manager(args) as m:
        out = list_nodes(m.api, m.names)
    lines = [_quorum_line(out["quorum"]), ""] + _table(out["nodes"], (
        _NODE, *_names_column(out["nodes"]), ("ID", 13, lambda n: n["id"][:12]), _ROLE, _STATE, _AVAIL, _MANAGER, _ENGINE,
        ("LABELS", 0, _labels)))
    _emit(args, out, lines)
    return 0


def cmd_node_drain(args) -> int:
    from provision.swarm.nodes import DrainOptions, drain_node
    _positive(args.timeout, "--timeout")
    with _manager(args) as m:
        res = drain_node(m.api, args.node, DrainOptions(timeout=args.timeout),
                         names=m.names, on_progress=_timed_lines(args))
    lines = _change_lines(res, f"node {res.node}: already drained")
    if res.moved:
        lines.append(f"  tasks moved elsewhere: {', '.join(res.moved)}")
    for svc, why in sorted(res.unplaced.items()):
        lines.append(f"  could not be placed or run elsewhere: {svc}: {why}")
    if res.remaining:
        lines.append(f"  timed out after {args.timeout:g} s; still on the node: "
                     f"{', '.join(res.remaining)}")
    if not res.remaining:
        lines.append(f"node {res.node}: drained, no service task runs on it"
                     + ("; the services above do not run all their replicas elsewhere"
                        if res.unplaced else ""))
    _emit(args, res.to_dict(), lines)
    return res.exit_code


def cmd_node_availability(args) -> int:
    from provision.swarm.nodes import set_availability
    with _manager(args) as m:
        res = set_availability(m.api, args.node, availability=args.availability,
                               names=m.names)
    none = "already active" if args.availability == "active" else "already paused"
    _emit(args, res.to_dict(), _change_lines(res, f"node {res.node}: {none}"))
    return res.exit_code


def cmd_node_promote(args) -> int:
    from provision.swarm.nodes import promote_node
    with _manager(args) as m:
        res = promote_node(m.api, args.node, force=args.force, names=m.names)
    _emit(args, res.to_dict(), _change_lines(res, f"node {res.node}: already a manager"))
    return res.exit_code


def cmd_node_demote(args) -> int:
    from provision.swarm.nodes import demote_node
    with _manager(args) as m:
        res = demote_node(m.api, args.node, m.names,
                          lock=_managers_lock(args, "node demote", m))
    _emit(args, res.to_dict(), _change_lines(res, f"node {res.node}: already a worker"))
    return res.exit_code


def cmd_node_label(args) -> int:
    from provision.swarm.nodes import label_node
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
        res = label_node(m.api, args.node, add, rm, names=m.names)
    _emit(args, res.to_dict(), _change_lines(res, f"node {res.node}: labels unchanged"))
    return 0


def cmd_node_rm(args) -> int:
    from provision.swarm.nodes import DrainOptions, RemoveOptions, leave_over_ssh, remove_node
    _positive(args.timeout, "--timeout")
    with _manager(args) as m:
        res = remove_node(m.api, args.node, RemoveOptions(force=args.force,
                                                          drain=DrainOptions(timeout=args.timeout)),
                          names=m.names,
                          leave=leave_over_ssh(_found_cluster(args)),
                          on_progress=_timed_lines(args),
                          lock=_managers_lock(args, "node rm", m))
    lines = _change_lines(res, f"node {res.node}: nothing to do")
    lines.append(f"  note: if the cluster file still lists {res.node}, the next `swarmsmith up` "
                 "joins it again")
    _emit(args, res.to_dict(), lines)
    return 0


def cmd_tokens_rotate(args) -> int:
    from provision.swarm.rotation import rotate_tokens
    both = not (args.worker or args.manager)
    with _manager(args) as m:
        res = rotate_tokens(m.api, worker=args.worker or both, manager=args.manager or both)
    _emit(args, res.to_dict(), _change_lines(res, "no changes"))
    return 0


def cmd_ca_rotate(args) -> int:
    from provision.swarm.rotation import rotate_ca
    _positive(args.timeout, "--timeout")
    with _manager(args) as m:
        res = rotate_ca(m.api, timeout=args.timeout, on_progress=_timed_lines(args))
    _emit(args, res.to_dict(), _change_lines(res, "no changes"))
    return res.exit_code


def cmd_autolock(args) -> int:
    from provision.swarm.rotation import set_autolock
    with _manager(args) as m:
        res = set_autolock(m.api, args.state == "on")
    _emit(args, res.to_dict(), _change_lines(res, f"autolock already {args.state}"))
    return 0


def cmd_unlock_key(args) -> int:
    from provision.swarm.rotation import read_unlock_key, rotate_unlock_key
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


def _key_from_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise InputError(f"{path}: cannot read the unlock key: {e.strerror}") from None


def _read_unlock_key(args) -> str:
    """--key-file, else $SWARMSMITH_UNLOCK_KEY, else stdin when piped, else a prompt: never an
    argument (process arguments are visible to every user of the machine)."""
    if args.key_file:
        key = _key_from_file(args.key_file)
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


def cmd_unlock_swarm(args) -> int:
    from provision.swarm.unlock import unlock_managers
    key = _read_unlock_key(args)
    res = unlock_managers(_found_cluster(args), key, on_progress=_timed_lines(args))
    _emit(args, res.to_dict(), _change_lines(res, "no locked manager"))
    return res.exit_code


def cmd_backup(args) -> int:
    from provision.swarm.backup import BackupOptions, take_backup
    res = take_backup(_found_cluster(args), BackupOptions(out=args.out, node=args.node),
                      on_progress=_timed_lines(args))
    m = res.manifest
    lines = [f"backup {res.path} (mode 0600) from {res.host}: {len(m['services'])} services, "
             f"{len(m['secrets'])} secrets, {len(m['configs'])} configs; engine stopped "
             f"{res.engine_stopped_seconds:.1f} s",
             "  the archive holds the swarm's keys and secrets: keep it like a password"]
    lines += [f"  note: {n}" for n in res.notes]
    _emit(args, res.to_dict(), ["\n".join(lines)])
    return 0


def cmd_restore(args) -> int:
    from provision.restore import restore
    key = _key_from_file(args.key_file) if args.key_file else None
    key = key or os.environ.get("SWARMSMITH_UNLOCK_KEY") or None
    res = restore(_found_cluster(args), args.file, args.to, force=args.force, unlock_key=key,
                  on_progress=_timed_lines(args))
    lines = [f"  ~ {c}" for c in res.changes]
    lines += [f"restored swarm {res.swarm_id[:12]} on {res.host}: "
              f"{len(res.services)} services, {len(res.secrets)} secrets, "
              f"{len(res.configs)} configs"]
    lines += [f"  note: {n}" for n in res.notes]
    _emit(args, res.to_dict(), ["\n".join(lines)])
    return res.exit_code


def cmd_recover(args) -> int:
    from provision.restore import recover
    _positive_or_zero(args.wait, "--wait")
    res = recover(_found_cluster(args), force_new_cluster=args.force_new_cluster,
                  on_progress=_timed_lines(args), services_timeout=args.wait)
    lines = [f"  {h}: {what}" for h, what in sorted(res.managers.items())]
    lines += [f"  ~ {c}" for c in res.changes]
    lines += [f"  {n}" for n in res.notes]
    _emit(args, res.to_dict(), ["\n".join(lines)])
    return res.exit_code


def _cluster_json_args(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def add_day_two_commands(sub) -> None:
    node = sub.add_parser("node", help="swarm nodes: ls, drain, activate, pause, promote, "
                          "demote, label, rm")
    nsub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND",
                               parser_class=sub._parser_class)
    nsub.required = True
    p = _cluster_parser(nsub, "ls", help="nodes with role, state, availability, engine and quorum")
    _cluster_json_args(p)
    p.set_defaults(func=cmd_node_ls)
    p = _cluster_parser(nsub, "drain", help="stop scheduling on a node and wait until its tasks "
                        "run elsewhere (names services that could not be placed: exit 10; "
                        "timeout: exit 12)")
    _cluster_json_args(p)
    p.add_argument("node", metavar="NODE", help="the cluster file's name, hostname or node ID")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait (default 300)")
    p.set_defaults(func=cmd_node_drain)
    for verb, hlp in (("activate", "let swarm schedule tasks on the node again"),
                      ("pause", "no new tasks on the node; running ones stay")):
        p = _cluster_parser(nsub, verb, help=hlp)
        _cluster_json_args(p)
        p.add_argument("node", metavar="NODE", help="hostname or node ID")
        p.set_defaults(func=cmd_node_availability,
                       availability="active" if verb == "activate" else "pause")
    p = _cluster_parser(nsub, "promote", help="make a worker a manager (refused when the manager "
                        "count would become even, unless --force)")
    _cluster_json_args(p)
    p.add_argument("node", metavar="NODE", help="hostname or node ID")
    p.add_argument("--force", action="store_true", help="allow an even number of managers")
    p.set_defaults(func=cmd_node_promote)
    p = _cluster_parser(nsub, "demote", help="make a manager a worker (refused when it would lose "
                        "quorum or remove the last manager)")
    _cluster_json_args(p)
    p.add_argument("node", metavar="NODE", help="hostname or node ID")
    p.set_defaults(func=cmd_node_demote)
    p = _cluster_parser(nsub, "label", help="add (KEY=VALUE) or remove (KEY-) node labels")
    _cluster_json_args(p)
    p.add_argument("node", metavar="NODE", help="hostname or node ID")
    p.add_argument("labels", metavar="KEY=VALUE|KEY-", nargs="+",
                   help="a label to set, or (KEY-) to remove")
    p.set_defaults(func=cmd_node_label)
    p = _cluster_parser(nsub, "rm", help="drain the node, make it leave, remove it (a manager is "
                        "demoted first, refused when that loses quorum); --force for a dead node")
    _cluster_json_args(p)
    p.add_argument("node", metavar="NODE", help="hostname or node ID")
    p.add_argument("--force", action="store_true",
                   help="remove a node that is down without it leaving (explains what it means)")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the drain")
    p.set_defaults(func=cmd_node_rm)

    tokens = sub.add_parser("tokens", help="join tokens: rotate")
    tsub = tokens.add_subparsers(dest="tokens_command", metavar="TOKENS_COMMAND",
                                 parser_class=sub._parser_class)
    tsub.required = True
    p = _cluster_parser(tsub, "rotate", help="new join tokens (both unless --worker/--manager); "
                        "tokens are never printed")
    _cluster_json_args(p)
    p.add_argument("--worker", action="store_true", help="rotate the worker join token only")
    p.add_argument("--manager", action="store_true", help="rotate the manager join token only")
    p.set_defaults(func=cmd_tokens_rotate)

    ca = sub.add_parser("ca", help="the swarm's root CA: rotate")
    csub = ca.add_subparsers(dest="ca_command", metavar="CA_COMMAND", parser_class=sub._parser_class)
    csub.required = True
    p = _cluster_parser(csub, "rotate", help="new root CA and node certificates; waits until every "
                        "node trusts the new root (exit 12 after --timeout)")
    _cluster_json_args(p)
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for every node to trust the new root (default 300)")
    p.set_defaults(func=cmd_ca_rotate)

    p = _cluster_parser(sub, "autolock", help="turn manager autolock on or off")
    _cluster_json_args(p)
    p.add_argument("state", choices=("on", "off"), help="on: managers need the unlock key "
                   "after a restart; off: they do not")
    p.set_defaults(func=cmd_autolock)

    p = _cluster_parser(sub, "unlock-key", help="print the unlock key (on request only; never "
                       "stored); --rotate makes a new one")
    _cluster_json_args(p)
    p.add_argument("--rotate", action="store_true",
                   help="make a new unlock key and print it (once)")
    p.set_defaults(func=cmd_unlock_key)

    p = _cluster_parser(sub, "unlock-swarm", help="unlock every locked manager (key from "
                        "--key-file, $SWARMSMITH_UNLOCK_KEY, stdin or a prompt; never an "
                        "argument)")
    _cluster_json_args(p)
    p.add_argument("--key-file", metavar="FILE", default=None,
                   help="file holding the unlock key (else $SWARMSMITH_UNLOCK_KEY, stdin, "
                        "a prompt)")
    p.set_defaults(func=cmd_unlock_swarm)

    p = _cluster_parser(sub, "backup", help="copy a manager's swarm state (a non-leader one; its "
                       "engine stopped only for the copy) into a 0600 archive with a manifest")
    _cluster_json_args(p)
    p.add_argument("--out", metavar="FILE", default=None,
                   help="new archive path in an existing folder, or an existing folder to "
                        "put it in (default ./<cluster>-swarm-<time>.tar); an existing file is "
                        "never replaced")
    p.add_argument("--node", metavar="HOST", default=None,
                   help="the manager to copy (default: a non-leader one); a restore can grow "
                        "back to several managers only on a host with this manager's address")
    p.set_defaults(func=cmd_backup)

    p = _cluster_parser(sub, "restore", help="restore a backup onto a host of the cluster as the "
                       "only manager of the restored swarm; `up` then joins the others")
    _cluster_json_args(p)
    p.add_argument("file", metavar="FILE", help="archive written by `swarmsmith backup`")
    p.add_argument("--to", required=True, metavar="HOST", help="a host of the cluster's inventory")
    p.add_argument("--force", action="store_true",
                   help="restore a backup of another cluster, or onto a host with another "
                        "address than the backed-up manager (it then stays one manager); a "
                        "node of a live swarm is refused even so (it leaves first)")
    p.add_argument("--key-file", metavar="FILE", default=None,
                   help="unlock key of the backup's swarm when it was autolocked")
    p.set_defaults(func=cmd_restore)

    p = _cluster_parser(sub, "recover", help="explain a swarm that lost quorum; with "
                       "--force-new-cluster re-form it on a surviving manager and join the "
                       "other managers again")
    _cluster_json_args(p)
    p.add_argument("--force-new-cluster", action="store_true",
                   help="re-form the swarm on a surviving manager (its raft state; the "
                        "other managers join again); without it: only explain")
    p.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                   help="after re-forming, wait this long for the services to run all their "
                   "replicas again (0: do not wait; still short then: exit 5) (default 120)")
    p.set_defaults(func=cmd_recover)


# --- services: ps, logs, scale (stacks/operations/service_ops.py does the work) ----------

def cmd_ps(args) -> int:
    from stacks.operations.service_ops import ps
    with _manager(args) as m:
        rows = ps(m.api, args.target, all_tasks=args.all, node_names=m.names)
    if args.json:
        _print_json([r.to_dict() for r in rows])
        return 0
    print(f"{'TASK':<32} {'NODE':<22} {'DESIRED':<9} {'STATE':<10} {'SINCE':<21} ERROR")
    for r in rows:
        print(f"{r.task:<32} {r.node:<22} {r.desired:<9} {r.state:<10} {r.since[:19]:<21} {r.error}")
    if not rows:
        print(f"{args.target}: no tasks")
    return 0


def cmd_logs(args) -> int:
    from stacks.operations.service_ops import LogOptions, logs, since_epoch
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
    from provision.base.errors import EXIT_OK
    from stacks.operations.service_ops import ScaleOptions, parse_scale_args, scale_services
    wanted = parse_scale_args(args.pairs)
    if not (0 < args.timeout <= 86400):
        raise InputError(f"--timeout {args.timeout:g}: expected seconds between 0 and 86400")
    res = scale_services(args.cluster, wanted,
                         ScaleOptions(timeout=args.timeout, watch=not args.detach,
                                      lock_wait=args.lock_wait),
                         on_progress=_Renderer(as_json=args.json))
    if args.json:
        _print_json(res.to_dict())
    else:
        for name, (old, new) in sorted(res.changed.items()):
            print(f"  ~ {name}: replicas {old} -> {new}")
        for name in res.unchanged:
            print(f"  = {name}: already at {wanted.get(name, wanted.get(name.split('_', 1)[-1]))}")
        if res.report is not None:
            print(res.report.summary())
        if res.changed:
            print("  note: the compose files still say otherwise; the next deploy's plan shows "
                  "the difference and sets the files' count back")
    return res.exit_code if res.report else EXIT_OK


def add_service_commands(sub) -> None:
    p = _cluster_parser(sub, "ps", help="tasks of a stack or service: node, state, error")
    p.add_argument("--json", action="store_true", help="the tasks as a JSON list")
    p.add_argument("--all", action="store_true", help="every task swarm remembers, not only the "
                   "current one and the last failure of each slot")
    p.add_argument("target", metavar="STACK|SERVICE", help="a stack, or one service "
                   "(full or short name)")
    p.set_defaults(func=cmd_ps)

    p = _cluster_parser(sub, "logs", help="a service's logs through the Engine API, each line "
                       "prefixed by task and node")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--since", default=None, help="30s, 10m, 2h, 1d, a unix time or RFC 3339")
    p.add_argument("--tail", type=int, default=None, help="the last N lines of the service: "
                   "every task's lines merged in time order, then cut to N")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="prefix each line with the time the engine received it")
    p.add_argument("service", metavar="SERVICE", help="the service's full name "
                   "(STACK_SERVICE) or ID")
    p.set_defaults(func=cmd_logs)

    p = _cluster_parser(sub, "scale", help="set replica counts and watch them like a deploy "
                       "(same exit codes); the next deploy's plan shows the drift")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds to wait for the services (exit 12 after)")
    p.add_argument("--detach", action="store_true", help="do not watch")
    p.add_argument("--lock-wait", type=float, default=0,
                   help="seconds to wait for the stack's lock (exit 4 after)")
    p.add_argument("pairs", metavar="SERVICE=N", nargs="+",
                   help="service (full or short name) and its replica count")
    p.set_defaults(func=cmd_scale)


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


class _TopParser(_Parser):
    """The `swarmsmith` parser: the connection flags may come before the subcommand or after
    it (after wins); the ones given nowhere get their defaults here."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        for dest, default in CONNECTION_DEFAULTS.items():
            if not hasattr(ns, dest):
                setattr(ns, dest, default)
        return ns, rest


class _VersionAction(argparse.Action):
    """--version: the installed package's version, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print swarmsmith's version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata
        try:
            version = metadata.version("swarmsmith")
        except metadata.PackageNotFoundError:     # run from a checkout that was never installed
            version = "unknown (not installed)"
        print(f"swarmsmith {version}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = _TopParser(prog="swarmsmith", description="Bootstrap Docker Swarm clusters from a short "
                   "YAML file and keep compose stacks deployed on them.",
                   epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                   parents=[_connection()])
    p.add_argument("--version", action=_VersionAction)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    lab = sub.add_parser("lab", help="local lab hosts on this machine (network namespaces)")
    lsub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", parser_class=_Parser)
    lsub.required = True
    up = lsub.add_parser("up", help="create (or repair) lab hosts; idempotent")
    up.add_argument("--nodes", type=int, default=3, help="number of hosts (default 3)")
    up.add_argument("--name", default="lab", help="lab name, the hosts' name prefix "
                    "(default lab)")
    up.add_argument("--image", default=None, choices=("default", "debian-12"),
                    help="hosts' root: default shares this machine's (fast); debian-12 is a "
                         "Debian 12 of their own without Docker, built once (~30 s) and cached")
    up.add_argument("--vm", action="store_true",
                    help="hosts are QEMU VMs with their own kernel and systemd (KVM when it "
                         "works, else emulated: minutes per boot; docs/lab.md)")
    up.add_argument("--engine-preinstalled", action="store_true",
                    help="with --vm: boot new VMs with Docker's engine already installed")
    up.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    up.set_defaults(func=cmd_lab_up)
    down = lsub.add_parser("down", help="remove a lab and everything it made")
    down.add_argument("--name", default="lab", help="the lab to remove (default lab)")
    down.add_argument("--all", action="store_true", help="remove every lab on this machine")
    down.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    down.set_defaults(func=cmd_lab_down)
    ls = lsub.add_parser("ls", help="list lab hosts")
    ls.add_argument("--name", default=None, help="one lab (default: every lab)")
    ls.add_argument("--json", action="store_true", help="the hosts as a JSON list, with "
                    "their host keys")
    ls.set_defaults(func=cmd_lab_ls)

    add_cluster_commands(sub)    # `plan` is the cluster's, and with -c the stack's
    add_image_commands(sub)
    add_agent_commands(sub)
    add_day_two_commands(sub)
    add_service_commands(sub)
    add_stack_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("SWARMSMITH_DEBUG"):
        import logging
        # stamped with the milliseconds since start: the debug lines are the profile of a run
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="[debug] +%(relativeCreated)6.0fms %(message)s")
    try:
        if args.accept_new_host_keys or "provision.engine_api.access" in sys.modules:
            from provision.engine_api.access import accept_new_host_keys
            accept_new_host_keys(args.accept_new_host_keys)
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
    except Exception as e:  # a bug or a library error nobody turned into ours: one line, no trace
        if os.environ.get("SWARMSMITH_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"swarmsmith: error: unexpected {type(e).__name__}: {first} (set "
              "SWARMSMITH_DEBUG=1 to see the traceback)", file=sys.stderr)
        return EXIT_FAILED


def run() -> None:
    """The command's entry point: main(), then exit without the interpreter's teardown of every
    imported module (docker, paramiko, cryptography), which costs a no-op run up to a second on a
    busy machine. Exit handlers (the Engine API forwarders' folders) still run first."""
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)          # a profiler or coverage writes its data at the normal exit
    import atexit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):    # closed by a reader that went away
            pass
    atexit._run_exitfuncs()
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
