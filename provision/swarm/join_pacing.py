"""Joins to one manager, paced. Each join makes the manager sign a certificate and add a node
to its raft log; many at once on a small or busy manager make joins time out (swarm then answers
503 "will continue in the background") and slow everything else it does. The pace adapts the
way TCP's congestion window does: one more join at a time after each quick one, half as many
after a slow or busy answer."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager


def joins_in_background(exc_or_text) -> bool:
    """Swarm's answer when its join timed out on the joining side but goes on: the node
    usually appears in the node list seconds later, so it is followed, not failed."""
    return "continue in the background" in str(exc_or_text).lower()


class JoinPacer:
    """Bounded, adaptive concurrency. `start` joins at once at first, never more than
    `ceiling` nor fewer than one; a join that took longer than `slow` seconds or was answered
    busy halves the limit, a quick one raises it by one."""

    def __init__(self, ceiling: int, start: int = 4, slow: float = 10.0, clock=time.monotonic):
        self.ceiling = max(1, ceiling)
        self.limit = max(1, min(start, self.ceiling))
        self.slow, self.clock = slow, clock
        self.active = 0
        self.lowest = self.limit
        self._cv = threading.Condition()

    @contextmanager
    def slot(self):
        """Hold one of the limit's places for one join. Inside, call `busy()` when the
        manager answered that it is busy (the join goes on in the background)."""
        with self._cv:
            while self.active >= self.limit:
                self._cv.wait()
            self.active += 1
        t0 = self.clock()
        outcome = {"busy": False}
        try:
            yield lambda: outcome.__setitem__("busy", True)
        finally:
            took = self.clock() - t0
            with self._cv:
                self.active -= 1
                if outcome["busy"] or took > self.slow:
                    self.limit = max(1, self.limit // 2)
                    self.lowest = min(self.lowest, self.limit)
                else:
                    self.limit = min(self.ceiling, self.limit + 1)
                self._cv.notify_all()
