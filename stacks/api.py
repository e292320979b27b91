"""swarmsmith as a library: typed options in, typed results out, progress to a callback.

    from stacks import api
    result = api.deploy("web", ["stack.yml"], api.DeployOptions(cluster_file="cluster.yml"))
    if result.exit_code:
        ...   # result.outcomes, result.watch, result.to_dict()

Clusters: up, status, down. Stacks: config, plan, deploy, redeploy, rollback, rm, unlock.
Day two: scale, drain, remove_node, rotate_ca, backup, restore, recover, upgrade_engines,
push_images.
Every function takes an options dataclass (defaults as the command line's) and returns a
result dataclass with `to_dict()` (what `--json` prints) and, where it has one, `exit_code`
(the command line's). Errors are SwarmsmithError subclasses (provision/base/errors.py) carrying
their exit code. Nothing here prints: pass `on_progress` to receive the events of
stacks/events.py (the command line renders them).

`up` lives here rather than in provision/ because it deploys the cluster file's `stacks:`
after the swarm step, through the same deploy() as `swarmsmith deploy`: it is orchestrated
above both layers. See docs/api.md.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dataclasses import dataclass, field

from provision.base.errors import SwarmsmithError
from provision.base.progress import Notice
from stacks.events import (HostProgress, ImageResolved, PlanReady, ProgressCallback, StepDone,
                           WatchFinished, WatchProgress, WatchStarted, emit)

if TYPE_CHECKING:
    from provision.bootstrap import DownOptions, DownResult, UpOptions, UpResult
    from provision.swarm.status import ClusterStatus
    from stacks.compose.config_view import ConfigOptions, ConfigResult
    from stacks.operations.deploy import (DeployOptions, DeployResult, LoadedStack, PlanResult,
                                          RmOptions, RmResult, StackOptions)
    from provision.swarm.lock import UnlockOptions, UnlockResult
    from stacks.operations.redeploy import RedeployOptions
    from stacks.operations.rollback import RollbackOptions, RollbackResult
    from stacks.operations.service_ops import ScaleOptions, ScaleResult
    from provision.images.push import PushResult
    from provision.restore import RecoverResult, RestoreResult
    from provision.swarm.backup import BackupOptions, BackupResult
    from provision.swarm.nodes import DrainOptions, DrainResult, NodeChange, RemoveOptions
    from provision.swarm.rotation import RotationResult
    from provision.upgrade import UpgradeOptions, UpgradeResult

# Each command's names are imported on first use: cron and CI run every command as a new
# process, and the bootstrap's modules (for deploys) or the compose loader, planner and
# applier (for an `up` with no stacks, `status`, `down`) are a tenth of a second it need not pay.
_LAZY = {"UpOptions": "provision.bootstrap", "UpResult": "provision.bootstrap",
         "DownOptions": "provision.bootstrap", "DownResult": "provision.bootstrap",
         "ClusterStatus": "provision.swarm.status",
         "ConfigOptions": "stacks.compose.config_view",
         "ConfigResult": "stacks.compose.config_view",
         **{name: "stacks.operations.deploy" for name in (
             "DeployOptions", "DeployResult", "LoadedStack", "PlanResult", "RmOptions",
             "RmResult", "StackOptions")},
         "RedeployOptions": "stacks.operations.redeploy",
         "UnlockOptions": "provision.swarm.lock", "UnlockResult": "provision.swarm.lock",
         "RollbackOptions": "stacks.operations.rollback",
         "RollbackResult": "stacks.operations.rollback",
         "ScaleOptions": "stacks.operations.service_ops",
         "ScaleResult": "stacks.operations.service_ops",
         "DrainOptions": "provision.swarm.nodes", "DrainResult": "provision.swarm.nodes",
         "RemoveOptions": "provision.swarm.nodes", "NodeChange": "provision.swarm.nodes",
         "RotationResult": "provision.swarm.rotation",
         "BackupOptions": "provision.swarm.backup", "BackupResult": "provision.swarm.backup",
         "RestoreResult": "provision.restore", "RecoverResult": "provision.restore",
         "UpgradeOptions": "provision.upgrade", "UpgradeResult": "provision.upgrade",
         "PushResult": "provision.images.push"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "up", "status", "down", "config", "load", "plan", "deploy", "redeploy", "rollback", "rm",
    "unlock", "unlock_managers", "UnlockOptions", "UnlockResult",
    "UpOptions", "UpResult", "DownOptions", "DownResult", "ClusterStatus",
    "ConfigOptions", "ConfigResult", "StackOptions", "DeployOptions", "RedeployOptions",
    "RollbackOptions", "RmOptions", "LoadedStack", "PlanResult", "DeployResult",
    "RollbackResult", "RmResult",
]


# --- clusters -----------------------------------------------------------------------------

def up(cluster_file: str | None = None, options: UpOptions | None = None, *,
       on_progress: ProgressCallback | None = None) -> UpResult:
    """Create or converge the cluster (hosts, engine, swarm), then deploy its `stacks:`.

    The stacks' compose files are read and checked before any host is touched. A stack
    whose rollout does not converge raises SwarmsmithError with that deploy's exit code;
    `UpResult.stacks` holds the DeployResult of each stack deployed."""
    from provision import bootstrap
    from provision.base.clusters import find_cluster_file, load_cluster
    options = options or bootstrap.UpOptions()
    path = find_cluster_file(cluster_file)
    cluster = load_cluster(path)
    stacks = []
    if cluster.stacks:
        from stacks.operations.deploy import StackOptions
        stacks = [load(ref.name, ref.compose,
                       StackOptions(cluster_file=path, env_file=ref.env_file))
                  for ref in cluster.stacks]
    agent = None
    if cluster.agent is not None:     # its keys and passwords read before any host is touched
        from stacks.agent.service import prepare
        agent = prepare(path)
    result = bootstrap.up(cluster, options, on_progress)
    if result.dry_run:
        return result
    result.changes += _images_for_new_nodes(path, cluster, result, on_progress)
    for loaded in stacks:
        result.changes += _deploy_cluster_stack(loaded, path, result, on_progress)
    if agent is not None:     # installed or updated; unchanged when nothing changed
        from stacks.agent.service import install
        emit(on_progress, HostProgress("agent", "installing"))
        installed = install(path, prepared=agent,
                            say=lambda m: emit(on_progress, HostProgress("agent", m)))
        result.changes += [f"agent: {c}" for c in installed.changes]
    return result


def _images_for_new_nodes(path: str, cluster, result: UpResult,
                          on_progress: ProgressCallback | None) -> list[str]:
    """Nodes that joined in this run may be given tasks of services already running, whose
    images (put on nodes, not pulled from a registry) they lack: swarm would reject those tasks
    there. Say which images which nodes lack, or push them (`images: {push_missing: true}`)."""
    joined = {c.split(": ", 1)[0] for c in result.changes if ": joined as " in c}
    new = {n["node_id"] for n in result.nodes if n["name"] in joined and n.get("node_id")}
    if not new or any(": swarm initialised" in c for c in result.changes):
        return []       # a new swarm runs no service yet
    from provision.engine_api.access import connect
    from stacks.images.check import missing_on_new_nodes, ssh_lister
    try:
        engine = connect(path, shared=True).api
        missing = missing_on_new_nodes(engine.services(), engine.nodes(),
                                       ssh_lister(path, local=engine), new)
    except SwarmsmithError as e:        # the swarm is up; only this check could not be made
        result.warnings.append(f"the images of the new nodes could not be checked: {e}")
        return []
    if not missing:
        return []
    lines = [f"image {image} is not on new node(s) {', '.join(sorted(hosts))}, which may run "
             "its service's tasks" for image, hosts in sorted(missing.items())]
    if not cluster.push_missing_images:
        result.warnings += [f"{line}: put it there (`swarmsmith images push --nodes NODE "
                            "...`, or `images: {push_missing: true}` in the cluster file)"
                            for line in lines]
        return []
    from stacks.images.push_missing import LOCAL_ENGINE, push_missing
    for line in lines:
        emit(on_progress, HostProgress("images", line + "; pushing it"))
    return push_missing(missing, LOCAL_ENGINE, path,
                        say=lambda m: emit(on_progress, HostProgress("images", m)))


# what `up` does not show of its stacks' deploys (as before: their steps only)
_DEPLOY_DETAIL = (PlanReady, ImageResolved, WatchStarted, WatchProgress, WatchFinished)


def _deploy_cluster_stack(loaded: LoadedStack, cluster_file: str, result: UpResult,
                          on_progress: ProgressCallback | None) -> list[str]:
    """One of the cluster file's stacks, deployed as `swarmsmith deploy` would (plan, apply
    under the stack lock, watch); its applied steps are reported as the stack's progress."""
    who = f"stack {loaded.name}"

    def forward(event) -> None:
        if isinstance(event, StepDone):
            emit(on_progress, HostProgress(who, event.text))
        elif not isinstance(event, _DEPLOY_DETAIL):
            emit(on_progress, event)       # warnings (audit trail) go through

    from stacks.operations.deploy import DeployOptions
    emit(on_progress, HostProgress(who, "deploying"))
    deployed = deploy(loaded, options=DeployOptions(cluster_file=cluster_file, lock_wait=60),
                      on_progress=forward)
    result.stacks.append(deployed)
    if deployed.exit_code != 0:
        services = (deployed.watch.to_dict() if deployed.watch else {}).get("services", [])
        reasons = [f"{s['name']}: {s['outcome']} ({s.get('reason') or ''})"
                   for s in services if s.get("outcome") not in ("converged", "done")]
        err = SwarmsmithError(f"stack {loaded.name} did not converge: " + "; ".join(reasons))
        err.exit_code = deployed.exit_code
        raise err
    return [f"{who}: {d}" for d in deployed.applied.done]


def status(cluster_file: str | None = None, *, stack: str | None = None,
           accept_new_host_keys: bool = False) -> ClusterStatus:
    """Nodes with quorum health, services with running/desired replicas (of one stack, if
    given), failing tasks; exit_code 5 when degraded (`problems` says why)."""
    from provision.base.clusters import find_cluster_file
    from provision.swarm.status import status as cluster_status
    return cluster_status(find_cluster_file(cluster_file), stack, accept_new_host_keys)


def down(cluster_file: str | None = None, options: DownOptions | None = None, *,
         on_progress: ProgressCallback | None = None) -> DownResult:
    """Remove what `up` made (lab: the hosts; digitalocean: droplets, key, VPC, firewall)."""
    from provision import bootstrap
    from provision.base.clusters import find_cluster_file
    return bootstrap.down(find_cluster_file(cluster_file), options, on_progress)


# --- stacks -------------------------------------------------------------------------------

def config(compose_files, options: ConfigOptions | None = None) -> ConfigResult:
    """The merged, interpolated stack as `docker stack config` prints it; no cluster needed."""
    from stacks.compose.config_view import config_stack
    return config_stack(compose_files, options)


def load(stack: str, compose_files, options: StackOptions | None = None) -> LoadedStack:
    """Read and check a stack's compose files once, offline; plan() and deploy() accept the
    result in place of a name and files."""
    from stacks.operations.deploy import load_stack
    return load_stack(stack, compose_files, options)


def plan(stack: str | LoadedStack, compose_files=(), options: StackOptions | None = None, *,
         engine=None, on_progress: ProgressCallback | None = None) -> PlanResult:
    """What deploy would change; changes nothing. With RedeployOptions, what redeploy would
    change (image tags resolved to digests now). Problems are in `result.problems`."""
    from stacks.operations.deploy import plan_stack
    from stacks.operations.redeploy import RedeployOptions, plan_redeploy_stack
    if isinstance(options, RedeployOptions):
        return plan_redeploy_stack(stack, compose_files, options, engine=engine,
                                   on_progress=on_progress)
    return plan_stack(stack, compose_files, options, engine=engine)


def deploy(stack: str | LoadedStack, compose_files=(), options: DeployOptions | None = None, *,
           engine=None, on_progress: ProgressCallback | None = None) -> DeployResult:
    """Plan, apply under the stack lock, watch the changed services. `result.exit_code` is
    the command line's (0, 10 failed, 11 rolled back, 12 timed out); a plan with problems
    raises InputError (exit 2) before anything changes."""
    from stacks.operations.deploy import deploy_stack
    return deploy_stack(stack, compose_files, options, engine=engine, on_progress=on_progress)


def redeploy(stack: str | LoadedStack, compose_files=(),
             options: RedeployOptions | None = None, *, engine=None,
             on_progress: ProgressCallback | None = None) -> DeployResult:
    """deploy() with image tags re-resolved to digests (a new image behind the same tag is
    rolled out); waits up to options.lock_wait (60 s) for the stack lock."""
    from stacks.operations.redeploy import redeploy_stack
    return redeploy_stack(stack, compose_files, options, engine=engine, on_progress=on_progress)


def rollback(stack: str, options: RollbackOptions | None = None, *, engine=None,
             on_progress: ProgressCallback | None = None) -> RollbackResult:
    """Roll services back to their previous spec and watch them (a completed rollback is
    exit 0 here)."""
    from stacks.operations.rollback import rollback_stack
    return rollback_stack(stack, options, engine=engine, on_progress=on_progress)


def rm(stack: str, options: RmOptions | None = None, *, engine=None,
       on_progress: ProgressCallback | None = None) -> RmResult:
    """Remove the stack's services, networks, secrets and configs."""
    from stacks.operations.deploy import rm_stack
    return rm_stack(stack, options, engine=engine, on_progress=on_progress)


def unlock(stack: str, options: UnlockOptions | None = None, *, engine=None) -> UnlockResult:
    """Show who holds the stack's lock and remove it (after a run that was killed); a process
    still running on this host holds it on only without options.force (LockedError, exit 4)."""
    from provision.swarm.lock import unlock_stack
    return unlock_stack(stack, options, engine=engine)


def unlock_managers(options: UnlockOptions | None = None, *, engine=None) -> UnlockResult:
    """Show who holds the cluster's managers lock (backup, restore, recover, engine upgrade,
    node demote/rm) and remove it, refused for a live holder on this host as unlock() is."""
    from provision.swarm.lock import unlock_managers as remove
    return remove(options, engine=engine)


# --- day two: the operations on a running swarm, as the command line runs them ------------

@dataclass
class CaRotateOptions:
    timeout: float = 300.0          # seconds for every node to take the new root


@dataclass
class RestoreOptions:
    force: bool = False             # a backup of a swarm formed anew since, or another cluster's
    unlock_key: str | None = None   # the unlock key of the time of the backup (autolock)


@dataclass
class RecoverOptions:
    force_new_cluster: bool = False     # quorum lost: re-form the swarm on a surviving manager
    services_timeout: float = 120.0     # seconds to wait for the services afterwards (0: no wait)


@dataclass
class PushOptions:
    images: list[str] = field(default_factory=list)   # from the local engine ($DOCKER_HOST) ...
    archive: str | None = None      # ... or a `docker save` archive
    nodes: list[str] = field(default_factory=lambda: ["all"])   # all, managers, workers, NODE
    compress_wire: bool = True


def scale(wanted: dict[str, int], options: ScaleOptions | None = None, *,
          cluster_file: str | None = None,
          on_progress: ProgressCallback | None = None) -> ScaleResult:
    """Set services' replica counts ({"st_web": 3}) under the stack's lock and watch them like a
    deploy; `result.exit_code` as deploy's."""
    from stacks.operations.service_ops import scale_services
    return scale_services(cluster_file, wanted, options, on_progress=on_progress)


def drain(node: str, options: DrainOptions | None = None, *, cluster_file: str | None = None,
          on_progress: ProgressCallback | None = None) -> DrainResult:
    """Drain a node (the cluster file's name, hostname or ID) and wait until its tasks run
    elsewhere."""
    from provision.engine_api.access import connect
    from provision.swarm.nodes import drain_node
    with connect(cluster_file) as m:
        return drain_node(m.api, node, options, names=m.names, on_progress=on_progress)


def remove_node(node: str, options: RemoveOptions | None = None, *,
                cluster_file: str | None = None,
                on_progress: ProgressCallback | None = None) -> NodeChange:
    """Drain, demote (a manager, under the cluster's managers lock and with quorum checked),
    make it leave over SSH and remove it from the swarm."""
    from provision.base.clusters import find_cluster_file
    from provision.engine_api.access import connect
    from provision.swarm.managers import managers_lock
    from provision.swarm.nodes import leave_over_ssh, remove_node as remove
    path = find_cluster_file(cluster_file)
    with connect(path) as m:
        return remove(m.api, node, options, names=m.names, leave=leave_over_ssh(path),
                      on_progress=on_progress,
                      lock=lambda: managers_lock(path, "node rm", api=m.api, notify=lambda line:
                                                 emit(on_progress, Notice(line))))


def rotate_ca(options: CaRotateOptions | None = None, *, cluster_file: str | None = None,
              on_progress: ProgressCallback | None = None) -> RotationResult:
    """A new root CA for the swarm; waits until every node carries a certificate from it."""
    from provision.engine_api.access import connect
    from provision.swarm.rotation import rotate_ca as rotate
    options = options or CaRotateOptions()
    with connect(cluster_file) as m:
        return rotate(m.api, timeout=options.timeout, on_progress=on_progress)


def backup(options: BackupOptions | None = None, *, cluster_file: str | None = None,
           on_progress: ProgressCallback | None = None) -> BackupResult:
    """A 0600 archive of a manager's swarm state (its engine stopped for the copy, quorum
    checked first)."""
    from provision.base.clusters import find_cluster_file
    from provision.swarm.backup import take_backup
    return take_backup(find_cluster_file(cluster_file), options, on_progress=on_progress)


def restore(archive: str, to: str, options: RestoreOptions | None = None, *,
            cluster_file: str | None = None,
            on_progress: ProgressCallback | None = None) -> RestoreResult:
    """The backup's swarm onto host `to` as its only manager; `result.exit_code`."""
    from provision.base.clusters import find_cluster_file
    from provision.restore import restore as restore_on
    options = options or RestoreOptions()
    return restore_on(find_cluster_file(cluster_file), archive, to, force=options.force,
                      unlock_key=options.unlock_key, on_progress=on_progress)


def recover(options: RecoverOptions | None = None, *, cluster_file: str | None = None,
            on_progress: ProgressCallback | None = None) -> RecoverResult:
    """The managers' state explained; with force_new_cluster and quorum lost, the swarm
    re-formed on a survivor and grown back by up; `result.exit_code`."""
    from provision.base.clusters import find_cluster_file
    from provision.restore import recover as recover_swarm
    options = options or RecoverOptions()
    return recover_swarm(find_cluster_file(cluster_file),
                         force_new_cluster=options.force_new_cluster,
                         services_timeout=options.services_timeout, on_progress=on_progress)


def upgrade_engines(options: UpgradeOptions | None = None, *, cluster_file: str | None = None,
                    on_progress: ProgressCallback | None = None) -> UpgradeResult:
    """Install an engine version node by node (workers in batches, managers one at a time with
    quorum checked, the leader last); dry_run: the order only."""
    from provision.base.clusters import find_cluster_file
    from provision.upgrade import UpgradeOptions as Options, upgrade
    return upgrade(find_cluster_file(cluster_file), options or Options(),
                   on_progress=on_progress)


def push_images(options: PushOptions, *, cluster_file: str | None = None,
                on_progress: ProgressCallback | None = None) -> PushResult:
    """Images from the local engine, or a `docker save` archive, onto the nodes over SSH."""
    from provision.base.clusters import find_cluster_file
    from provision.images.archive import read_images
    from provision.images.push import push_to_cluster
    from provision.base.errors import InputError
    if bool(options.archive) == bool(options.images):
        raise InputError("push_images: give images or an archive, not both or neither")
    if options.archive:
        read_images(options.archive)      # a bad archive fails before any host is contacted
    return push_to_cluster(find_cluster_file(cluster_file), archive=options.archive,
                           images=options.images, nodes=options.nodes,
                           on_progress=on_progress, compress_wire=options.compress_wire)
