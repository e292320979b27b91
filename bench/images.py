"""Pushing a ~100 MB image to 5 nodes: `swarmsmith images push` against a plain
`docker save | ssh docker load` loop, in the same run, on one lab cluster `imgb`
(1 manager, 5 workers).

The image (made here, no registry: a busybox root filesystem plus ~100 MB of this
machine's shared libraries and data files, so it compresses like real images do) is first
put on the manager, which then plays "the engine where the image was built":

- baseline: for each worker in turn, `ssh manager docker save IMAGE | ssh worker docker
  load` (the loop users write when they have no registry);
- swarmsmith: `swarmsmith images push IMAGE --nodes workers` with DOCKER_HOST pointing at
  the manager's engine (docker save once, gzip once, all workers in parallel, IDs checked);
- swarmsmith --file: the same from a `docker save` archive on this machine;
- swarmsmith again: every worker has the image, nothing is sent.

Between runs the image is removed from the workers. Prints seconds, MB on the wire and the
ratios, and the load average (the machine is shared). Needs root; makes and removes the
cluster unless --keep.

    python bench/images.py [--mb 100] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLUSTER = "imgb"
IMAGE = "bench/images:1"
SOURCES = ("/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/lib")


def cli(*args, env=None, timeout=1800):
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def filler_layer(path: str, mb: int) -> int:
    """A layer of real files (sorted, fixed metadata) adding up to about `mb` MB."""
    limit, total = mb * 1_000_000, 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for root in SOURCES:
            for dirpath, dirs, files in os.walk(root):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(dirpath, f)
                    if total >= limit or not os.path.isfile(full) or os.path.islink(full):
                        continue
                    ti = tar.gettarinfo(full, arcname="filler" + full)
                    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
                    with open(full, "rb") as fh:
                        tar.addfile(ti, fh)
                    total += ti.size
    return total


def make_archive(d: str, mb: int) -> str:
    from provision.images.archive import ImageConfig, write_archive
    from provision.images.busybox import write_rootfs_tar
    with open(os.path.join(d, "rootfs.tar"), "wb") as f:
        write_rootfs_tar(f)
    filler_layer(os.path.join(d, "filler.tar"), mb)
    out = os.path.join(d, "image.tar")
    write_archive(out, [ImageConfig(IMAGE, [os.path.join(d, "rootfs.tar"),
                                            os.path.join(d, "filler.tar")],
                                    cmd=["/bin/sh"], env=["PATH=/bin"])])
    return out


def ssh_argv(host, known: str) -> list[str]:
    return ["ssh", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o",
            f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-i", host.key_path, "-o", "IdentitiesOnly=yes", "-p", str(host.port),
            f"{host.user}@{host.public_address}"]


def run_on(host, command: str) -> str:
    from provision.remote.command import Command
    from provision.engine_api.sessions import session_for
    s = session_for(host)
    try:
        return s.run(Command.shell(command), timeout=600).stdout
    finally:
        s.close()


def remove_from(workers) -> None:
    for w in workers:
        run_on(w, f"docker rmi -f {IMAGE} >/dev/null 2>&1 || true")


def image_id(host) -> str:
    return run_on(host, f"docker image inspect -f '{{{{.Id}}}}' {IMAGE} 2>/dev/null || true").strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=100, help="size of the filler layer")
    ap.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    args = ap.parse_args()
    from provision.engine_api.sessions import SocketForwarder, inventory_hosts, session_for

    d = tempfile.mkdtemp(prefix="bench-images-")
    path = os.path.join(d, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 5\n")
    try:
        up = cli("up", path)
        if up.returncode != 0:
            print(up.stderr, file=sys.stderr)
            return 1
        hosts = inventory_hosts(path)
        manager = next(h for h in hosts if h.role == "manager")
        workers = [h for h in hosts if h.role == "worker"]
        known = os.path.join(d, "known_hosts")
        with open(known, "w") as f:
            for h in hosts:
                f.write(f"{h.public_address} {h.host_key}\n")
        archive = make_archive(d, args.mb)
        size = os.path.getsize(archive)
        p = cli("images", "push", "--cluster", path, "--file", archive, "--nodes", manager.name)
        assert p.returncode == 0, p.stderr
        want = image_id(manager)
        print(f"image {IMAGE}: {size / 1e6:.1f} MB (docker save), {len(workers)} target nodes; "
              f"load average {os.getloadavg()[0]:.2f}")

        # baseline: the loop, one worker after the other
        remove_from(workers)
        save = shlex.join(ssh_argv(manager, known) + [f"docker save {IMAGE}"])
        t0 = time.monotonic()
        for w in workers:
            load = shlex.join(ssh_argv(w, known) + ["docker load -q >/dev/null"])
            subprocess.run(f"set -o pipefail; {save} | {load}", shell=True, check=True,
                           executable="/bin/bash")
        base_s = time.monotonic() - t0
        base_mb = size * len(workers) / 1e6
        assert all(image_id(w) == want for w in workers)

        # swarmsmith from the manager's engine (DOCKER_HOST)
        remove_from(workers)
        s = session_for(manager)
        fwd = SocketForwarder(s)
        try:
            t0 = time.monotonic()
            p = cli("images", "push", "--cluster", path, IMAGE, "--nodes", "workers", "--json",
                    env={"DOCKER_HOST": f"unix://{fwd.path}"})
            ss_s = time.monotonic() - t0
        finally:
            fwd.close()
            s.close()
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        ss_mb = sum(n["bytes_sent"] for n in out["nodes"]) / 1e6
        assert all(image_id(w) == want for w in workers)

        # swarmsmith from an archive on this machine
        remove_from(workers)
        t0 = time.monotonic()
        p = cli("images", "push", "--cluster", path, "--file", archive, "--nodes", "workers",
                "--json")
        file_s = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        file_mb = sum(n["bytes_sent"] for n in json.loads(p.stdout)["nodes"]) / 1e6

        # again: every worker has it
        t0 = time.monotonic()
        p = cli("images", "push", "--cluster", path, "--file", archive, "--nodes", "workers",
                "--json")
        noop_s = time.monotonic() - t0
        noop_mb = sum(n["bytes_sent"] for n in json.loads(p.stdout)["nodes"]) / 1e6

        print(f"{'':44} {'seconds':>8} {'MB sent':>8}")
        rows = [("docker save | ssh docker load, per node", base_s, base_mb),
                ("swarmsmith images push IMAGE (DOCKER_HOST)", ss_s, ss_mb),
                ("swarmsmith images push --file", file_s, file_mb),
                ("swarmsmith images push, nodes have it", noop_s, noop_mb)]
        for name, secs, mb in rows:
            print(f"{name:44} {secs:8.1f} {mb:8.1f}")
        print(f"ratio baseline/swarmsmith: {base_s / ss_s:.2f}x faster, "
              f"{base_mb / max(ss_mb, 1e-9):.2f}x fewer bytes (DOCKER_HOST); "
              f"{base_s / file_s:.2f}x faster (--file); load average {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        if not args.keep:
            cli("down", path)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    sys.exit(main())
