"""Show watch progress: a live table on a terminal, plain lines otherwise.

Renderers are progress callbacks for watch_stack(on_progress=...) and know
nothing about swarm; they write to the stream they are given (the command line
gives stderr).  Use as a context manager:

    with progress_renderer(stream) as show:
        report = watch_stack(api, stack, on_progress=show)
"""
from __future__ import annotations

import time

from stacks.watch.outcomes import ServiceReport, WatchReport

_STYLE = {"converged": "green", "done": "green", "rolled_back": "yellow",
          "paused": "red", "failed": "red", "timed_out": "red"}


def _state_text(s: ServiceReport) -> str:
    return str(s.outcome) if s.outcome else "waiting"


class PlainRenderer:
    """One line per service whenever its counts, update state or outcome change."""

    def __init__(self, stream, clock=time.strftime):
        self.stream = stream
        self.clock = clock
        self.last: dict[str, tuple] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __call__(self, report: WatchReport) -> None:
        for s in report.services:
            key = (s.running, s.desired, s.update_state, s.outcome)
            if self.last.get(s.service_id) == key:
                continue
            self.last[s.service_id] = key
            line = f"{self.clock('%H:%M:%S')} {s.name}: {s.progress_text()}"
            if s.outcome:
                line += f" -> {s.outcome} after {s.seconds:.1f} s"
                if s.reason:
                    line += f": {s.reason}"
            print(line, file=self.stream)
            if s.outcome:
                for ln in s.log_tail:
                    print(f"    | {ln}", file=self.stream)
        self.stream.flush()


class RichRenderer:
    """A live table (rich), refreshed on every poll; final logs printed below it."""

    def __init__(self, stream):
        self.stream = stream
        self.live = None
        self.report: WatchReport | None = None

    def _table(self):
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("service", "mode", "tasks", "update", "state", "time", "reason"):
            table.add_column(col, overflow="fold" if col == "reason" else "ellipsis")
        for s in (self.report.services if self.report else []):
            state = _state_text(s)
            # names and reasons come from the swarm and from task errors: `[` in them is text
            table.add_row(escape(s.name), s.mode, f"{s.running}/{s.desired}",
                          escape(s.update_state or "-"),
                          f"[{_STYLE.get(state, 'cyan')}]{state}[/]", f"{s.seconds:.0f}s",
                          escape(s.reason or ""))
        return table

    def __enter__(self):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.stream)
        self.live = Live(self._table(), console=self.console, refresh_per_second=4,
                         transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        from rich.markup import escape
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)
            self.live = None
        for s in (self.report.services if self.report else []):
            if s.log_tail:
                self.console.print(f"[bold]{escape(s.name)}[/] last log lines:")
                for ln in s.log_tail:
                    self.console.print(f"    | {ln}", markup=False, highlight=False)
        return None

    def __call__(self, report: WatchReport) -> None:
        self.report = report
        if self.live is not None:
            self.live.update(self._table())


def progress_renderer(stream, *, force_plain: bool = False):
    isatty = getattr(stream, "isatty", lambda: False)()
    return RichRenderer(stream) if isatty and not force_plain else PlainRenderer(stream)
