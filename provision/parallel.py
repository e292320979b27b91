"""Run one function per host concurrently; collect every failure into one GroupError."""
from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .errors import GroupError


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
