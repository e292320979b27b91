"""Run one function per host concurrently; collect every failure into one GroupError."""
from __future__ import annotations

import contextlib
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..base.errors import GroupError


# the client holds an SSH connection (a socket and its channels) per host, and the Engine
# API's forwarded sockets on managers
FDS_PER_HOST = 4
FDS_BASE = 64


def raise_open_files(hosts: int) -> None:
    """A client talking to every host at once: its soft descriptor limit up to what that needs
    (a 1024 default is reached near 250 hosts), never above the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = hosts * FDS_PER_HOST + FDS_BASE
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


def each(fn, items: list, key=lambda x: x.name, concurrency: int = 16) -> dict:
    if not items:
        return {}
    results, errors = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items)))) as pool:
        futures = {key(i): pool.submit(fn, i) for i in items}
        for name, fut in futures.items():
            try:
                results[name] = fut.result()
            except Exception as e:  # collected, re-raised together below
                errors[name] = e
    if errors:
        if len(errors) == 1:
            raise next(iter(errors.values()))
        raise GroupError(errors)
    return results


@contextlib.contextmanager
def ticking(progress, host: str, what: str, every: float = 10.0, clock=time.monotonic):
    """Report `what` now and every few seconds until the block ends (an install takes
    minutes: never a silent one)."""
    done = threading.Event()
    t0 = clock()
    progress(host, what)

    def tick():
        while not done.wait(every):
            progress(host, f"{what} ({clock() - t0:.0f}s)")
    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        # a tick already past its wait would otherwise report after the block's own result
        ticker.join()
