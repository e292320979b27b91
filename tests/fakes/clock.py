"""The one fake clock: call it (or .clock()) for the time; sleep() advances it and never waits.
Thread-safe, since the DigitalOcean emulator and the code under test share one."""
from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, start: float = 1000.0, *, min_step: float = 0.0):
        """`min_step`: the least a sleep advances (a poll loop that sleeps 0 still moves on)."""
        self.t = start
        self.min_step = min_step
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def clock(self) -> float:
        return self()

    @property
    def now(self) -> float:
        return self.t

    @now.setter
    def now(self, value: float) -> None:
        self.t = value

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"slept {seconds} s"
        with self._lock:
            self.sleeps.append(seconds)
            self.t += max(seconds, self.min_step)
