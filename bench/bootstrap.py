"""Wall time of `swarmsmith up` on lab hosts as the cluster grows: 1+2, 1+5, 1+15 and 3+3 nodes
(and, asked for with --sizes, 1+49 and 1+99),
cold and no-op, with ratios to 1+2 measured in the same run, and where the cold time goes
(seconds from the start to each milestone, read from the progress events). Cold = lab hosts
created, engines started, swarm formed, all in the timed call. In-process
(provision.bootstrap.up), so interpreter start-up is not counted there; the no-op is also timed
through the CLI (a new interpreter, as a user or cron runs it), once the machine is calm after
the cold run. Each cluster is brought down after its runs, whatever happens. Needs root.

    python bench/bootstrap.py [--repeat N] [--noop-runs N] [--sizes 1+2 1+5 1+15 3+3] [--prefix bb]
    python bench/bootstrap.py --repeat 1 --noop-runs 2 --sizes 1+2 1+49 1+99
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from provision.base.progress import HostProgress  # noqa: E402
from stacks.api import UpOptions, down, up  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSIBLE_COLD, ANSIBLE_NOOP = 7.1, 5.9     # the Ansible peers' 1+2 figures on the same lab
# milestones of a cold run, from the progress events: (label, event text, first or last)
MILESTONES = [("lab hosts ready", "ready", "last"),
              ("first engine answers", "engine answers", "first"),
              ("swarm initialised", "swarm initialised", "first"),
              ("all engines answer", "engine answers", "last"),
              ("last node joined", "joined as", "last")]


class Recorder:
    """The progress callback: keeps (seconds, host, message) of every host event."""

    def __init__(self):
        self.t0, self.events = time.monotonic(), []

    def __call__(self, event) -> None:
        if isinstance(event, HostProgress):
            self.events.append((time.monotonic() - self.t0, event.host, event.message))


def cluster_file(folder: str, name: str, managers: int, workers: int) -> str:
    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(f"name: {name}\nprovider: lab\nmanagers: {managers}\nworkers: {workers}\n")
    return path


def machine_cpu() -> float:
    """CPU seconds the whole machine has spent busy (every process: this one, the lab hosts'
    sshd and engines), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds this process (swarmsmith, in-process, every thread) has spent."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reset_peak_memory() -> None:
    """Start this process's peak resident memory (VmHWM) again from now (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """This process's peak resident memory since the last reset, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def settle(busy_below: float = 0.3, longest: float = 20.0) -> float:
    """Wait until the machine is calm (under `busy_below` of its cores busy over half a second,
    or `longest` seconds): right after a cold run the new nodes' engines still set up the
    swarm's networks for some seconds, and a no-op timed then measures them, not swarmsmith
    (a scheduled no-op runs long after the cluster was made). Returns the seconds waited."""
    t0 = time.monotonic()
    cores = os.cpu_count() or 1
    while time.monotonic() - t0 < longest:
        c0, w0 = machine_cpu(), time.monotonic()
        time.sleep(0.5)
        if (machine_cpu() - c0) / ((time.monotonic() - w0) * cores) < busy_below:
            break
    return time.monotonic() - t0


def timed_up(path: str, on_progress=None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = up(path, UpOptions(), on_progress=on_progress).to_dict()
    return time.perf_counter() - t0, result


def timed_cli_up(path: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSMITH_")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), "up", "--json", path],
                          capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or json.loads(proc.stdout).get("changes") != []:
        raise RuntimeError(f"CLI no-op up failed or changed something: {proc.stdout}{proc.stderr}")
    return took


def milestones(events: list) -> dict[str, float]:
    out = {}
    for label, text, which in MILESTONES:
        times = [t for t, _, msg in events if (msg == text if text == "ready" else text in msg)]
        if times:
            out[label] = times[0] if which == "first" else times[-1]
    return out


def run(name: str, managers: int, workers: int, noop_runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as d:
        path = cluster_file(d, name, managers, workers)
        try:
            recorder = Recorder()
            reset_peak_memory()
            cpu0, own0 = machine_cpu(), own_cpu()
            cold, result = timed_up(path, recorder)
            cpu, own = machine_cpu() - cpu0, own_cpu() - own0
            assert len(result["nodes"]) == managers + workers and result["changes"], result
            out = {"cold": cold, "phases": milestones(recorder.events), "noop": [], "cli": [],
                   "cpu": [cpu], "own": [own], "rss": [peak_memory_mb()], "settled": settle()}
            out["noop_cpu"], out["noop_own"], out["noop_rss"] = [], [], []
            for _ in range(noop_runs):
                reset_peak_memory()
                cpu0, own0 = machine_cpu(), own_cpu()
                took, again = timed_up(path)
                out["noop_cpu"].append(machine_cpu() - cpu0)
                out["noop_own"].append(own_cpu() - own0)
                out["noop_rss"].append(peak_memory_mb())
                assert again["changes"] == [], again["changes"]
                out["noop"].append(took)
                out["cli"].append(timed_cli_up(path))
            return out
        finally:
            down(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="cold runs per size (median reported)")
    ap.add_argument("--noop-runs", type=int, default=3, help="no-op runs after each cold run")
    ap.add_argument("--sizes", nargs="+", default=["1+2", "1+5", "1+15", "3+3"])
    ap.add_argument("--prefix", default="bb", help="lab/cluster name prefix")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/bootstrap.py needs root (lab hosts)", file=sys.stderr)
        return 2
    if "1+2" not in args.sizes:
        args.sizes.insert(0, "1+2")        # the baseline of every ratio

    figures: dict[str, dict[str, list]] = {s: {"cold": [], "noop": [], "cli": [], "phases": [],
                                               "cpu": [], "own": [], "noop_cpu": [],
                                               "noop_own": [], "rss": [], "noop_rss": []}
                                          for s in args.sizes}
    for _ in range(args.repeat):
        for size in args.sizes:
            m, w = (int(x) for x in size.split("+"))
            r = run(f"{args.prefix}{m}p{w}", m, w, args.noop_runs)
            f = figures[size]
            f["cold"].append(r["cold"])
            f["noop"] += r["noop"]
            f["cli"] += r["cli"]
            f["phases"].append(r["phases"])
            f["cpu"] += r["cpu"]
            f["own"] += r["own"]
            f["noop_cpu"] += r["noop_cpu"]
            f["noop_own"] += r["noop_own"]
            f["rss"] += r["rss"]
            f["noop_rss"] += r["noop_rss"]
            print(f"  {size}: cold {r['cold']:.2f} s, no-op "
                  + ", ".join(f"{x:.2f}" for x in r["noop"]) + " s, CLI no-op "
                  + ", ".join(f"{x:.2f}" for x in r["cli"])
                  + f" s (no-ops after {r['settled']:.1f} s of settling)", file=sys.stderr)

    med = {s: {k: statistics.median(v) for k, v in f.items() if k != "phases" and v}
           for s, f in figures.items()}
    base = med["1+2"]
    print(f"swarmsmith up on lab hosts (medians: {args.repeat} cold, "
          f"{args.repeat * args.noop_runs} no-op runs per size)")
    print(f"  {'size':<6} {'cold':>8} {'×1+2':>6} {'no-op':>8} {'×1+2':>6} {'CLI no-op':>10} {'×1+2':>6}")
    for s in args.sizes:
        x = med[s]
        print(f"  {s:<6} {x['cold']:7.2f}s {x['cold'] / base['cold']:5.2f}x {x['noop']:7.2f}s "
              f"{x['noop'] / base['noop']:5.2f}x {x['cli']:9.2f}s {x['cli'] / base['cli']:5.2f}x")
    print("cold run, seconds from the start to each milestone (median):")
    print(f"  {'size':<6} " + " ".join(f"{label:>21}" for label, _, _ in MILESTONES) + f" {'done':>8}")
    for s in args.sizes:
        row = []
        for label, _, _ in MILESTONES:
            vals = [p[label] for p in figures[s]["phases"] if label in p]
            row.append(f"{statistics.median(vals):20.2f}s" if vals else f"{'-':>21}")
        print(f"  {s:<6} " + " ".join(row) + f" {med[s]['cold']:7.2f}s")
    # the lab hosts share this machine's cores with swarmsmith: a cold run whose CPU time is
    # near wall time x cores waits on the CPU, not on swarmsmith. The machine's CPU time over
    # its cores is the shortest the run could take here; what is not swarmsmith's own is the
    # lab hosts' (their engines starting and joining, sshd, the commands run on them)
    cores = os.cpu_count() or 1
    print(f"cold run, CPU time of the whole machine (median; {cores} cores):")
    for s in args.sizes:
        x = med[s]
        print(f"  {s:<6} {x['cpu']:6.2f} CPU-s in {x['cold']:5.2f} s: "
              f"{100 * x['cpu'] / (x['cold'] * cores):3.0f}% of the cores busy; "
              f"swarmsmith's process {x['own']:5.2f} CPU-s and {x['rss']:4.0f} MB at most, "
              f"the lab hosts {x['cpu'] - x['own']:5.2f} CPU-s; "
              f"no run shorter than {x['cpu'] / cores:5.2f} s here")
    # a no-op is one SSH connection and one facts command per host: what each host costs the
    # machine, and how much of it is swarmsmith's process (the rest: sshd, the shell, the engine)
    print(f"no-op run (in-process), CPU time of the whole machine (median; {cores} cores):")
    for s in args.sizes:
        x = med[s]
        n = sum(int(k) for k in s.split("+"))
        print(f"  {s:<6} {x['noop_cpu']:6.2f} CPU-s in {x['noop']:5.2f} s, {1000 * x['noop_cpu'] / n:4.0f} ms "
              f"per host, swarmsmith's process {1000 * x['noop_own'] / n:4.0f} ms of it "
              f"and {x['noop_rss']:4.0f} MB at most; "
              f"no run shorter than {x['noop_cpu'] / cores:5.2f} s here")
    print("targets:")
    # a ratio target in seconds (the limit times the 1+2 figure) set against the machine's floor
    # for that size: below the floor, no swarmsmith can meet it on this machine
    checks = [("1+15 cold <= 2.5x 1+2 cold", "1+15", "cold", "cpu", 2.5),
              ("3+3 cold <= 1.8x 1+2 cold", "3+3", "cold", "cpu", 1.8),
              ("1+2 no-op (CLI) <= 0.8 s", "1+2", "cli", None, 0.8),
              ("1+15 no-op <= 1.5x 1+2 no-op", "1+15", "noop", "noop_cpu", 1.5)]
    for text, size, key, cpu_key, limit in checks:
        if size not in med:
            continue
        if cpu_key is None:
            v = med[size][key]
            print(f"  {text:<32} {v:6.2f}  {'met' if v <= limit else 'NOT met'}")
            continue
        v = med[size][key] / base[key]
        target, floor = limit * base[key], med[size][cpu_key] / cores
        print(f"  {text:<32} {v:6.2f}  {'met' if v <= limit else 'NOT met'}"
              f"  (target {target:.2f} s; this machine's floor for {size} {floor:.2f} s"
              + (": out of reach here)" if target < floor else ")"))
    print(f"  1+2 cold / Ansible (7.1 s)        {base['cold'] / ANSIBLE_COLD:5.2f}x")
    print(f"  1+2 no-op / Ansible (5.9 s)       {base['noop'] / ANSIBLE_NOOP:5.2f}x")
    # the lab shares this machine's cores: figures taken under load are not comparable
    print("load average (1/5/15 min) at the end: %.2f %.2f %.2f on %d cores"
          % (*os.getloadavg(), os.cpu_count()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
