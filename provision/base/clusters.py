"""The cluster file and state folder as layers above provision/ see them: find the file, load
it, and where its state (inventory, audit trail) lives. stacks/ reaches inventory/ only here."""
from __future__ import annotations

from inventory import clusterfile
from inventory.clusterfile import ClusterFile, StackRef
from inventory.state import StateDir

__all__ = ["ClusterFile", "StackRef", "find_cluster_file", "load_cluster", "state_path",
           "state_path_if_any"]


def find_cluster_file(explicit: str | None = None) -> str:
    """`explicit`, else $SWARMSMITH_CLUSTER, else ./swarmsmith.yml (exit 2 when none exists)."""
    return clusterfile.find(explicit)


def load_cluster(path: str) -> ClusterFile:
    """The validated cluster file (every problem names the file and key; exit 2)."""
    return clusterfile.load(path)


def state_path(cluster_file: str) -> str:
    """The cluster's state folder (`.swarmsmith/<name>/` beside the cluster file)."""
    return StateDir(cluster_file, clusterfile.load(cluster_file).name).path


def state_path_if_any(cluster_file: str | None) -> str | None:
    """state_path() of the cluster file found from `cluster_file`, None when there is none
    (commands on an existing swarm need no local state)."""
    try:
        return state_path(find_cluster_file(cluster_file))
    except Exception:
        return None
